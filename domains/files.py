"""File helpers the converters share: atomic writes, idempotent JSONL, freshness checks, links, stable splits.

Converters only read their sources and make re-runs cheap and exact: outputs are written through a temporary
file and renamed (a killed run leaves no half file), JSONL is rewritten only when its bytes change, and an
output made from its sources as they are now -- and, for images, with the same options (:func:`output_key`) --
is reused. An output made from sources (:func:`write_output`) carries the newest source's modification time, as
``cp -p`` would; it is fresh only while that time is still the newest source's to the nanosecond, so a source
replaced by any other file -- one with an *older* time included (``tar x``, ``rsync -a``, ``cp -p`` of an
earlier download) -- is converted again. An output made from several files also records each one's size and
time (:func:`source_stamp`).

Written files get the permissions the umask gives any new file (not 0600). A temporary file is named
``.<name>.<pid>@<host>-<token>.part`` (`host`: :data:`HOST_TAG`); a failed write removes its own, and
:func:`remove_stale_parts` (run by ``DomainPlugin.convert`` before each conversion) removes those a killed run of
this machine and container left behind, and names the others it keeps. An ``OSError`` raised while writing (disk
full, permission denied) carries the path being written in ``filename``.

**Names read from data files** (an image path in a JSON, an XML ``<filename>``, an id turned into a file name) go
through :func:`inside_root`, the one containment check of every converter: a name that is absolute, climbs out of
its data root with ``..`` or leads out of it through a symlink is refused with ``SkipInput("path escapes data
root")`` before anything is opened.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import secrets
import shutil
import socket
import time
import warnings
from collections.abc import Callable, Collection, Iterable
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from PIL import Image, UnidentifiedImageError
from PIL.PngImagePlugin import PngInfo

from domains.base import DomainError, SkipInput
from model.tiling import ImageLoadError, load_image

__all__ = ["HOST_TAG", "KEY_CHUNK", "PATH_ESCAPES", "PNG_OPTIONS", "atomic_write", "check_image", "decode_image",
           "edited_outputs", "files_inside", "image_size", "inside_root", "is_fresh", "kept_warning", "link_or_copy",
           "newest_time", "output_key", "owner_gone", "png_bytes", "remove_stale_parts", "safe_name", "source_stamp",
           "split_of", "stored_key", "unique_stems", "write_jsonl", "write_output", "write_splits", "writer_state"]

PNG_OPTIONS = {"format": "PNG", "compress_level": 6, "optimize": False}
PATH_ESCAPES = "path escapes data root"  # the report reason of a name refused by inside_root
KEY_CHUNK = "pocket-adapt:key"  # PNG text chunk holding the output_key an image was made with
STALE_PART_SECONDS = 86_400  # a quick start's staging folder whose owner cannot be told is stale after a day
_PART = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)(?:@(?P<host>[0-9a-f]{8}))?-[0-9a-f]{8}\.part$")


def host_tag(hostname: str, boot_id: str, pid_namespace: str) -> str:
    """The 8 hex digits naming the processes whose pids mean the same: a pid only tells on the machine, in the boot
    and in the pid namespace (container) that gave it. Containers of one host share its boot id, and may share a
    host name (``--network host``, a fixed ``--hostname``), but not their pid namespace."""
    identity = "\0".join((hostname, boot_id, pid_namespace))
    return hashlib.sha1(identity.encode("utf-8", "surrogateescape")).hexdigest()[:8]


def _pid_space() -> tuple[str, str]:
    """This boot (Linux's boot id) and pid namespace (``pid:[inode]``); empty where there are none (no ``/proc``)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
    except (OSError, ValueError):
        boot = ""
    try:
        space = os.readlink("/proc/self/ns/pid")
    except OSError:  # a namespace not told could be any container's: a tag no other process shares
        space = f"unknown {secrets.token_hex(8)}" if os.path.isdir("/proc/self") else ""
    return boot, space


# this process's pid space in a temporary file's name (a shared file system is written from several machines, a
# shared volume from several containers)
HOST_TAG = host_tag(socket.gethostname(), *_pid_space())
_STARTED_NS = time.time_ns()  # a .part carrying this process's pid but older than this is a dead namesake's


def _part_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}@{HOST_TAG}-{secrets.token_hex(4)}.part")


