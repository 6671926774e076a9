"""Uploaded files, handled so that nothing identifying leaks into the page or stays on disk.

Every upload request is copied into a fresh private folder (mode 0700) under neutral names (``upload-1.dcm``,
``upload-2.png``, ...): readers, error messages and the page only ever see those names, never the original
file name (which often carries a patient's name). A domain may keep one safe word of the original name
(``name_tag``, e.g. the nuScenes camera ``CAM_BACK_LEFT``), drawn from a fixed vocabulary, in the staged name.
Errors become :class:`UploadError` with a short readable message.

Where things live: every folder of one demo process sits inside that process's runtime folder
``<tmp>/pocket-adapt-demo-<pid>-<random>/`` (mode 0700, :func:`runtime_root`), which also holds Gradio's
upload cache and rendered images unless ``GRADIO_TEMP_DIR`` says otherwise (:func:`use_private_gradio_cache`).
It is removed at exit, on SIGTERM / SIGINT (:func:`install_signal_cleanup`), and by the next demo to start
once its owner is dead (:func:`sweep_stale`). While the demo runs it touches the folder's heartbeat file, which tells
a demo in another container (that cannot see whether the owner runs) that the folder is still in use.

Gradio's cached copy of an upload keeps the original name; once staged it is renamed to a neutral name in
its own folder. Gradio names that folder by the file's content, so identical files uploaded at the same time
share one cached path: a request whose cached file was already renamed stages from the neutral copy.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import math
import os
import re
import shutil
import signal
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from deploy.demo.page import log_reference
from domains.files import HOST_TAG, writer_state
from model.errors import PocketAdaptError

log = logging.getLogger(__name__)

__all__ = ["RUNTIME_PREFIX", "StagedUpload", "UploadError", "cleanup_all", "close_session", "install_signal_cleanup",
           "readable_error", "runtime_root", "stage_uploads", "sweep_stale", "upload_label", "use_private_gradio_cache"]

RUNTIME_PREFIX = "pocket-adapt-demo-"
# "<pid>@<host> <process start token>" of the demo process that made the runtime folder (host: domains.files.HOST_TAG;
# a shared /tmp is written from several containers, whose pids mean nothing here)
OWNER_FILE = "owner"
STALE_AFTER_S = 24 * 3600  # a runtime folder whose owner cannot be told is swept after this long without a heartbeat
# touched every HEARTBEAT_S by the live demo: an idle demo's folder (no upload for a day) is not taken for a dead one's
HEARTBEAT_FILE = "heartbeat"
HEARTBEAT_S = 15 * 60
RETIRED_MAX_AGE_S = 3600  # a neutral copy of a cached upload is removed after this (Gradio's own cache age)

# a suffix is kept only if it looks like an ordinary file type (never arbitrary text from the name)
_SUFFIX = re.compile(r"^\.[a-z0-9]{1,5}$")
_TAG = re.compile(r"^[A-Za-z0-9_]{1,32}$")
_LIVE: set[Path] = set()
_LIVE_LOCK = threading.Lock()
_SESSIONS: dict[str, list["StagedUpload"]] = {}  # a browser session's staged uploads (guarded by _LIVE_LOCK)
_SESSION_RETIRED: dict[str, list[Path]] = {}  # the neutral cached copies its uploads left (guarded by _CACHE_LOCK)
_ROOT: tuple[int, Path] | None = None  # (pid, folder): a forked child makes its own
_ROOT_LOCK = threading.Lock()
_CACHE_LOCK = threading.Lock()  # staging from / renaming in Gradio's cache, one request at a time
_RETIRED: dict[Path, tuple[Path, float]] = {}  # cached path (original name) -> (its neutral copy, when renamed)
_RETIRED_COUNT = itertools.count(1)


class UploadError(PocketAdaptError, ValueError):
    """A problem with an upload, worded for the page (neutral file names, no stack trace)."""


def upload_label(k: int) -> str:
    """The neutral name shown for the `k`-th (0-based) uploaded file: ``"upload 1"``."""
    return f"upload {k + 1}"


# --------------------------------------------------------------------------------------------- runtime folder
def runtime_root() -> Path:
    """This process's private runtime folder (mode 0700), made on first use."""
    global _ROOT
    with _ROOT_LOCK:
        pid = os.getpid()
        if _ROOT is None or _ROOT[0] != pid or not _ROOT[1].is_dir():
            root = Path(tempfile.mkdtemp(prefix=f"{RUNTIME_PREFIX}{pid}-"))
            (root / OWNER_FILE).write_text(f"{pid}@{HOST_TAG} {_start_token(pid)}\n", encoding="ascii")
            (root / HEARTBEAT_FILE).touch()
            _ROOT = (pid, root)
            with _LIVE_LOCK:
                _LIVE.add(root)
            threading.Thread(target=_heartbeat, args=(root,), name="pocket-adapt-demo-heartbeat", daemon=True).start()
        return _ROOT[1]


