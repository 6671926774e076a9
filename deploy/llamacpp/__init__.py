"""llama.cpp, built on this machine (`python -m deploy.llamacpp`, or `make llama-cpp` in a checkout), and
pocket-adapt's driver over it.

`python -m deploy.llamacpp` (deploy/llamacpp/build.sh) builds llama.cpp from the source tree vendored in llama-cpp-python's
source distribution on PyPI into a cache outside the repository, together with `pocket-llama`
(deploy/llamacpp/pocket_llama.cpp), a small program over llama.cpp's own libraries that answers JSON requests:
render a conversation with the GGUF's embedded chat template, encode images with the mmproj, generate greedily with
token ids and timings. :func:`binary` finds the built programs or says which command builds them.

:class:`PocketLlama` runs one `pocket-llama` process (the model stays loaded); `deploy.llamacpp.runtime.LlamaCppVLM`
is what `adapt chat --runtime llamacpp` uses on an export folder; `deploy.llamacpp.eval` is the `adapt eval` side.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from model.errors import PocketAdaptError

VERSION = "0.3.36"  # llama-cpp-python's sdist whose vendored llama.cpp is built (deploy/llamacpp/build.sh)
HERE = Path(__file__).resolve().parent
PROGRAMS = ("pocket-llama", "llama-mtmd-cli", "llama-quantize")
MARKER = "<__media__>"  # mtmd's default media marker
BUILD_COMMAND = "python -m deploy.llamacpp"  # builds llama.cpp (build.sh) from an installed pocket-adapt too


class LlamaCppError(PocketAdaptError, RuntimeError):
    """llama.cpp is not built, is out of date, or refused a model or a request."""


def cache_dir() -> Path:
    """Where llama.cpp is built: $POCKET_LLAMA_CPP, else ${XDG_CACHE_HOME:-~/.cache}/pocket-adapt/llama.cpp-<v>."""
    if os.environ.get("POCKET_LLAMA_CPP"):
        return Path(os.environ["POCKET_LLAMA_CPP"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "pocket-adapt" / f"llama.cpp-{VERSION}"


def expected_stamp() -> str:
    """The stamp build.sh writes: the llama.cpp version and a hash of our driver's sources."""
    digest = hashlib.sha256((HERE / "CMakeLists.txt").read_bytes() + (HERE / "pocket_llama.cpp").read_bytes())
    return f"llama-cpp-python {VERSION}; driver {digest.hexdigest()[:16]}"


def binary(name: str = "pocket-llama") -> Path:
    """Path of a built program (pocket-llama, llama-mtmd-cli, llama-quantize); `LlamaCppError` naming the command
    that builds it when it is missing or was built from other sources."""
    bin_dir = cache_dir() / "bin"
    exe = bin_dir / name
    how = (f"build it with `{BUILD_COMMAND}` (`make llama-cpp` in a checkout; llama.cpp {VERSION} from source into "
           f"{cache_dir()}, about 20-40 minutes on 2 cores, once per machine)")
    if not exe.is_file():
        raise LlamaCppError(f"llama.cpp is not built here ({exe} is missing); {how}")
    stamp = bin_dir / "BUILD"
    built = stamp.read_text(encoding="utf-8").strip() if stamp.is_file() else ""
    if built != expected_stamp():
        if built.split(";")[0] == expected_stamp().split(";")[0] and (cache_dir() / "build").is_dir():
            # same llama.cpp, another driver: build.sh compiles pocket_llama.cpp again, nothing else
            how = (f"rebuild it with `{BUILD_COMMAND}` (`make llama-cpp` in a checkout): only pocket-llama, "
                   "pocket-adapt's driver, changed, so only it is compiled again (a minute or two)")
        raise LlamaCppError(f"the llama.cpp build in {bin_dir} is out of date with deploy/llamacpp; {how}")
    return exe


def threads() -> int:
    """$POCKET_LLAMA_THREADS (a count of threads), else the cores this process may use."""
    from model.limits import usable_cores

    given = os.environ.get("POCKET_LLAMA_THREADS", "").strip()
    if not given:
        return usable_cores()
    if not given.isdigit() or int(given) < 1:
        raise LlamaCppError(f"POCKET_LLAMA_THREADS={given!r}: give a number of threads (1 or more), or unset it "
                            f"to use the {usable_cores()} cores this process may run on")
    return int(given)