def _new_part(path: Path) -> tuple[int, Path]:
    """Create ``.<name>.<pid>@<host>-<token>.part`` next to `path`, exclusively; mode 0o666 so the umask applies."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        tmp = _part_name(path)
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
        except OSError as exc:
            exc.filename = str(path)  # name the output the user asked for, not the temporary file
            raise


def _name_target(exc: BaseException, path: Path) -> None:
    if not isinstance(exc, OSError) or exc.filename is not None:
        return
    if exc.errno is None:  # OSError("...") prints "[Errno None] None: path" once it has a file name
        exc.args = (f"{exc}: {path}" if exc.args else str(path),)
    else:
        exc.filename = str(path)


def atomic_write(path: Path, write: Callable[[Any], None], binary: bool = True, mtime_ns: int | None = None) -> None:
    """Write `path` with ``write(file)`` through a temporary file in the same folder, then rename it; with
    `mtime_ns`, the file carries that modification time from the moment it appears.

    On any failure (Ctrl-C included) the temporary file is removed and `path` is left as it was; an
    ``OSError`` without a file name gets `path` as its ``filename``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _new_part(path)
    try:
        # text as written, "\n" everywhere: the same call writes the same bytes on Windows too
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8", "newline": "\n"})) as f:
            write(f)
        if mtime_ns is not None:
            os.utime(tmp, ns=(time.time_ns(), mtime_ns))
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        _name_target(exc, path)
        raise


def remove_stale_parts(root: Path) -> list[Path]:
    """Delete the temporary ``.part`` files killed runs left under `root`; returns them, sorted.

    Only a ``.<name>.<pid>@<host>-<token>.part`` whose `host` is :data:`HOST_TAG` (this machine, boot and container)
    is judged, stale when process `pid` is gone or started after the file was last written (a reused pid, where
    Linux's ``/proc`` tells; this process by its own start time); a live writer's file is kept. Any other ``.part``
    -- another machine's or container's, an earlier version's (no tag, or one of the host name alone), any on a
    system where processes cannot be probed -- may be a live writer's whose pid means nothing here: it is kept, at
    any age, and a warning names it for the user to delete.
    """
    if not root.is_dir():
        return []
    removed, unknown = [], []
    for part in sorted(root.rglob(".*.part")):
        try:
            st = part.lstat()
        except OSError:
            continue
        if not os.path.isfile(part) or os.path.islink(part):
            continue
        m = _PART.match(part.name)
        state = writer_state(m and m.group("pid"), m and m.group("host"), st.st_mtime_ns)
        if state == "unknown":
            unknown.append(part)
        elif state == "gone":
            part.unlink(missing_ok=True)
            removed.append(part)
    if unknown:
        warnings.warn(kept_warning(unknown, "temporary file(s)", f"under {root}", "writer", "conversion"), stacklevel=2)
    return removed


def writer_state(pid: int | str | None, host: str | None, mtime_ns: int) -> str:
    """What is known of the process `pid` that named a temporary file or folder (last written at `mtime_ns`) with
    the :data:`HOST_TAG` `host`: ``"gone"`` (not running, or a later process holding a reused pid: what it left may
    be removed), ``"alive"``, or ``"unknown"`` where its pid means nothing here -- no pid or no tag (an earlier
    version's name), another machine's, boot's or container's tag, or a system whose processes cannot be probed
    (Windows). The one rule of every clean-up of what a killed process left (converters' ``.part`` files, export
    staging folders, the demo's runtime folders); what is "unknown" is kept and named (:func:`kept_warning`)."""
    text = str(pid) if pid is not None else ""
    if not text.isdigit() or host != HOST_TAG or os.name == "nt":
        return "unknown"
    return "gone" if owner_gone(int(text), mtime_ns, host) else "alive"