def _heartbeat(root: Path) -> None:
    """Touch `root`'s heartbeat file every :data:`HEARTBEAT_S` seconds while it is this process's runtime folder."""
    while True:
        time.sleep(HEARTBEAT_S)
        if _ROOT != (os.getpid(), root):  # a later runtime folder beats for itself
            return
        try:
            os.utime(root / HEARTBEAT_FILE)  # never creates: a folder being removed stays removed
        except OSError:
            if not root.is_dir():
                return


def use_private_gradio_cache() -> Path:
    """Point Gradio's cache (uploads as the browser named them, rendered images) into the private runtime
    folder, unless ``GRADIO_TEMP_DIR`` is already set. Call before building any Gradio component.
    Returns the cache folder in use."""
    if not os.environ.get("GRADIO_TEMP_DIR"):
        cache = runtime_root() / "gradio"
        cache.mkdir(mode=0o700, exist_ok=True)
        os.environ["GRADIO_TEMP_DIR"] = str(cache)
    return Path(os.environ["GRADIO_TEMP_DIR"])


def _start_token(pid: int) -> str:
    """When process `pid` started (clock ticks since boot, from /proc), or "" where that cannot be read:
    tells a live owner from an unrelated process that got its pid later."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
        return stat_line.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _owner_alive(folder: Path) -> bool | None:
    """Whether the process that made `folder` still runs; None when the folder does not say who made it, or its pid
    means nothing here (:func:`domains.files.writer_state`: another machine's or container's, an earlier version's
    owner file without a tag, Windows)."""
    owner = folder / OWNER_FILE
    try:
        pid_host, _, token = owner.read_text(encoding="ascii").strip().partition(" ")
        mtime_ns = owner.stat().st_mtime_ns
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    pid, _, host = pid_host.partition("@")
    if not pid.strip("0"):  # no pid (0 would be os.kill's process group)
        return None
    state = writer_state(pid, host, mtime_ns)
    if state != "alive":
        return None if state == "unknown" else False
    current = _start_token(int(pid))
    return not (token and current and token != current)  # a different start time: the pid was reused


def sweep_stale(tmp_dir: str | os.PathLike | None = None, *, stale_after: float = STALE_AFTER_S,
                now: float | None = None) -> list[Path]:
    """Remove runtime folders left by demo processes that are gone (killed, crashed): folders of this user
    whose owner process has ended, or, when a folder does not say its owner or its owner's pid means nothing here
    (another machine's or container's, an earlier version's), that neither changed nor had a heartbeat for
    `stale_after` seconds (a live demo touches its heartbeat file every :data:`HEARTBEAT_S`, uploads or not). A live
    demo's folder is never touched. Returns the folders removed."""
    base = Path(tmp_dir or tempfile.gettempdir())
    now = time.time() if now is None else now
    own = _ROOT[1] if _ROOT is not None else None
    removed = []
    for folder in base.glob(RUNTIME_PREFIX + "*"):
        try:
            info = folder.lstat()
        except OSError:
            continue
        if not stat.S_ISDIR(info.st_mode) or folder == own or (hasattr(os, "getuid") and info.st_uid != os.getuid()):
            continue
        alive = _owner_alive(folder)
        if alive or (alive is None and now - _last_sign_of_life(folder, info.st_mtime) <= stale_after):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        if not folder.exists():
            removed.append(folder)
    if removed:
        log.info("demo: removed %d staging folder(s) left by demo processes that have ended", len(removed))
    return removed


def _last_sign_of_life(folder: Path, folder_mtime: float) -> float:
    """When `folder` last changed or its owner last beat (an earlier version's folder has no heartbeat file)."""
    try:
        return max(folder_mtime, (folder / HEARTBEAT_FILE).lstat().st_mtime)
    except OSError:
        return folder_mtime


def cleanup_all() -> None:
    """Remove every staged upload and this process's runtime folder (with the private Gradio cache), and
    the neutral copies left in a Gradio cache outside it."""
    with _LIVE_LOCK:
        roots = list(_LIVE)
        _LIVE.clear()
    for root in roots:
        shutil.rmtree(root, ignore_errors=True)
    with _CACHE_LOCK:
        retired = [neutral for neutral, _ in _RETIRED.values()]
        _RETIRED.clear()
    for neutral in retired:
        _unlink_quietly(neutral)


atexit.register(cleanup_all)


def install_signal_cleanup(signals: Iterable[int] = (signal.SIGTERM, signal.SIGINT)) -> bool:
    """On each of `signals`, remove the staged uploads (:func:`cleanup_all`) and then do what the signal did
    before (SIGINT: KeyboardInterrupt; SIGTERM: end the process). Only possible from the main thread;
    returns whether the handlers are in place."""
    if threading.current_thread() is not threading.main_thread():
        return False
    for sig in signals:
        previous = signal.getsignal(sig)
        if getattr(previous, "pocket_adapt_cleanup", False):
            continue

        def handler(signum, frame, previous=previous):
            cleanup_all()
            if callable(previous):
                return previous(signum, frame)
            if previous == signal.SIG_IGN:
                return None
            signal.signal(signum, signal.SIG_DFL)  # end as the signal would have: status and all
            os.kill(os.getpid(), signum)
            return None

        handler.pocket_adapt_cleanup = True
        signal.signal(sig, handler)
    return True


# --------------------------------------------------------------------------------------------- staging
@dataclass
class StagedUpload:
    """One upload request copied under neutral names into its own private folder; call :meth:`cleanup`."""

    root: Path
    paths: list[Path] = field(default_factory=list)
    tags: list[str | None] = field(default_factory=list)
    session: str | None = None  # the browser session it came from (:func:`close_session`)

    @property
    def labels(self) -> list[str]:
        return [upload_label(k) for k in range(len(self.paths))]

    def scratch(self, name: str) -> Path:
        """A fresh folder inside the private root (for example to extract a zip into)."""
        path = self.root / name
        path.mkdir(mode=0o700, parents=True, exist_ok=False)
        return path

    def neutralize(self, text: str) -> str:
        """`text` with private paths, and the staged file names readers quote (``upload-1.png``), replaced by
        the neutral upload labels."""
        for k, path in enumerate(self.paths):
            text = text.replace(str(path), upload_label(k))
        text = text.replace(str(self.root) + os.sep, "").replace(str(self.root), "upload")
        for k, path in sorted(enumerate(self.paths), key=lambda item: -len(item[1].name)):  # upload-10 before upload-1
            text = text.replace(path.name, upload_label(k))
        return text

    def cleanup(self) -> None:
        """Remove the staged copies (idempotent)."""
        shutil.rmtree(self.root, ignore_errors=True)
        with _LIVE_LOCK:
            _LIVE.discard(self.root)
            if self.session in _SESSIONS:
                _SESSIONS[self.session] = [u for u in _SESSIONS[self.session] if u is not self]


def close_session(session: str | None) -> int:
    """Free every upload a browser session staged, and the neutral copies its uploads left in Gradio's cache
    (its page was closed: Gradio's unload event); returns how many uploads were still held."""
    with _LIVE_LOCK:
        staged = list(_SESSIONS.pop(session or "", []))
    for upload in staged:
        upload.cleanup()
    with _CACHE_LOCK:
        gone = set(_SESSION_RETIRED.pop(session or "", []))
        if gone:
            _prune_retired(lambda neutral, _when: neutral in gone)
    return len(staged)


def stage_uploads(files: Iterable[str | os.PathLike] | str | os.PathLike | None, *, max_bytes: int,
                  remove_originals: bool = True, name_tag: Callable[[str], str | None] | None = None,
                  session: str | None = None) -> StagedUpload:
    """Copy uploaded `files` into a fresh private folder as ``upload-<k>[.<tag>]<suffix>``.

    Checks that each is a regular file and that together they stay within `max_bytes`. `name_tag` maps an
    original file name to a short word kept in the staged name (letters, digits and ``_`` only; anything
    else is dropped). With `remove_originals`, a file lying in Gradio's upload cache is renamed to a neutral
    name once copied (files elsewhere are never touched). `session`: the browser session's id, whose
    :func:`close_session` frees the upload when the page closes. Raises :class:`UploadError`.
    """
    if files is None:
        raise UploadError("no file was uploaded")
    items = [files] if isinstance(files, (str, os.PathLike)) else list(files)
    items = [Path(_path_of(f)) for f in items]
    if not items:
        raise UploadError("no file was uploaded")
    tags = [_safe_tag(name_tag, src.name) for src in items]
    cache = _gradio_cache() if remove_originals else None
    with _CACHE_LOCK:
        _prune_retired()
        sources = [_source_of(src, cache) for src in items]
        total = 0
        for k, src in enumerate(sources):
            if src is None or not src.is_file():
                raise UploadError(f"{upload_label(k)}: not a regular file")
            total += src.stat().st_size
        if total > max_bytes:
            raise UploadError(f"the upload is {_mb(total)}, above the {_mb(max_bytes)} limit of this demo")
        root = Path(tempfile.mkdtemp(prefix="upload-", dir=runtime_root()))  # 0700, one per request
        staged = StagedUpload(root, session=session)
        with _LIVE_LOCK:
            _LIVE.add(root)
            if session:
                _SESSIONS.setdefault(session, []).append(staged)
        try:
            for k, (src, tag) in enumerate(zip(sources, tags)):
                suffix = _suffix_of(items[k].name)  # the original's: a neutral cached copy has none
                name = f"upload-{k + 1}" + (f".{tag}" if tag else "") + suffix
                dst = root / name
                shutil.copyfile(src, dst)
                staged.paths.append(dst)
                staged.tags.append(tag)
        except OSError as err:
            staged.cleanup()
            raise UploadError(f"the upload could not be stored ({err.strerror or type(err).__name__})") from None
        if cache is not None:
            for src in items:
                neutral = _retire_cached(src, cache)
                if neutral is not None and session:  # kept for identical uploads arriving now; freed with the page
                    _SESSION_RETIRED.setdefault(session, []).append(neutral)
    return staged


def _suffix_of(name: str) -> str:
    """The suffix a staged copy keeps: the name's last one when it looks like a file type, ``.dcm.gz`` whole (the
    medical reader judges a gzipped slice that does not decode as damaged by it, as for a zip's members)."""
    name = name.lower()
    if name.endswith(".dcm.gz"):
        return ".dcm.gz"
    suffix = Path(name).suffix
    return suffix if _SUFFIX.match(suffix) else ""


def _safe_tag(name_tag: Callable[[str], str | None] | None, name: str) -> str | None:
    if name_tag is None:
        return None
    try:
        tag = name_tag(name)
    except Exception:  # noqa: BLE001 - a tag is a convenience; the reader reports what it misses
        log.warning("demo: name_tag failed", exc_info=True)
        return None
    return tag if isinstance(tag, str) and _TAG.match(tag) else None


def _source_of(src: Path, cache: Path | None) -> Path | None:
    """The file to copy for `src`: itself, or, when another request already renamed this cached file, the
    neutral copy it left (same Gradio cache path, so the same content)."""
    if src.is_file() or cache is None:
        return src
    entry = _RETIRED.get(_resolved(src))
    return entry[0] if entry is not None and entry[0].is_file() else None


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except OSError:
        return path.absolute()


def _retire_cached(src: Path, cache: Path) -> Path | None:
    """Rename Gradio's cached copy (it carries the original name) to a neutral name in its own folder; returns
    that neutral copy (None where there was nothing to rename)."""
    real = _resolved(src)
    if cache not in real.parents:
        return None
    try:
        if real.is_file():
            neutral = real.parent / f".pocket-adapt-staged-{next(_RETIRED_COUNT)}"
            os.replace(real, neutral)
            old = _RETIRED.get(real)
            _RETIRED[real] = (neutral, time.time())
            if old is not None and old[0] != neutral:
                _unlink_quietly(old[0])
            return neutral
    except OSError:  # best effort: Gradio's cache cleaner gets it later
        log.debug("demo: could not rename a cached upload", exc_info=True)
    return None


def _prune_retired(drop: Callable[[Path, float], bool] | None = None, now: float | None = None) -> None:
    """Remove the neutral copies `drop(neutral, renamed_at)` picks (default: older than RETIRED_MAX_AGE_S, or
    gone), with their folder once empty; under _CACHE_LOCK."""
    now = time.time() if now is None else now
    drop = drop or (lambda neutral, when: now - when > RETIRED_MAX_AGE_S or not neutral.exists())
    for original, (neutral, when) in list(_RETIRED.items()):
        if drop(neutral, when):
            _unlink_quietly(neutral)
            del _RETIRED[original]
            try:
                neutral.parent.rmdir()  # only when empty
            except OSError:
                pass


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


def readable_error(exc: BaseException, staged: StagedUpload | None = None) -> str:
    """A one-paragraph message for the page: a PocketAdaptError's own text (paths neutralized), an OSError's
    system reason, and for anything else its type and a reference (its text and traceback go to the server log
    only)."""
    from PIL import Image

    if isinstance(exc, Image.DecompressionBombError):
        text = "the image has too many pixels to be read safely"
    elif getattr(exc, "reason", None) and getattr(exc, "detail", None) and getattr(exc, "path", None):
        # a reader's short reason for the page; the library's own wording (exception names, byte counts, tags)
        # goes to the server log only
        log.info("demo: %s", exc)
        text = f"{exc.path}: {exc.reason}"
        if any(word in exc.reason for word in ("truncated", "corrupt", "damaged")):
            text += "; the file is incomplete or damaged: copy or export it again"
    elif isinstance(exc, Image.UnidentifiedImageError):
        text = "not an image file this demo can read (PNG, JPEG, ...)"
    elif isinstance(exc, PocketAdaptError) and str(exc):  # the readers' and the demo's own errors, worded for users
        text = str(exc)
    elif isinstance(exc, OSError) and exc.strerror:  # the system's fixed words ("No space left on device"), no path
        text = exc.strerror
    else:  # any other error's text may quote the file's content (patient data): its type and a log reference only
        ref = log_reference(exc, "reading an upload")
        text = f"the file could not be processed ({type(exc).__name__}); see the server log, reference {ref}"
    text = _pixel_limit_text(text)
    if staged is not None:
        text = staged.neutralize(text)
        if staged.paths and not text.startswith(("upload", "the upload")):  # say which file, when the reader did not
            text = f"{upload_label(0) if len(staged.paths) == 1 else 'the upload'}: {text}"
    text = text.replace(tempfile.gettempdir(), "…")
    return " ".join(text.split())[:600]


# the readers' pixel-cap reason (model.tiling.load_image, remote_sensing.raster): "WxH = N pixels, above the limit of
# M (tiling.max_pixels); <what to do>"
_PIXEL_LIMIT = re.compile(r"(\d+)x(\d+) = [\d,]+ pixels, above the limit of ([\d,]+) \(tiling\.max_pixels\)[^.\n]*")


def _pixel_limit_text(text: str) -> str:
    """The pixel-cap reason in the demo's terms: the image's size, the limit, that no demo option changes it (the
    readers apply model.limits.DEFAULT_MAX_PIXELS; a recipe's tiling.max_pixels is for adapt train and eval),
    and a size that fits. "Raise the limit" is no advice to someone at the page."""
    m = _PIXEL_LIMIT.search(text)
    if not m:
        return text
    w, h, limit = int(m[1]), int(m[2]), int(m[3].replace(",", ""))
    scale = math.sqrt(limit / (w * h))
    fit = f"{max(1, math.floor(w * scale))} × {max(1, math.floor(h * scale))}"
    chips = " or cut it into chips (adapt convert remote_sensing scene_chips)" if "scene_chips" in m[0] else ""
    said = (f"the image is {w} × {h} = {w * h:,} pixels, above the demo's limit of {limit:,} pixels per image (fixed: "
            "no demo option changes it; tiling.max_pixels in a recipe sets it for adapt train and eval); "
            f"downscale it to {fit} or less{chips} and upload it again")
    return text[:m.start()] + said + text[m.end():]


def _path_of(item) -> str:
    # gradio hands file paths as str; older versions as objects with .name / .path
    if isinstance(item, (str, os.PathLike)):
        return os.fspath(item)
    for attr in ("path", "name"):
        value = getattr(item, attr, None)
        if isinstance(value, str):
            return value
    raise UploadError(f"unexpected upload value of type {type(item).__name__}")


def _gradio_cache() -> Path | None:
    try:
        from gradio.utils import get_upload_folder
    except ImportError:
        return None
    return _resolved(Path(get_upload_folder()))


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MB"
