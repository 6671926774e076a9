"""Readers silence a library's warning in a block (`model.quiet.ignoring`) that threads share: the demo reads
images in several at once. `warnings.catch_warnings` alone saves and restores the one process-wide filter list, so
a reader leaving its block while another was inside showed the other's warning and left an "ignore" filter behind
for good."""

from __future__ import annotations

import io
import os
import signal
import threading
import time
import warnings

import pytest
from PIL import Image

from tests.deps import require


def _two_readers_at_once(monkeypatch, owner, name: str, category: type[Warning], read) -> list[str]:
    """Run `read()` in two threads, the second entering while the first is inside `owner.name` (the library call
    its block silences, patched to warn `category` and call through); the first leaves its block while the second
    is in that call, if they can overlap. Returns the warnings of `category` that showed."""
    real = getattr(owner, name)
    first_inside, second_inside, first_done = threading.Event(), threading.Event(), threading.Event()

    def warning_call(*args, **kwargs):
        if not first_inside.is_set():
            first_inside.set()
            second_inside.wait(0.5)  # the second reader gets in meanwhile, unless it waits for this one's block
        else:
            second_inside.set()
            first_done.wait(0.5)
        warnings.warn(f"from {threading.current_thread().name}", category)
        return real(*args, **kwargs)

    def first() -> None:
        try:
            read()
        finally:
            first_done.set()

    monkeypatch.setattr(owner, name, warning_call)
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always", category)
        before = list(warnings.filters)
        threads = [threading.Thread(target=first, name="first"), threading.Thread(target=read, name="second")]
        threads[0].start()
        assert first_inside.wait(5)
        threads[1].start()
        for thread in threads:
            thread.join(10)
        assert warnings.filters == before, "a reader's ignore filter stayed behind"
    return [str(w.message) for w in shown if issubclass(w.category, category)]


def test_two_threads_opening_images_at_once_both_silence_pils_warning(tmp_path, monkeypatch):
    from model.tiling import _open_past_pil_limit

    path = tmp_path / "a.png"
    Image.new("RGB", (4, 4)).save(path)
    assert _two_readers_at_once(monkeypatch, Image, "open", Image.DecompressionBombWarning,
                                lambda: _open_past_pil_limit(path).close()) == []


def test_two_threads_opening_rasters_at_once_both_silence_the_crs_warning(tmp_path, monkeypatch):
    rasterio = require("rasterio")
    from rasterio.errors import NotGeoreferencedWarning

    from domains.remote_sensing.raster import open_raster

    path = tmp_path / "a.png"
    Image.new("RGB", (4, 4)).save(path)
    assert _two_readers_at_once(monkeypatch, rasterio, "open", NotGeoreferencedWarning,
                                lambda: open_raster(path).close()) == []


def test_two_threads_probing_dicom_files_at_once_both_silence_pydicoms_warnings(monkeypatch):
    require("pydicom")
    from domains.medical import dicom

    probe = io.BytesIO(b"\0" * 256)
    assert _two_readers_at_once(monkeypatch, dicom, "read_partial", UserWarning,
                                lambda: dicom._starts_like_dataset(io.BytesIO(probe.getvalue()))) == []


def test_the_block_is_reentrant_and_silences_only_its_category():
    from model.quiet import ignoring

    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        with ignoring(UserWarning), ignoring(FutureWarning, "quiet"):
            warnings.warn("a", UserWarning)
            warnings.warn("quiet please", FutureWarning)
            warnings.warn("loud", FutureWarning)
    assert [str(w.message) for w in shown] == ["loud"]
    with pytest.raises(RuntimeError), ignoring():
        raise RuntimeError("the lock is released")

    def enter() -> None:
        with ignoring():
            pass

    other = threading.Thread(target=enter)
    other.start()
    other.join(5)
    assert not other.is_alive()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork")
def test_a_process_forked_while_another_thread_silences_a_warning_can_silence_its_own():
    """A DataLoader worker forked while a thread of its parent read an image inherited the lock held, by a thread it
    does not have: its first read would wait for ever."""
    from model.quiet import ignoring

    inside, leave = threading.Event(), threading.Event()

    def hold() -> None:
        with ignoring():
            inside.set()
            leave.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert inside.wait(5)
        pid = os.fork()
        if pid == 0:  # the child: enter and leave a block, or hang
            try:
                with ignoring(UserWarning):
                    warnings.warn("child", UserWarning)
            finally:
                os._exit(0)
        deadline = time.monotonic() + 5
        while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        if done[0] == 0:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        assert done[0] == pid and os.waitstatus_to_exitcode(done[1]) == 0, "the forked child hung on the lock"
    finally:
        leave.set()
        holder.join(5)