def kept_warning(kept: list[Path], what: str, where: str, owner: str = "writer", writer: str = "process") -> str:
    """The warning naming the `kept` paths (first three) a clean-up left because :func:`writer_state` is "unknown":
    ``kept N <what> <where> whose <owner> cannot be checked from here (...): ...; delete them once no <writer>
    writes there``."""
    shown = ", ".join(map(str, kept[:3])) + (f" and {len(kept) - 3} more" if len(kept) > 3 else "")
    return (f"kept {len(kept)} {what} {where} whose {owner} cannot be checked from here (another machine or "
            f"container, or an earlier pocket-adapt): {shown}; delete them once no {writer} writes there")


def owner_gone(pid: int, mtime_ns: int, host: str | None = None) -> bool:
    """Whether the process `pid` that named a temporary file (or folder) last written at `mtime_ns` is gone: not
    running, or a later process holding a reused pid; this process when it started after the write. `host`: the
    :data:`HOST_TAG` the name carries; a process of another machine or container (or of a name without a tag, an
    earlier version's) cannot be probed, so is never gone."""
    if host != HOST_TAG:
        return False
    if pid == os.getpid():
        return mtime_ns < _STARTED_NS
    if not process_alive(pid):
        return True
    started = _start_time_ns(pid)  # a pid is reused: a process started after the file was written is not its writer
    return started is not None and started > mtime_ns + PID_START_SLACK_NS


PID_START_SLACK_NS = 5 * 10**9  # the boot time /proc gives is in whole seconds; clock steps since add a little


def _start_time_ns(pid: int) -> int | None:
    """When process `pid` started (ns since the epoch) where Linux's ``/proc`` says; None elsewhere."""
    try:
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])  # field 22, starttime
        boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        return boot * 10**9 + ticks * 10**9 // os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def process_alive(pid: int) -> bool:
    """Whether process `pid` may be running: False only when it is known to be gone (where processes cannot be
    probed, as on Windows, where ``os.kill(pid, 0)`` would end it, True)."""
    if pid == os.getpid() or os.name == "nt":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # alive, owned by someone else
        return True
    return True


def output_key(**options: Any) -> str:
    """A short digest of the options that shape an output (bands, stretch, resize, ...), whatever their order."""
    text = json.dumps(options, sort_keys=True, default=repr, separators=(",", ":"))
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


def stored_key(path: Path) -> str | None:
    """The :func:`output_key` a PNG was made with (:func:`png_bytes`), or None."""
    try:
        with Image.open(path) as im:
            return im.info.get(KEY_CHUNK)
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError):
        return None