def quantize(src: Path, dst: Path, qtype: str = "Q4_K_M") -> None:
    """llama.cpp's own `llama-quantize` (the gguf package cannot write K-quants)."""
    proc = subprocess.run([str(binary("llama-quantize")), str(src), str(dst), qtype, str(threads())],
                          capture_output=True, text=True)
    if proc.returncode != 0 or not Path(dst).is_file():
        raise LlamaCppError(f"llama-quantize {qtype} failed: {_tail(proc.stderr + proc.stdout)}")


def _tail(text: str, lines: int = 8) -> str:
    return " | ".join(line for line in text.strip().splitlines()[-lines:])


CONTEXT_STEP = 256  # contexts are chosen in steps of this many positions
_PROMPT_PAST_CONTEXT = re.compile(r"prompt of (\d+) tokens does not fit the context of (\d+)")  # pocket_llama.cpp's words


class PocketLlama:
    """One `pocket-llama` process over a text GGUF (and mmproj); `request(op=..., ...)` -> the JSON answer.

    The process holds a context of ``n_ctx`` positions; `generate` reopens it with a longer one when a prompt and
    its answer need more, never past ``max_ctx`` (the model's trained context; ``n_ctx`` when not given)."""

    def __init__(self, model: str | os.PathLike, mmproj: str | os.PathLike | None = None, n_ctx: int = 4096,
                 kv_f32: bool = False, n_threads: int | None = None, extra_bufts: bool | None = None,
                 max_ctx: int | None = None):
        self.model = model
        self.max_ctx = max(max_ctx or n_ctx, n_ctx)
        self._cmd = [str(binary()), "-m", str(model), "-t", str(n_threads or threads())]
        if mmproj is not None:
            self._cmd += ["--mmproj", str(mmproj)]
        if kv_f32:
            self._cmd.append("--kv-f32")
        # llama.cpp's repacking / AMX buffer types: off by default (the AMX Q8_0 kernel of this version crashes on
        # small shapes); POCKET_LLAMA_EXTRA_BUFTS=1 turns them on
        if extra_bufts if extra_bufts is not None else os.environ.get("POCKET_LLAMA_EXTRA_BUFTS", "") == "1":
            self._cmd.append("--extra-bufts")
        self._open(n_ctx)
        self.scratch = Path(tempfile.mkdtemp(prefix="pocket-llama-"))

    def _open(self, n_ctx: int) -> None:
        """Start the process with a context of `n_ctx` and wait until the model is loaded."""
        self.n_ctx = n_ctx
        self._log = tempfile.TemporaryFile(mode="w+")
        # a failed GGML_ASSERT would otherwise attach gdb, whose backtrace lands on our JSON channel (stdout)
        env = {**os.environ, "GGML_NO_BACKTRACE": "1"}
        self.proc = subprocess.Popen([*self._cmd, "-c", str(n_ctx)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._log, text=True, bufsize=1, env=env)
        try:
            first = self._read()
        except LlamaCppError as err:  # it died while loading: say what it was loading
            self.close()
            raise LlamaCppError(f"llama.cpp could not load {self.model} with a context of {n_ctx}: {err}") from None
        if not first.get("ready"):
            tail = self.log_tail()  # before close(), which closes the log
            self.close()
            raise LlamaCppError(f"llama.cpp could not load {self.model} with a context of {n_ctx}: {first.get('error')} "
                                f"({tail})")

    def fit(self, prompt_tokens: int, max_new_tokens: int) -> None:
        """Make room for a prompt of `prompt_tokens` (image rows included) and an answer of up to `max_new_tokens`:
        reopen with a longer context where the current one is short and the model's allows; `LlamaCppError`
        naming both numbers when the prompt alone does not fit the model's context. The answer's room grows by at
        most the current context per step (a huge --max-new-tokens must not allocate the whole trained context)."""
        if prompt_tokens >= self.max_ctx:
            raise LlamaCppError(f"the prompt takes {prompt_tokens} tokens (image tokens included), which does not fit "
                                f"the model's context of {self.max_ctx} (and leaves no room for an answer); ask with "
                                "fewer tiles (--max-tiles), fewer images or a shorter question")
        if prompt_tokens + max_new_tokens <= self.n_ctx or self.n_ctx >= self.max_ctx:
            return
        wanted = prompt_tokens + min(max_new_tokens, self.n_ctx)
        self.reopen(min(self.max_ctx, -(-wanted // CONTEXT_STEP) * CONTEXT_STEP))

    def reopen(self, n_ctx: int) -> None:
        """The same model in a new process with a context of `n_ctx` (files in `scratch` stay)."""
        self._stop()
        self._open(n_ctx)

    def generate(self, max_new_tokens: int, **req) -> dict:
        """``op=generate`` with room for up to `max_new_tokens`: the context grows (`fit`) for a prompt that does
        not fit it or an answer it ended (`fit` first where the prompt's length is known saves a try). The answer's
        ``context_full`` is true when the model's own context ended it, from pocket-llama's reason for stopping
        (``stop``): an end-of-generation token drawn from the context's last position is an answer that ended, not
        one the context cut."""
        try:
            while True:
                n_predict = min(max_new_tokens, self.n_ctx)  # within the helper's 32-bit int
                try:
                    answer = self.request(op="generate", n_predict=n_predict, **req)
                except LlamaCppError as err:
                    past = _PROMPT_PAST_CONTEXT.search(str(err))
                    if past is None:
                        raise
                    self.fit(int(past[1]), max_new_tokens)  # a longer context, or the error naming the model's
                    if self.n_ctx <= int(past[2]):  # no longer one to try
                        raise
                    continue
                full = answer["stop"] == "context"
                if full and self.n_ctx < self.max_ctx:
                    self.fit(answer["timings"]["prompt_tokens"], max_new_tokens)
                    continue
                return {**answer, "context_full": full}
        finally:  # the request's tile / image files: an eval writes them for every sample
            # (a reopen that failed has closed us, scratch folder and all: its error is the one to see)
            for path in self.scratch.glob("*"):
                path.unlink(missing_ok=True)

    def _read(self) -> dict:
        """The next JSON answer; a line that is not one (a library printing to stdout) is kept for the error."""
        stray: list[str] = []
        while line := self.proc.stdout.readline():
            if line.startswith("{"):
                with contextlib.suppress(json.JSONDecodeError):
                    return json.loads(line)
            stray.append(line.strip())
        self.proc.wait()
        said = f" (it printed: {_tail(chr(10).join(stray), 3)})" if any(stray) else ""
        raise LlamaCppError(f"pocket-llama exited (status {self.proc.returncode}): {self.log_tail()}{said}")

    def log_tail(self) -> str:
        self._log.seek(0)
        return _tail(self._log.read())

    def request(self, **req) -> dict:
        try:
            self.proc.stdin.write(json.dumps(req) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:  # it has exited (killed, crashed): `_read` says so; raised, `adapt` read it as a
            pass  # closed stdout of its own and stopped without a word
        answer = self._read()
        if "error" in answer:
            raise LlamaCppError(f"llama.cpp: {answer['error']}")
        return answer

    def peak_rss_bytes(self) -> int:
        """The process's peak resident memory (VmHWM)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        return 0

    def tiles_file(self, tiles: Sequence[np.ndarray]) -> dict:
        """Write uint8 (S, S, 3) tiles for a `tiles` image entry (removed once `generate` has answered)."""
        size = tiles[0].shape[0]
        path = self.scratch / f"tiles-{len(list(self.scratch.iterdir()))}.rgb"
        path.write_bytes(b"".join(np.ascontiguousarray(t, dtype=np.uint8).tobytes() for t in tiles))
        return {"tiles": str(path), "n_tiles": len(tiles), "size": int(size)}

    def embed(self, image: dict) -> np.ndarray:
        """Image embeddings (rows, n_embd) for an image entry (`path`, `rgb` or `tiles`)."""
        out = self.scratch / "embd.f32"
        answer = self.request(op="embed", image=image, out=str(out))
        return np.fromfile(out, dtype=np.float32).reshape(answer["n_rows"], answer["n_embd"])

    def _stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def close(self) -> None:
        self._stop()
        if hasattr(self, "scratch"):
            shutil.rmtree(self.scratch, ignore_errors=True)

    def __enter__(self) -> PocketLlama:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def tiles_of(image, tiling) -> list[np.ndarray]:
    """uint8 tiles exactly as training cuts them (`model.tiling.split_into_tiles`)."""
    from model.tiling import split_into_tiles

    return [np.asarray(t, dtype=np.uint8) for t in split_into_tiles(image, tiling)]