def read_json_file(path: Path, report, parse: Callable[[Path], Any] | None = None) -> Any:
    """The JSON of `path` (`parse(path)`, by default its UTF-8 text as JSON), or None with the file counted as a skip
    in `report`: a missing file, an unreadable one (a folder of that name, no permission), malformed JSON (or a
    shape `parse` refuses with a TypeError / KeyError / ValueError) or a file holding only ``null`` (so None always
    means "counted")."""
    try:
        value = parse(path) if parse else json.loads(path.read_text(encoding="utf-8"))
        if value is not None:
            return value
        report.skip(path, "malformed JSON", f"{path}: the file holds null, not the data")
    except FileNotFoundError:
        report.skip(path, "missing file", f"{path}: no such file")
    except OSError as exc:  # said, not a traceback
        report.skip(path, "unreadable file", f"{path}: {exc.strerror or exc}")
    except (ValueError, KeyError, TypeError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        report.skip(path, "malformed JSON", f"{path}: {type(exc).__name__}: {exc}")
    return None


def write_jsonl(records: Iterable[dict], path: Path) -> bool:
    """Write `records` unless `path` already holds exactly these bytes (idempotent re-runs); True if written."""
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
    try:
        if path.read_bytes() == data:
            return False
    except OSError:
        pass
    atomic_write(path, lambda f: f.write(data))
    return True


def write_splits(report, out: Path, dataset: str, splits: dict[str, list[dict]], *, keep_empty: bool = True):
    """Write ``out/<dataset>_<split>.jsonl`` per split (idempotently), record them in `report` (a
    ``domains.base.ConvertReport``: outputs and written counts) and return it. Empty splits are written
    as empty files unless `keep_empty` is False. When every split is empty nothing is written: a run that
    converted nothing (wrong source folder, wrong options) leaves the outputs of an earlier run as they were.

    A split file an earlier run wrote that this run does not make (``test`` after ``test_fraction=0``) is removed
    and listed in ``report.removed``: left behind, a held-out file would overlap the new training split. The
    split files of the last run are listed in ``out/.<dataset>.splits.json``; without it (outputs of an older
    version) ``train``, ``val`` and ``test`` are the ones looked for."""
    if not any(splits.values()):
        return report
    made: dict[str, str] = {}
    for split, records in splits.items():
        if not records and not keep_empty:
            continue
        path = out / f"{dataset}_{split}.jsonl"
        write_jsonl(records, path)
        report.outputs[split] = path
        report.wrote(len(records))
        made[path.name] = _sha256(path)
    manifest = out / f".{dataset}.splits.json"
    try:
        listed = json.loads(manifest.read_text(encoding="utf-8"))
        earlier = set(listed) if isinstance(listed, (list, dict)) else None
    except (OSError, ValueError, TypeError):
        earlier = None
    if earlier is None:
        earlier = {f"{dataset}_{split}.jsonl" for split in ("train", "val", "test")}
    for name in sorted(n for n in earlier - set(made) if isinstance(n, str)):
        stale = out / name
        # only a split file of this data set: a damaged or edited manifest never removes another file of `out`
        if Path(name).name == name and name.startswith(f"{dataset}_") and name.endswith(".jsonl") and stale.is_file():
            stale.unlink()
            report.removed.append(stale)
    data = json.dumps(dict(sorted(made.items())), indent=0).encode("utf-8")
    if not manifest.is_file() or manifest.read_bytes() != data:
        atomic_write(manifest, lambda f: f.write(data))
    return report


def remove_unreferenced_images(report, out: Path, folder: str, splits: dict[str, list[dict]],
                               made: Collection[Path] = ()) -> None:
    """Delete the files under ``out/folder`` (a converter's own image folder) that no record of `splits` names
    in its ``image`` (a path, or a list of paths, relative to `out`), listing them in ``report.removed``: left
    behind, an earlier run's images (an unredacted render beside its redacted one, an image of a file skipped
    this time) would stay in the data set unreferenced. Those in `made` -- written by this run where no file was,
    for a sample skipped after its image was made -- are deleted unlisted: they are no earlier run's. Nothing under
    the report's source (the data being converted) is removed. Hidden files (a live writer's ``.part``) are left,
    nothing outside ``out/folder`` is touched and symlinked folders are not entered; when every split is empty,
    only `made` is removed (as :func:`write_splits`: a run that converted nothing leaves the outputs as they were)."""
    top = Path(os.path.normpath(out / folder))
    if not top.is_relative_to(os.path.normpath(out)) or top == Path(os.path.normpath(out)):
        raise ValueError(f"{folder!r}: an image folder outside {out} (or {out} itself); nothing removed")
    if not any(splits.values()):
        for path in made:
            Path(path).unlink(missing_ok=True)
        return
    used = set()
    for records in splits.values():
        for record in records:
            image = record.get("image")
            for rel in image if isinstance(image, list) else [image]:
                if isinstance(rel, str):
                    used.add(os.path.normpath(out / rel))
    ours = {os.path.normpath(p) for p in made}
    source = Path(report.source).resolve() if getattr(report, "source", None) not in (None, "") else None
    for dirpath, dirnames, filenames in os.walk(out / folder):
        dirnames.sort()
        if source is not None and Path(dirpath).resolve().is_relative_to(source):
            # the data being converted lies here (--src under out/images/...): never the converter's to delete
            dirnames.clear()
            continue
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if not name.startswith(".") and os.path.normpath(path) not in used and path.resolve() != source:
                path.unlink()
                if os.path.normpath(path) not in ours:
                    report.removed.append(path)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def edited_outputs(out: Path) -> list[Path]:
    """The split files in `out` changed since a conversion wrote them: their bytes differ from the digest its
    ``.<dataset>.splits.json`` recorded (a converter run again would replace a user's edits). Manifests of older
    versions (a list of names, no digests) tell nothing, so their files are not listed."""
    edited = []
    for manifest in sorted(Path(out).glob(".*.splits.json")):
        try:
            recorded = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(recorded, dict):
            continue
        for name, digest in sorted(recorded.items()):
            path = Path(out) / name
            if Path(name).name == name and path.is_file() and _sha256(path) != digest:
                edited.append(path)
    return edited


def _paths(sources: Path | Iterable[Path]) -> list[Path]:
    return [Path(sources)] if isinstance(sources, (str, os.PathLike)) else [Path(s) for s in sources]


def newest_time(sources: Path | Iterable[Path]) -> int:
    """The newest modification time (ns) of `sources`; the time :func:`write_output` gives what it makes of them."""
    return max(p.stat().st_mtime_ns for p in _paths(sources))


def source_stamp(sources: Path | Iterable[Path]) -> str:
    """A digest of each source's size and modification time, in order: stored in an output made from several
    files (where one time cannot tell which of them was replaced) and compared by its writer on re-runs."""
    stats = [p.stat() for p in _paths(sources)]
    return output_key(sources=[[st.st_size, st.st_mtime_ns] for st in stats])


def write_output(dst: Path, data: bytes, sources: Path | Iterable[Path]) -> None:
    """Write `data`, made from `sources`, to `dst` atomically, with the newest source's modification time
    (:func:`is_fresh` then knows it was made from these files as they are now)."""
    atomic_write(dst, lambda f: f.write(data), mtime_ns=newest_time(sources))


def is_fresh(dst: Path, sources: Path | Iterable[Path], key: str | None = None) -> bool:
    """True when `dst` exists, is not empty, carries exactly the newest modification time of `sources` (as
    :func:`write_output`, a hard link or ``cp -p`` leave it: a source replaced by any other file since, whether
    newer or older, makes it stale) and, with `key`, is a PNG saved with that :func:`output_key` (an image made
    with other options is stale whatever its time). Without sources: exists and is not empty."""
    sources = _paths(sources)
    try:
        st = dst.stat()
        if st.st_size == 0 or (sources and st.st_mtime_ns != newest_time(sources)):
            return False
    except OSError:
        return False
    return key is None or stored_key(dst) == key


def png_bytes(img: Image.Image, key: str | None = None, text: dict[str, str] | None = None) -> bytes:
    """`img` as PNG bytes (:data:`PNG_OPTIONS`; `key`, an :func:`output_key`, in a text chunk for :func:`is_fresh`;
    `text`: more text chunks, name -> value), made in memory: a converter step computed in a worker process
    (:mod:`domains.parallel`) returns them and the converter writes them (:func:`write_output`)."""
    info = None
    if key is not None or text:
        info = PngInfo()
        for name, value in (({KEY_CHUNK: key} if key is not None else {}) | (text or {})).items():
            info.add_text(name, value)
    buf = io.BytesIO()
    img.save(buf, **PNG_OPTIONS, pnginfo=info)
    return buf.getvalue()


def files_inside(root: Path, paths: Iterable[Path], report) -> list[Path]:
    """`paths` (found by listing folders under `root`) without those that lead out of it through a symlink
    (:func:`inside_root`), each of those counted in `report` as ``path escapes data root``; nothing is opened."""
    kept = []
    for path in paths:
        try:
            inside_root(root, path.relative_to(root).as_posix())
        except SkipInput as exc:
            report.skip(path, exc.reason, exc.detail)
            continue
        kept.append(path)
    return kept


def decode_image(path: Path) -> Image.Image:
    """`path` decoded in full as RGB by the one image reader (:func:`model.tiling.load_image`: the pixel cap from the
    header, also past PIL's own limit; no EPS; EXIF turned upright; wide samples stretched), as training will read
    it. Raises ``SkipInput("missing image" | "unreadable image", ...)`` naming the file."""
    if not path.is_file():
        raise SkipInput("missing image", f"{path}: no such file")
    try:
        return load_image(path)
    except ImageLoadError as exc:
        raise SkipInput("unreadable image", str(exc)) from None


def check_image(path: Path) -> tuple[int, int]:
    """The (W, H) training will see of an image decoded in full (a truncated JPEG has a whole header); raises
    :class:`SkipInput` as :func:`decode_image`."""
    return decode_image(path).size


def image_size(path: Path) -> tuple[int, int]:
    """(W, H) from the image header."""
    with Image.open(path) as im:
        return im.size


def link_or_copy(src: Path, dst: Path, mode: str = "hardlink") -> None:
    """Put `src` at `dst`: a hard link (``mode="hardlink"``, falling back to a copy across file systems) or a
    copy (``"copy"``, which keeps the source's mode and time as ``cp -p`` does). An existing `dst` of the same
    size and time as `src` (:func:`is_fresh`) is kept."""
    if mode not in ("hardlink", "copy"):
        raise DomainError(f"link mode must be 'hardlink' or 'copy', got {mode!r}")
    try:
        if dst.stat().st_size == src.stat().st_size and is_fresh(dst, [src]):
            return
    except OSError:
        pass
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = _part_name(dst)
    try:
        if mode == "hardlink":
            try:
                os.link(src, tmp)
            except OSError:
                shutil.copy2(src, tmp)
        else:
            shutil.copy2(src, tmp)
        os.replace(tmp, dst)
    except BaseException as exc:
        _name_target(exc, dst)
        raise
    finally:
        tmp.unlink(missing_ok=True)


def check_held_out_fraction(value: float, name: str = "test_fraction") -> None:
    """A held-out share in [0, 1) (0: no held-out split), or a `DomainError` naming the option."""
    if not 0 <= value < 1:
        raise DomainError(f"{name} must be a share in [0, 1) (0.2: a fifth held out; 0: none), got {value!r}")


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8", "surrogateescape")).hexdigest()[:8]


def safe_name(name: str | os.PathLike[str]) -> str:
    """`name` as a portable file-name part (``[A-Za-z0-9._-]``, no leading or trailing ``_`` / ``.``).

    A name that already is one is kept as it is; any other is cleaned and gets ``-`` and a short hash of the
    original, so two different names never give one output name: ``森林`` and ``農地``, or ``north/tile`` and
    ``north_tile``, would otherwise both land on one file and a record would show another file's pixels.
    """
    text = os.fspath(name)
    clean = _UNSAFE.sub("_", text).strip("_.")
    return text if clean == text else f"{clean or 'x'}-{_digest(text)}"


def _widen_shared(stems: dict[str, str], widen: Callable[[str], str]) -> dict[str, str]:
    counts: dict[str, int] = {}
    for stem in stems.values():
        counts[stem] = counts.get(stem, 0) + 1
    return {n: stem if counts[stem] == 1 else widen(n) for n, stem in stems.items()}


def unique_stems(names: Iterable[str]) -> dict[str, str]:
    """An output stem for each source file of one output folder, by its name (a relative path, suffix
    included): :func:`safe_name` of the name without its suffix; where two files share that (``a.png`` and
    ``a.jpg`` would both become ``a.png``), of the whole name (``a.png``, ``a.jpg``); should even those meet,
    that with a hash of the name. Distinct names always get distinct stems, whatever order they come in."""
    stems = {n: safe_name(PurePosixPath(n).with_suffix("").as_posix()) for n in sorted(set(names))}
    stems = _widen_shared(stems, safe_name)
    return _widen_shared(stems, lambda n: f"{stems[n]}-{_digest(n)}")


def split_of(key: str, held_out_fraction: float, held_out: str = "test") -> str:
    """``held_out`` for about `held_out_fraction` of keys, else ``"train"``: a hash of the key, so the split is
    the same on every run and machine and does not move when other keys come or go."""
    if held_out_fraction <= 0:
        return "train"
    h = int.from_bytes(hashlib.sha1(key.encode("utf-8")).digest()[:8], "big") / 2**64
    return held_out if h < held_out_fraction else "train"


def _root_name(root: str | os.PathLike[str]) -> str:
    """`root` as the user gave it, or its absolute path where that text names no folder (``.``, ``..``, ``""``):
    "leads outside ." would not say where the root is."""
    given = os.fspath(root)
    if any(part not in (".", "..") for part in Path(given).parts):
        return given
    return os.path.abspath(given)


def inside_root(root: str | os.PathLike[str], name: str | os.PathLike[str]) -> Path:
    """`name` -- a relative path read from a data file -- as a path under `root`; nothing is opened.

    Raises ``SkipInput(PATH_ESCAPES, detail)`` (the converter counts it and goes on) for

    * an empty name, one holding a NUL byte, or a value that is no text (a number or list read from JSON);
    * an absolute name: ``/etc/passwd``, ``C:\\x``, ``\\\\server\\share\\x``;
    * a name whose ``..`` steps leave `root` (``../../etc/passwd``), judged on the text (backslashes count as
      separators), so ``a/../b`` is fine and a symlink cannot turn ``link/..`` into somewhere else;
    * a name that leads through a symlink inside `root` to a place outside it (a downloaded archive can carry
      such links); `root` itself may be a symlink. A data folder linked in from elsewhere is refused too: give
      its real location as the converter's root option instead (e.g. DriveLM's ``nuscenes_root``).

    Returns ``root / name`` normalised (``..`` and ``.`` removed, symlinks kept as written), which the caller
    opens; the file need not exist.
    """
    text = os.fspath(name) if isinstance(name, (str, os.PathLike)) else name  # a JSON value may be any type
    root = _root_name(root)
    if not isinstance(text, str) or not text.strip() or "\x00" in text:
        raise SkipInput(PATH_ESCAPES, f"{text!r}: not a file name under {root}")
    posix = text.replace("\\", "/")
    win = PureWindowsPath(text)
    if posix.startswith("/") or win.drive or win.is_absolute():
        raise SkipInput(PATH_ESCAPES, f"{text!r}: an absolute path; expected a path relative to {root}")
    base = Path(os.path.abspath(root))
    path = Path(os.path.normpath(base / posix))
    # where a name leads is said relative to `root`, a symlink's target not at all: a full path would name the
    # folders around the data (user and patient names) in reports and logs
    if not path.is_relative_to(base):
        raise SkipInput(PATH_ESCAPES, f"{text!r} leads outside {root} (to {os.path.relpath(path, base)})")
    try:
        real_base, real = base.resolve(), path.resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop
        why = getattr(exc, "strerror", None) or "a symlink loop"
        raise SkipInput(PATH_ESCAPES, f"{text!r}: cannot be resolved under {root} ({why})") from None
    if not real.is_relative_to(real_base):
        raise SkipInput(PATH_ESCAPES, f"{text!r} leads through a symlink to a place outside {root}")
    return path
