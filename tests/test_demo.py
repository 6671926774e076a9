"""The demo (deploy/demo) without a browser: model session, uploads, hooks, panels, launch settings, CLI.

Uses the shipped pocket-tiny model (answers are nonsense but real) and small files written here: PNGs, a
GeoTIFF, and CT DICOM files with fake PHI written with pydicom.
"""

from __future__ import annotations

import itertools
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.deps import require

gradio = require("gradio")

from deploy.demo import app as demo_app
from deploy.demo.hooks import default_draw_answer, hooks_for, normalize_upload
from deploy.demo.page import escape_md, info_md
from deploy.demo.session import ModelSession, compose_question
from deploy.demo.uploads import UploadError, readable_error, stage_uploads
from domains.base import DomainError

PHI_NAME = "DOE^JANE"
PHI_ID = "PHI-998877"
PHI_STRINGS = ("DOE", "JANE", PHI_ID, "19700101", "St Elsewhere")
MB = 2**20


# --------------------------------------------------------------------------------------------- helpers
def new_dicom(sop_class: str):
    """An empty DICOM file's dataset of `sop_class` (explicit VR little endian), its SOP instance UID new."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    return ds


def write_ct(path: Path, *, z: float = 0.0, instance: int = 1, series_uid: str | None = None, size: int = 32,
             frames: int = 1, burned_in: bool = True, hu_shift: float = 0.0) -> Path:
    """A small CT Image Storage file with fake PHI: a -1000..1000 HU ramp (left to right), WC/WW 40/400."""
    from pydicom.uid import CTImageStorage, generate_uid

    ds = new_dicom(CTImageStorage)
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.8.498.2"
    ds.Modality, ds.BodyPartExamined = "CT", "CHEST"
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = PHI_NAME, PHI_ID, "19700101"
    ds.InstitutionName = "St Elsewhere"
    ds.InstanceNumber = instance
    ds.ImagePositionPatient = [0, 0, z]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [0.7, 0.7]
    ds.SliceThickness = 1
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    ds.WindowCenter, ds.WindowWidth = 40, 400
    ds.BurnedInAnnotation = "YES" if burned_in else "NO"
    hu = np.tile(np.linspace(-1000, 1000, size), (size, 1)) + hu_shift
    stored = np.clip(np.rint(hu + 1024), 0, 4095).astype(np.uint16)
    if frames > 1:
        stored = np.stack([np.roll(stored, 3 * k, axis=1) for k in range(frames)])
        ds.NumberOfFrames = frames
    ds.set_pixel_data(stored, "MONOCHROME2", 12, generate_instance_uid=False)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_series_zip(path: Path, tmp: Path, n: int = 4) -> Path:
    from pydicom.uid import generate_uid

    uid = generate_uid()
    folder = tmp / "series_src"
    folder.mkdir(exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for k in reversed(range(n)):  # archive order is not slice order
            f = write_ct(folder / f"IM{k:04d}.dcm", z=2.5 * k, instance=k + 1, series_uid=uid, hu_shift=50 * k)
            zf.write(f, f"DOE_JANE/CT/IM{k:04d}.dcm")
    return path


def png(path: Path, colour=(200, 30, 30), size=(48, 40)) -> Path:
    Image.new("RGB", size, colour).save(path)
    return path


def all_text(value) -> str:
    """Every string reachable in a handler's outputs (markdown, component updates, labels)."""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return "\n".join(all_text(v) for v in value)
    if isinstance(value, dict):
        return "\n".join(all_text(k) + "\n" + all_text(v) for k, v in value.items())
    parts = []
    for attr in ("value", "label", "info", "choices"):
        v = getattr(value, attr, None)
        if v is not None and not callable(v):
            parts.append(all_text(v))
    return "\n".join(parts)


def assert_no_phi(text: str) -> None:
    for s in PHI_STRINGS:
        assert s not in text, f"PHI {s!r} leaked into the page: {text[:300]!r}"


def handler(blocks, name: str):
    fns = [f.fn for f in blocks.fns.values() if getattr(f.fn, "__name__", "") == name]
    assert fns, f"no handler {name}"
    return fns[0]


@pytest.fixture(scope="module")
def session() -> ModelSession:
    return ModelSession("pocket-tiny", max_new_tokens=6)


@pytest.fixture
def gradio_cache(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "gradio-cache"
    cache.mkdir()
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(cache))
    return cache


# --------------------------------------------------------------------------------------------- session
def test_compose_question_places_images():
    assert compose_question("What is shown?", 1) == "What is shown?"  # the processor prepends <image>
    assert compose_question("Compare <image> and <image>", 2, "x: <image>\ny: <image>\n") == "Compare <image> and <image>"
    assert compose_question("Which?", 2, "slice 1/4: <image>\nslice 3/4: <image>\n") == \
        "slice 1/4: <image>\nslice 3/4: <image>\nWhich?"
    with pytest.raises(ValueError, match="placeholders"):
        compose_question("Which?", 2, "only one <image>")


def test_a_question_past_the_context_says_so_on_the_page(session):
    """The demo ran such a prompt on, past the positions the model was built for (answers of noise or nothing)."""
    from deploy.demo.hooks import default_draw_answer
    from deploy.demo.panels.generic import answer_stream

    steps = list(answer_stream(session, default_draw_answer, "red blue square circle " * 1500, None))
    assert steps[-1][0] == "" and "Could not ask" in steps[-1][2]
    assert "more than the model's context of 4096" in steps[-1][2]


def test_stream_matches_plain_generation_and_ends_at_stop_tokens(session):
    import torch

    image = Image.new("RGB", (64, 48), (20, 160, 40))
    pieces = list(session.stream("What colour is it?", [image], max_new_tokens=12, stop_repetition=False))
    assert pieces and all(b.startswith(a) for a, b in itertools.pairwise(pieces))  # the text only grows
    proc, vlm = session.processor, session.vlm
    enc = proc([{"role": "user", "content": "What colour is it?"}], images=[image])
    with torch.inference_mode():
        ids = vlm.generate(**enc.to_model_inputs(), max_new_tokens=12, do_sample=False,
                           eos_token_id=proc.stop_token_ids, pad_token_id=proc.pad_token_id)[0].tolist()
    stops = set(proc.stop_token_ids)
    ids = ids[:next((k for k, i in enumerate(ids) if i in stops), len(ids))]
    assert pieces[-1] == proc.tokenizer.decode(ids, skip_special_tokens=True)
    assert session.answer("What colour is it?", [image], max_new_tokens=12, stop_repetition=False) == pieces[-1]
    assert not pieces[-1].repeated


def test_a_looping_answer_is_cut_and_flagged(session, monkeypatch):
    """pocket-tiny untrained for this question loops ("squaresquaresquare…"): the shared RepetitionStop ends
    it after a few repeats instead of at max_new_tokens, and the answer says it was cut."""
    from model.generation import repetition_at_end

    generate = session.vlm.generate
    monkeypatch.setattr(session.vlm, "generate",  # never stop at an end token: only the repetition rule can
                        lambda *a, **kw: generate(*a, **kw, min_new_tokens=kw["max_new_tokens"]))
    image = Image.new("RGB", (64, 64), (20, 20, 20))
    full = session.answer("What is shown?", [image], max_new_tokens=60, stop_repetition=False)
    cut = session.answer("What is shown?", [image], max_new_tokens=60)
    assert cut.repeated and not full.repeated and full.startswith(cut) and len(cut) < len(full)
    ids = session.processor.tokenizer(cut, add_special_tokens=False).input_ids
    assert repetition_at_end(ids) is not None  # it ends in the loop that stopped it
    assert len(ids) <= 24, cut


def test_stream_rejects_an_empty_question_and_wrong_placeholders(session):
    with pytest.raises(ValueError, match="question"):
        list(session.stream("   ", []))
    with pytest.raises(ValueError, match="placeholders"):
        list(session.stream("<image> and <image>?", [Image.new("RGB", (32, 32))]))


def test_a_consumer_that_stops_reading_stops_the_generation(session, monkeypatch):
    lengths = []
    generate = session.vlm.generate

    def counted(*args, **kwargs):
        # never stop at an end token, whatever the weights say: read to the end, an answer has 60 tokens
        out = generate(*args, **kwargs, min_new_tokens=kwargs["max_new_tokens"])
        lengths.append(out.shape[-1])
        return out

    monkeypatch.setattr(session.vlm, "generate", counted)
    image = Image.new("RGB", (32, 32))
    full = session.answer("Describe it in detail.", [image], max_new_tokens=60, stop_repetition=False)
    assert lengths == [60] and full
    stream = session.stream("Describe it in detail.", [image], max_new_tokens=60, stop_repetition=False)
    first = next(stream)
    assert full.startswith(first) and len(first) < len(full)  # text arrives token by token
    stream.close()  # the page was closed: the worker stops early and the lock is free again
    assert lengths[1] < 60
    assert session._lock.acquire(timeout=1)
    session._lock.release()


# --------------------------------------------------------------------------------------------- uploads
def test_uploads_are_staged_under_neutral_names_and_the_cached_original_renamed(tmp_path, gradio_cache):
    from deploy.demo.uploads import runtime_root

    mine = png(tmp_path / "DOE_JANE 1970-01-01.PNG")
    cached_dir = gradio_cache / "abc123"
    cached_dir.mkdir()
    cached = png(cached_dir / "DOE_JANE scan.png")
    weird = tmp_path / "DOE_JANE.<script>"
    weird.write_bytes(b"x")
    staged = stage_uploads([mine, cached, weird], max_bytes=MB)
    try:
        assert [p.name for p in staged.paths] == ["upload-1.png", "upload-2.png", "upload-3"]
        assert oct(staged.root.stat().st_mode & 0o777) == "0o700" and staged.root.parent == runtime_root()
        assert oct(runtime_root().stat().st_mode & 0o777) == "0o700"
        assert mine.exists(), "a file outside Gradio's cache is never touched"
        assert not cached.exists(), "Gradio's copy under the original name is gone"
        assert not any("DOE" in p.name for p in gradio_cache.rglob("*")), "no name in the cache carries PHI"
        msg = readable_error(DomainError(f"{staged.paths[1]}: not a DICOM file"), staged)  # a reader's own error
        assert msg == "upload 2: not a DICOM file"
    finally:
        staged.cleanup()
    assert not staged.root.exists()
    # a domain keeps one safe word of the original name (driving: the camera); anything else is dropped
    tags = {"a.png": "CAM_FRONT", "b.png": "DOE JANE", "c.png": "../x", "d.png": "x" * 40, "e.png": None}
    files = [png(tmp_path / name) for name in tags]
    staged = stage_uploads(files, max_bytes=MB, name_tag=lambda name: tags[name])
    try:
        assert [p.name for p in staged.paths] == ["upload-1.CAM_FRONT.png", "upload-2.png", "upload-3.png",
                                                  "upload-4.png", "upload-5.png"]
        assert staged.tags == ["CAM_FRONT", None, None, None, None]
    finally:
        staged.cleanup()


def test_a_closed_page_frees_its_uploads_and_their_cached_copies(tmp_path, gradio_cache):
    """A closed tab's staged copies (the DICOM with its header) stayed until Gradio dropped the session's state an
    hour later, or the server stopped; the neutral copies in Gradio's cache until a later upload pruned them. The
    page's unload event frees both for that session, and only for it."""
    from deploy.demo.uploads import close_session

    def cached(name: str) -> Path:
        folder = gradio_cache / name
        folder.mkdir()
        return png(folder / "DOE_JANE.png", size=(48 + len(name), 40))

    mine = stage_uploads([cached("h1")], max_bytes=MB, session="tab-1")
    again = stage_uploads([cached("h2")], max_bytes=MB, session="tab-1")
    other = stage_uploads([cached("h3")], max_bytes=MB, session="tab-2")
    leftovers = lambda name: list((gradio_cache / name).glob(".pocket-adapt-staged-*"))  # noqa: E731
    assert leftovers("h1") and leftovers("h3")
    assert close_session("tab-1") == 2
    assert not mine.root.exists() and not again.root.exists() and not leftovers("h1") and not leftovers("h2")
    assert other.root.exists() and leftovers("h3"), "another tab's upload is left alone"
    assert close_session("tab-1") == 0
    other.cleanup()  # also leaves its session's list, and a second cleanup is harmless
    other.cleanup()
    assert close_session("tab-2") == 0 and not leftovers("h3")


def test_identical_files_uploaded_at_once_all_stage(tmp_path, gradio_cache):
    """Gradio caches identical files under one path (<content hash>/<name>): twenty requests for the same
    file must each get their own private copy, even after the first renamed the cached file away."""
    from concurrent.futures import ThreadPoolExecutor

    cached_dir = gradio_cache / ("0f" * 32)  # Gradio names the folder by the content hash
    cached_dir.mkdir()
    cached = png(cached_dir / "DOE_JANE.png", colour=(1, 2, 3))
    content = cached.read_bytes()

    def one(_):
        staged = stage_uploads([str(cached)], max_bytes=MB)
        try:
            return staged.root, staged.paths[0].read_bytes()
        finally:
            staged.cleanup()

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(20)))
    assert len({root for root, _ in results}) == 20, "one private folder per request"
    assert all(data == content for _, data in results)
    assert not cached.exists() and not any("DOE" in p.name for p in gradio_cache.rglob("*"))
    # later requests for that path still work; another file's missing path does not borrow this content
    assert one(0)[1] == content
    with pytest.raises(UploadError, match="upload 1: not a regular file"):
        stage_uploads([str(cached_dir / "other.png")], max_bytes=MB)


def test_sweep_removes_only_folders_of_ended_demos(tmp_path):
    """A folder is judged by its owner's pid only where the owner file carries this machine, boot and container's
    tag (domains.files.writer_state): one of another container sharing /tmp, or an untagged one of an earlier
    version, was removed because no process of that pid ran here; it is now kept until `stale_after`."""
    import subprocess
    import sys
    import time

    from deploy.demo.uploads import OWNER_FILE, RUNTIME_PREFIX, _start_token, sweep_stale
    from domains.files import HOST_TAG

    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(done.stdout)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        def folder(name, owner=None, age=0.0):
            path = tmp_path / f"{RUNTIME_PREFIX}{name}"
            (path / "upload-x").mkdir(parents=True)
            (path / "upload-x" / "upload-1.dcm").write_bytes(b"PHI")
            if owner is not None:
                (path / OWNER_FILE).write_text(owner)
            if age:
                os.utime(path, (time.time() - age, time.time() - age))
            return path

        dead = folder("dead", f"{dead_pid}@{HOST_TAG} 1")
        live = folder("live", f"{sleeper.pid}@{HOST_TAG} {_start_token(sleeper.pid)}")
        live_old = folder("live-old", f"{sleeper.pid}@{HOST_TAG} {_start_token(sleeper.pid)}", age=10 * 86400)
        reused = folder("reused", f"{sleeper.pid}@{HOST_TAG} 12345")  # that pid now belongs to a later process
        unknown_old = folder("unknown-old", age=2 * 86400)
        unknown_new = folder("unknown-new")
        container = folder("container", f"{dead_pid}@{'0' if HOST_TAG[0] != '0' else '1'}{HOST_TAG[1:]} 1")
        untagged = folder("untagged", f"{dead_pid} 1")  # an earlier version's owner file
        untagged_old = folder("untagged-old", f"{dead_pid} 1", age=2 * 86400)
        other = tmp_path / "not-ours"
        other.mkdir()
        removed = sweep_stale(tmp_path)
        assert sorted(p.name for p in removed) == sorted(p.name for p in (dead, reused, unknown_old, untagged_old))
        assert live.exists() and live_old.exists() and unknown_new.exists() and other.exists()
        assert not dead.exists() and not reused.exists() and not unknown_old.exists()
        assert container.exists() and untagged.exists()  # their pids mean nothing here: kept for `stale_after`
    finally:
        sleeper.kill()
        sleeper.wait()


def test_an_idle_live_demo_of_another_container_keeps_its_folder(tmp_path):
    """A folder whose owner cannot be checked (another container sharing /tmp) was swept once the folder itself had
    not changed for a day: a live demo that got no upload for a day lost its folder (and its Gradio cache). The
    live demo's heartbeat now counts as a change; a folder whose heartbeat stopped a day ago (a killed demo's) is
    still removed, with what it held."""
    import time

    from deploy.demo.uploads import HEARTBEAT_FILE, OWNER_FILE, RUNTIME_PREFIX, STALE_AFTER_S, sweep_stale
    from domains.files import HOST_TAG

    elsewhere = f"{os.getpid()}@{'0' if HOST_TAG[0] != '0' else '1'}{HOST_TAG[1:]} 1"

    def folder(name: str, beat_age: float) -> Path:
        path = tmp_path / f"{RUNTIME_PREFIX}{name}"
        (path / "upload-x").mkdir(parents=True)
        (path / "upload-x" / "upload-1.dcm").write_bytes(b"PHI")
        (path / OWNER_FILE).write_text(elsewhere)
        (path / HEARTBEAT_FILE).touch()
        then = time.time() - beat_age
        os.utime(path / HEARTBEAT_FILE, (then, then))
        old = time.time() - 2 * STALE_AFTER_S  # no upload for two days
        os.utime(path, (old, old))
        return path

    idle = folder("idle", beat_age=60)
    killed = folder("killed", beat_age=STALE_AFTER_S + 60)
    assert sweep_stale(tmp_path) == [killed]
    assert idle.exists() and not killed.exists()
    assert sweep_stale(tmp_path, now=time.time() + STALE_AFTER_S + 120) == [idle]  # once its beat has stopped a day


def test_a_live_demo_touches_its_heartbeat_file(tmp_path, monkeypatch):
    """The runtime folder's heartbeat file is touched every HEARTBEAT_S while the folder is the process's own, and
    the beating stops once it is not."""
    import tempfile
    import threading
    import time

    from deploy.demo import uploads

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(uploads, "_ROOT", None)
    monkeypatch.setattr(uploads, "HEARTBEAT_S", 0.02)
    before = set(threading.enumerate())
    root = uploads.runtime_root()
    threads = [t for t in set(threading.enumerate()) - before if t.name == "pocket-adapt-demo-heartbeat"]
    assert len(threads) == 1
    beat = root / uploads.HEARTBEAT_FILE
    os.utime(beat, (0, 0))
    deadline = time.time() + 10
    while beat.stat().st_mtime < time.time() - 60 and time.time() < deadline:
        time.sleep(0.02)
    assert beat.stat().st_mtime > time.time() - 60, "the heartbeat file was not touched"
    monkeypatch.setattr(uploads, "_ROOT", (os.getpid(), tmp_path / "another"))  # no longer this process's folder
    threads[0].join(timeout=5)
    assert not threads[0].is_alive()
    with uploads._LIVE_LOCK:
        uploads._LIVE.discard(root)


def test_upload_size_limit_and_missing_files(tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(b"\0" * (2 * MB))
    with pytest.raises(UploadError, match="above the 1.0 MB limit"):
        stage_uploads([big], max_bytes=MB)
    with pytest.raises(UploadError, match="no file"):
        stage_uploads([], max_bytes=MB)
    with pytest.raises(UploadError, match="upload 1: not a regular file"):
        stage_uploads([tmp_path / "missing.png"], max_bytes=MB)


def test_unexpected_errors_read_as_one_line_without_a_trace():
    msg = readable_error(RuntimeError("boom\nTraceback (most recent call last): ..."))
    assert "RuntimeError" in msg and "Traceback" not in msg and "\n" not in msg


# --------------------------------------------------------------------------------------------- hooks / generic panel
def test_default_hooks_read_images_and_draw_answer_boxes(tmp_path):
    from deploy.demo.panels.generic import read_files

    read, draw = hooks_for(None)
    result = read_files([png(tmp_path / "a.png"), png(tmp_path / "b.jpg", (0, 0, 255))], read, max_bytes=MB)
    assert [im.size for im in result.images] == [(48, 40), (48, 40)] and result.labels == ["upload 1", "upload 2"]
    assert result.info == {"image 1": "48 × 40 px", "image 2": "48 × 40 px"} and result.prompt is None
    drawn = draw(result.images, "<ref>spot</ref><box>[[0, 0, 500, 500]]</box>")
    assert drawn[0].getpixel((0, 10)) != result.images[0].getpixel((0, 10))  # box edge drawn
    assert drawn[0].getpixel((40, 35)) == result.images[0].getpixel((40, 35))  # outside the box unchanged


def test_a_box_under_a_pixel_is_drawn_and_the_answers_other_boxes_too():
    """A grid box narrower than a pixel ([500, 500, 501, 501] on a 512 px slice) made PIL raise, and the page drew
    none of the answer's boxes ("its boxes could not be drawn: ValueError")."""
    image = Image.new("RGB", (512, 512))
    drawn = default_draw_answer([image], "<ref>nodule</ref><box>[[500, 500, 501, 501]]</box>"
                                         "<ref>liver</ref><box>[[100, 100, 300, 300]]</box>")[0]
    assert drawn.getpixel((256, 256)) != (0, 0, 0), "the tiny box is marked"
    assert drawn.getpixel((52, 100)) != (0, 0, 0), "the other box is drawn"
    tall = default_draw_answer([Image.new("RGB", (1600, 900))], "<box>[[0, 0, 99999999999, 1]]</box>")[0]
    assert tall.getpixel((800, 0)) != (0, 0, 0)


@pytest.mark.parametrize("content, expected", [
    (b"this is not an image", "not an image file"),
    (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "not an image file|damaged"),
    (b"", "^upload 1: empty file$"),  # read "not an image file", while the medical page said "empty file"
])
def test_a_bad_image_gives_a_readable_message(tmp_path, content, expected):
    from deploy.demo.panels.generic import read_files

    bad = tmp_path / "DOE_JANE.png"
    bad.write_bytes(content)
    with pytest.raises(UploadError, match=expected) as err:
        read_files([bad], hooks_for(None)[0], max_bytes=MB)
    assert "DOE" not in str(err.value) and "Traceback" not in str(err.value)
    assert str(err.value).startswith("upload 1: ") and "upload-1" not in str(err.value)  # the page's name for it


def test_a_reader_error_names_the_upload_by_its_page_label(tmp_path):
    """Readers quote the staged name ("upload-2.png"); the page calls the file "upload 2" everywhere, and a
    message that already says "the upload" is not prefixed with it again."""
    from deploy.demo.panels.generic import read_files

    files = [png(tmp_path / f"DOE_{k}.png") for k in range(10)]
    (tmp_path / "DOE_1.png").write_bytes(b"garbage")
    with pytest.raises(UploadError) as err:
        read_files(files, hooks_for(None)[0], max_bytes=MB)
    assert str(err.value).startswith("upload 2: not an image file"), str(err.value)
    staged = stage_uploads(files, max_bytes=MB, remove_originals=False)
    try:
        assert staged.neutralize("upload-10.png and upload-1.png") == "upload 10 and upload 1"
        assert readable_error(UploadError("the upload gives 17 images"), staged) == "the upload gives 17 images"
    finally:
        staged.cleanup()


def test_normalize_upload_checks_the_hook_contract():
    img = Image.new("L", (8, 8))
    ok = normalize_upload({"images": [img], "labels": None, "prompt": None, "info": {"a": 1}, "warnings": ["w"]}, 1)
    assert ok.images[0].mode == "RGB" and ok.labels == ["upload 1"] and ok.info == {"a": "1"}
    with pytest.raises(ValueError, match="no image"):
        normalize_upload({"images": []}, 1)
    with pytest.raises(TypeError, match="placeholders"):
        normalize_upload({"images": [img, img], "prompt": "a <image>"}, 2)
    with pytest.raises(TypeError, match="labels"):
        normalize_upload({"images": [img], "labels": ["a", "b"]}, 1)
    # a string was taken one character at a time: "ab" labelled two images "a" and "b", a warning became letters
    with pytest.raises(TypeError, match=r"read_upload hook returned labels as a str; it must be a list"):
        normalize_upload({"images": [img, img], "labels": "ab"}, 2)
    with pytest.raises(TypeError, match=r"read_upload hook returned warnings as a str"):
        normalize_upload({"images": [img], "warnings": "slice spacing uneven"}, 1)
    assert normalize_upload({"images": [img, img], "labels": ("a", "b"), "warnings": ()}, 2).labels == ["a", "b"]


def test_an_uploaded_16_bit_image_is_stretched_as_the_tiling_reads_it_not_clipped():
    """A plugin's 16-bit image was converted with a plain convert("RGB"): every sample above 255 came out white, and
    the model was asked about that white picture, not the one the tiling and load_image see."""
    import numpy as np

    from model.tiling import as_rgb

    wide = Image.fromarray(np.arange(64 * 16, dtype=np.uint16).reshape(16, 64) * 4, mode="I;16")
    shown = normalize_upload({"images": [wide]}, 1).images[0]
    assert np.array_equal(np.asarray(shown), np.asarray(as_rgb(wide)))
    assert np.asarray(shown).min() == 0 and (np.asarray(shown) == 255).mean() < 0.05  # not white from 255 up


def write_geotiff(path: Path, bands: int = 3, descriptions=None) -> Path:
    rasterio = require("rasterio")
    from rasterio.transform import from_origin

    data = np.stack([(np.arange(40 * 60, dtype=np.uint16).reshape(40, 60) * (b + 1)) % 4000 + 1
                     for b in range(bands)])
    data[:, :10, :] = 0  # nodata band on top
    with rasterio.open(path, "w", driver="GTiff", width=60, height=40, count=bands, dtype="uint16",
                       crs="EPSG:32633", transform=from_origin(500000, 4000000, 10, 10), nodata=0) as dst:
        dst.write(data)
        if descriptions:
            dst.descriptions = tuple(descriptions)
    return path


def test_remote_sensing_hooks_follow_the_demo_contract(tmp_path):
    from domains.base import get_domain
    from domains.remote_sensing.demo import STRETCHES

    path = write_geotiff(tmp_path / "scene.tif")
    plugin = get_domain("remote_sensing")
    read, draw = hooks_for(plugin)
    result = normalize_upload(read([path]), 1)
    assert result.images[0].size == (60, 40)
    assert result.info == {"image 1": "60 × 40 px, 3 bands (uint16)", "image 1 bands": "1, 2, 3 as red, green, blue",
                           "image 1 stretch": "2–98 percentiles per band over valid pixels, to 0–255"}
    assert result.warnings == ["image 1: 25% of the pixels are nodata or masked (drawn black)"]
    drawn = draw(result.images, "<ref>field</ref><box>[[0, 500, 500, 1000]]</box>")
    assert len(drawn) == 1 and drawn[0].getpixel((0, 30)) != result.images[0].getpixel((0, 30))
    # the page's band and stretch controls reach the reader, and the info says what was used
    from deploy.demo.hooks import options_for

    specs = options_for(plugin)
    assert set(specs) == {"bands", "stretch"} and specs["bands"]["custom"] and set(specs["stretch"]["choices"]) == set(STRETCHES)
    grey = normalize_upload(read([path], bands="2", stretch="none (values as stored, for 8-bit RGB)"), 1)
    assert grey.info["image 1 bands"] == "2 as grey" and grey.info["image 1 stretch"].startswith("none")
    px = grey.images[0].getpixel((5, 20))
    assert px[0] == px[1] == px[2]
    named = write_geotiff(tmp_path / "s2.tif", bands=4, descriptions=["B02", "B03", "B04", "B08"])
    out = normalize_upload(read([named], bands="B08, B04, B03", stretch="min–max per band"), 1)
    assert out.info["image 1 bands"] == "4, 3, 2 (B08, B04, B03) as red, green, blue"
    assert out.info["image 1 stretch"].startswith("0–100 percentiles")
    assert normalize_upload(read([named]), 1).info["image 1 bands"] == "3, 2, 1 (B04, B03, B02) as red, green, blue"
    with pytest.raises(ValueError, match="one band .* or three"):
        read([path], bands="1,2")
    with pytest.raises(ValueError, match="band index 7 out of range"):
        read([path], bands="7,2,1")
    # page words, not library ones: a name on a file without band names, a number that is no index
    with pytest.raises(ValueError) as err:
        read([path], bands="B04,B03,B02")
    assert "does not name its bands, so choose them by number: 1-based indexes 1..3, e.g. 1,2,3" in str(err.value)
    assert "band_names" not in str(err.value)
    for bad in ("-1", "1.5", "4,3,+2"):
        with pytest.raises(ValueError, match="is not a band index; indexes are whole numbers from 1"):
            read([path], bands=bad)


def test_remote_sensing_reader_shows_what_training_saw_and_takes_chat_style_options(tmp_path):
    """Default stretch = the converters' auto: an 8-bit tile as stored. Chat's --read-option values (a list of
    percentiles, auto, none) are read; a wrong one is a clear error. A JPEG goes through the one image reader
    (EXIF orientation applied), as in training."""
    import rasterio

    from domains.base import get_domain
    from domains.remote_sensing.convert import _load_rgb

    read, _ = hooks_for(get_domain("remote_sensing"))
    rgb8 = np.random.default_rng(0).integers(60, 140, (3, 20, 24)).astype(np.uint8)
    tile = tmp_path / "tile.tif"
    with rasterio.open(tile, "w", driver="GTiff", width=24, height=20, count=3, dtype="uint8") as dst:
        dst.write(rgb8)
    shown = normalize_upload(read([tile]), 1)
    assert np.array_equal(np.asarray(shown.images[0]), np.asarray(_load_rgb(tile)))
    assert np.array_equal(np.asarray(shown.images[0]), rgb8.transpose(1, 2, 0))
    assert shown.info["image 1 stretch"].startswith("none")
    wide = normalize_upload(read([tile], stretch=[1, 99]), 1)
    assert wide.info["image 1 stretch"].startswith("1–99 percentiles")
    assert normalize_upload(read([tile], stretch="none"), 1).info["image 1 stretch"].startswith("none")
    for bad in ([99, 1], "sideways", [1, 2, 3]):
        with pytest.raises(ValueError, match="stretch"):
            read([tile], stretch=bad)
    exif = Image.Exif()
    exif[0x0112] = 6
    photo = tmp_path / "photo.jpg"
    Image.new("RGB", (30, 10), "red").save(photo, exif=exif.tobytes())
    assert normalize_upload(read([photo]), 1).images[0].size == (10, 30)


@pytest.mark.parametrize("keep, expected", [
    (0.5, "the raster's pixel data is incomplete or damaged; the file looks cut short"),
    (0.002, "cannot be read as a raster: the file is damaged, cut short"),
])
def test_a_truncated_geotiff_is_reported_in_words(tmp_path, gradio_cache, keep, expected):
    from deploy.demo.panels.generic import read_files
    from domains.base import get_domain

    whole = write_geotiff(tmp_path / "whole.tif").read_bytes()
    cut = tmp_path / "DOE_site.tif"
    cut.write_bytes(whole[:max(64, int(len(whole) * keep))])
    with pytest.raises(UploadError) as err:
        read_files([cut], hooks_for(get_domain("remote_sensing"))[0], max_bytes=MB)
    msg = str(err.value)
    assert msg.startswith("upload 1: ") and expected in msg
    for raw in ("TIFFRead", "IReadBlock", "failed", "DOE", str(tmp_path)):
        assert raw not in msg, msg


def test_generic_answer_stream_names_what_failed(session, tmp_path):
    from deploy.demo.panels.generic import answer_stream, read_files
    from deploy.demo.session import Answer

    class Scripted:  # the tiny model never writes boxes: script one answer to check the drawing path
        def stream(self, question, images, prompt=None):
            yield "<ref>spot</ref>"
            yield Answer("<ref>spot</ref><box>[[0, 0, 500, 500]]</box>", repeated=True)

    upload = read_files([png(tmp_path / "a.png")], hooks_for(None)[0], max_bytes=MB)
    steps = list(answer_stream(Scripted(), default_draw_answer, "Where?", upload))
    assert [s[1] for s in steps[:-1]] == [None, None]
    assert steps[-1][1][0].getpixel((0, 5)) != upload.images[0].getpixel((0, 5))
    assert "repeating itself" in steps[-1][2]  # the cut is said, not an error
    real = list(answer_stream(session, default_draw_answer, "What is it?", upload))
    assert real[-1][0] and real[-1][1][0].size == (48, 40)
    *_, (_text, drawn, note) = answer_stream(session, default_draw_answer, "", upload)
    assert note == "**Could not ask:** type a question first" and drawn is None

    def broken_draw(images, answer):
        raise RuntimeError("no pen")

    *_, (text, drawn, note) = answer_stream(Scripted(), broken_draw, "Where?", upload)
    assert text.endswith("</box>") and drawn == upload.images
    assert note.startswith("**The answer is shown, but its marks could not be drawn:**") and "Could not answer" not in note
    assert "no pen" not in note and "RuntimeError" in note and "reference" in note, note  # text: server log only


def test_generic_page_handlers(session, tmp_path, gradio_cache):
    blocks = demo_app.build_demo(session, "general", max_upload_mb=1)
    on_upload, on_ask = handler(blocks, "on_upload"), handler(blocks, "on_ask")
    *_, (text, images, notice, *_) = on_ask("What is it?", None)  # nothing uploaded: said, not hidden
    assert text and "no image was uploaded: the answer comes from the question alone" in notice
    state, status, gallery, info, warnings, *_ = on_upload(None, [str(png(tmp_path / "DOE_JANE.png"))], None)
    assert "upload 1" in status and state.result.images[0].size == (48, 40) and "48 × 40 px" in info
    assert_no_phi(all_text([status, gallery, info, warnings]))
    *_, (text, images, notice, *_) = on_ask("What is it?", state)
    assert text and images["value"][0][1] == "upload 1"
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"garbage")
    old_root = state.staged.root
    state, status, *_ = on_upload(None, [str(bad)], state)
    assert state is None and "Could not read the upload" in status and "not an image file" in status
    assert not old_root.exists(), "a new upload frees the previous one"


def test_domain_pages_say_what_to_upload_and_refuse_to_ask_without_one(session):
    from domains.driving.demo import UPLOAD_HELP as DRIVING_HELP
    from domains.remote_sensing.demo import UPLOAD_HELP as RS_HELP

    for domain, help_text in (("driving", DRIVING_HELP), ("remote_sensing", RS_HELP)):
        blocks = demo_app.build_demo(session, domain)
        text = page_text(blocks)
        assert escape_md(help_text) in text
        assert "Not for diagnosis" not in text, "the medical disclaimer belongs to the medical page only"
        assert "answers come from a small model" in text
        *_, (answer, _gallery, notice, *_) = handler(blocks, "on_ask")("What is ahead?", None, *option_defaults(domain))
        assert answer == "" and "No upload yet" in notice and "nothing was sent to the model" in notice
    medical = page_text(demo_app.build_demo(session, "medical"))
    assert "Not for diagnosis" in medical and "What to upload" in medical


def page_text(blocks) -> str:
    return "\n".join(str(getattr(b, "value", "") or "") + "\n" + str(getattr(b, "label", "") or "")
                     for b in blocks.blocks.values())


def option_defaults(domain):
    from deploy.demo.hooks import options_for
    from domains.base import get_domain

    return [spec["default"] for spec in options_for(get_domain(domain)).values()]


def nuscenes_frames(folder: Path, size=(160, 90)) -> list[Path]:
    """Six frames named as nuScenes names them, each camera a colour of its own; sorted as a file picker
    lists them (alphabetically: CAM_BACK first), not in the stitched order."""
    from domains.driving.layout import STITCH_ORDER

    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for k, cam in enumerate(STITCH_ORDER):
        files.append(folder / f"n008-2018-08-01-15-16-36-0400__{cam}__15331516035474{k:02d}.jpg")
        Image.new("RGB", size, CAMERA_COLOURS[cam]).save(files[-1], quality=95)
    return sorted(files)


CAMERA_COLOURS = {"CAM_FRONT_LEFT": (230, 30, 30), "CAM_FRONT": (30, 200, 30), "CAM_FRONT_RIGHT": (30, 30, 230),
                  "CAM_BACK_LEFT": (230, 230, 30), "CAM_BACK": (30, 230, 230), "CAM_BACK_RIGHT": (230, 30, 230)}


def assert_cells(image: Image.Image) -> None:
    """Each camera's colour in its own cell of the stitched image."""
    from domains.driving import layout

    for cam, colour in CAMERA_COLOURS.items():
        col, row = layout.cell_of(cam)
        x, y = int((col + 0.5) * image.width / 3), int((row + 0.75) * image.height / 2)
        assert all(abs(a - b) <= 8 for a, b in zip(image.getpixel((x, y)), colour)), cam


def test_driving_page_cameras_come_from_the_original_names_and_the_view_is_reread(session, tmp_path, gradio_cache,
                                                                                  monkeypatch):
    """The driving panel: nuScenes frames picked alphabetically land in their cameras' cells (the camera of
    each original name is kept through the neutral staging); switching the view re-reads the upload, so the
    model gets the layout shown; c-tags of an answer are drawn back on the named camera."""
    from deploy.demo.hooks import options_for
    from deploy.demo.panels.generic import answer_stream
    from domains.base import get_domain
    from domains.driving.layout import STITCH_ORDER, STITCHED_PREFIX

    plugin = get_domain("driving")
    assert set(options_for(plugin)) == {"mode", "order"}
    seen = []
    real_stream = session.stream

    def spy(question, images, prompt=None, **kw):  # what the model is given
        seen.append((len(images), prompt))
        yield from real_stream(question, images, prompt=prompt, **kw)

    monkeypatch.setattr(session, "stream", spy)
    files = nuscenes_frames(tmp_path / "picked")
    blocks = demo_app.build_demo(session, "driving", max_upload_mb=5)
    on_upload, on_ask, on_option = (handler(blocks, n) for n in ("on_upload", "on_ask", "on_option"))
    state, status, gallery, info, *_ = on_upload(None, [str(f) for f in files], None, "stitched", "stitch")
    assert state is not None and len(state.result.images) == 1, status
    assert_cells(state.result.images[0])
    info = info.replace("\\", "")  # markdown escapes
    assert "upload-" not in info and "read from the file names" in info and "CAM_BACK_LEFT" in info
    assert all("__" not in p.name and p.name.startswith("upload-") for p in state.staged.paths)
    assert gallery["columns"] == 1  # the 3:1 stitched image alone in its row
    *_, (text, images, notice, *_) = on_ask("What is in front?", state, "stitched", "stitch")
    assert seen[-1] == (1, STITCHED_PREFIX) and text and "Could not" not in notice
    # the view is switched after the upload: the upload is read again in the new layout
    state, status, gallery, info, warnings, _notice = on_option(state, "multi", "stitch")
    assert len(state.result.images) == 6 and state.result.labels == list(STITCH_ORDER)
    assert "six camera images" in info and gallery["columns"] == 3
    *_, (text, images, notice, *_) = on_ask("What is in front?", state, "multi", "stitch")
    assert seen[-1][0] == 6 and seen[-1][1].count("<image>") == 6 and "Could not" not in notice
    assert len(images["value"]) == 6
    # asked with a view the upload was not read in yet (the change event lost the race): read again first
    steps = list(on_ask("What is in front?", state, "stitched", "stitch"))
    new_state = steps[0][3]  # the state is updated first, with the upload read in the view asked with
    assert seen[-1] == (1, STITCHED_PREFIX) and len(new_state.result.images) == 1 and "Could not" not in steps[-1][2]
    assert new_state.options == {"mode": "stitched", "order": "stitch"} and steps[-1][0]

    class Scripted:  # the tiny model does not write c-tags: script one answer to check the drawing path
        def stream(self, question, images, prompt=None):
            yield "<c1,CAM_BACK,[500,500]> is a car."

    upload = state.result
    *_, (_text, drawn, note) = answer_stream(Scripted(), plugin.demo_hooks["draw_answer"], "Where?", upload,
                                             **state.options)
    back = STITCH_ORDER.index("CAM_BACK")
    changed = [k for k, (a, b) in enumerate(zip(upload.images, drawn)) if a.tobytes() != b.tobytes()]
    assert note == "" and changed == [back]
    # an ambiguous set is refused, naming what was found, never placed by order
    twice = [files[0], *files[:5]]
    state2, status, *_ = on_upload(None, [str(f) for f in twice], state, "stitched", "stitch")
    assert state2 is None and "the same camera in CAM_BACK_LEFT: upload 1, upload 2" in status.replace("\\", "")
    assert not state.staged.root.exists()


def test_build_demo_panels_by_domain(session):
    from deploy.demo import panels

    for domain in (None, "general", "remote_sensing", "driving"):
        assert panels.panel_for(domain).__name__ == "deploy.demo.panels.generic"
        demo_app.build_demo(session, domain)
    assert panels.panel_for("medical").__name__ == "deploy.demo.panels.medical"
    with pytest.raises(ValueError, match="unknown domain 'no_such_domain'"):
        demo_app.build_demo(session, "no_such_domain")
    with pytest.raises(ValueError, match="max_upload_mb"):
        demo_app.build_demo(session, None, max_upload_mb=0)


def test_markdown_escaping_keeps_header_values_inert():
    assert escape_md("<b>x</b> | *y*") == r"&lt;b&gt;x&lt;/b&gt; \| \*y\*"
    assert info_md({"a|b": "1\n2"}) == "| field | value |\n|---|---|\n| a\\|b | 1 2 |"


# --------------------------------------------------------------------------------------------- medical panel
@pytest.fixture(scope="module")
def medical():
    require("pydicom")
    from deploy.demo.panels import medical

    return medical


def test_medical_single_dicom_header_is_deidentified_and_warnings_shown(medical, tmp_path, gradio_cache):
    study = medical.load_study([write_ct(tmp_path / "DOE_JANE.dcm")], max_bytes=MB)
    try:
        assert study.kind == "dicom" and study.count == 1 and study.windowable
        assert study.header and study.header.get("modality", study.header.get("Modality")) == "CT"
        assert_no_phi(all_text([study.header, study.warnings, study.summary, study.label(0)]))
        text = " ".join(study.warnings)
        assert "Burned-in annotation" in text
        assert "PatientName" in text  # reported by keyword, never by value
        # identity first, by kind: PatientName leads, whatever else the file holds
        assert "it holds patient identity (PatientName, PatientID, PatientBirthDate) and 1 person or institution " \
               "(InstitutionName)." in text
        assert study.default_window == (40.0, 400.0)
        assert study.value_range == pytest.approx((-1000.0, 1000.0), abs=1)
        assert study.render(0).size == (32, 32) and study.render(0).mode == "RGB"
    finally:
        study.close()
    assert not study.staged.root.exists()


def test_the_identifying_attributes_warning_groups_by_kind_identity_first(medical):
    found = ["AcquisitionDate", "ContentDate", "InstitutionName", "OperatorsName", "OtherPatientIDs", "PatientAge",
             "PatientBirthDate", "PatientID", "PatientName", "ReferringPhysicianName", "SeriesDate", "StationName",
             "StudyDate", "StudyTime", "StudyDescription", *(f"private (0009,10{k:02x})" for k in range(200))]
    text = medical.phi_warning(found)
    assert text.startswith("The file is not de-identified: it holds patient identity (PatientName, PatientID, "
                           "PatientBirthDate, OtherPatientIDs and 1 more), 5 dates and times (AcquisitionDate, "
                           "ContentDate, SeriesDate, StudyDate and 1 more), 3 people and institutions "
                           "(InstitutionName, OperatorsName, ReferringPhysicianName), 1 device attribute "
                           "(StationName), 1 other identifying attribute (StudyDescription) and 200 private tags")
    assert "215" not in text and medical.phi_warning([]) == ""
    assert medical.phi_warning(["private (0009,1001)"]).startswith("The file is not de-identified: it holds 1 private tag ")


def test_medical_window_changes_the_rendering(medical, tmp_path):
    study = medical.load_study([write_ct(tmp_path / "ct.dcm")], max_bytes=MB)
    try:
        renders = {name: np.asarray(study.render(0, medical.window_choice(name, 0, 0))) for name in
                   (medical.FILE_DEFAULT, "lung", "bone")}
        custom = np.asarray(study.render(0, medical.window_choice(medical.CUSTOM, 0, 2000)))
    finally:
        study.close()
    row = {k: v[0, :, 0].astype(int) for k, v in {**renders, "custom": custom}.items()}
    assert not np.array_equal(row["lung"], row["bone"])
    assert not np.array_equal(row[medical.FILE_DEFAULT], row["lung"])
    # a 0 / 2000 window maps the -1000..1000 HU ramp onto the whole grey range, monotonically
    assert row["custom"][0] <= 2 and row["custom"][-1] >= 253 and np.all(np.diff(row["custom"]) >= 0)
    # the file default (40 / 400) saturates both ends of the ramp
    assert row[medical.FILE_DEFAULT][0] == 0 and row[medical.FILE_DEFAULT][-1] == 255
    assert medical.window_choice(medical.FILE_DEFAULT, 1, 2) is None
    assert medical.window_choice("lung", 1, 2) == "lung"
    assert medical.window_choice(medical.CUSTOM, -600, 0) == (-600.0, 1.0)


def test_medical_zip_series_is_sorted_and_picks_slices(medical, tmp_path, gradio_cache):
    study = medical.load_study([write_series_zip(tmp_path / "DOE_JANE_series.zip", tmp_path, n=4)], max_bytes=MB)
    try:
        assert study.kind == "series" and study.count == 4 and study.unit == "slice"
        assert study.header["slices"] == "4" and study.start_index == 2
        means = [np.asarray(study.render(i, (0, 4000))).mean() for i in range(4)]
        assert means == sorted(means), "slices ordered by position (HU rises with z in this series)"
        images, labels, prompt = study.model_inputs(1, 1, None)
        assert len(images) == 1 and labels == ["slice 2/4"] and prompt is None
        images, labels, prompt = study.model_inputs(1, 3, "abdomen")
        # the training layout (domains.medical.convert.slice_prompt): "Slice k/N: <image>" per slice
        assert len(images) == 3 and prompt == "".join(f"S{lab[1:]}: <image>\n" for lab in labels)
        assert_no_phi(all_text([study.header, study.warnings, study.summary, labels]))
        assert all("DOE" not in str(p) for p in study.series.paths)
    finally:
        study.close()


def test_medical_series_with_a_damaged_slice_says_so(medical, tmp_path, gradio_cache):
    """A slice file cut short in an uploaded series is left out of the viewer with a warning naming it (by its
    staged name: upload names may hold patient names)."""
    upload = write_series_zip(tmp_path / "series.zip", tmp_path, n=4)
    cut = (tmp_path / "series_src" / "IM0001.dcm").read_bytes()[:600]
    with zipfile.ZipFile(upload, "a") as zf:
        zf.writestr("DOE_JANE/CT/IM0009.dcm", cut)
    study = medical.load_study([upload], max_bytes=MB)
    try:
        assert study.count == 4
        assert any("1 damaged DICOM file(s) left out (file-" in w for w in study.warnings), study.warnings  # staged name
    finally:
        study.close()


def test_medical_cd_export_zip_reads_without_false_damage_warnings(medical, tmp_path, gradio_cache):
    """A CD / PACS export: suffix-less slices under DICOM/, beside README.TXT, AUTORUN.INF and a viewer. The
    neutral staged names said the three extras were damaged slices ("the series may be missing slices"); a
    suffix-less slice cut short is still one."""
    upload = write_series_zip(tmp_path / "cd.zip", tmp_path, n=4)
    with zipfile.ZipFile(upload) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    cd = tmp_path / "cd_export.zip"
    with zipfile.ZipFile(cd, "w") as zf:
        for name, data in members.items():
            zf.writestr("DICOM/ST000000/SE000000/" + Path(name).stem, data)  # IM0000 ... IM0003, no suffix
        zf.writestr("README.TXT", b"Study exported by a PACS viewer")
        zf.writestr("AUTORUN.INF", b"[autorun]\nopen=VIEWER\\viewer.exe")
        zf.writestr("VIEWER/viewer.exe", b"MZ" + bytes(200))
    study = medical.load_study([cd], max_bytes=MB)
    try:
        assert study.count == 4 and not any("damaged" in w for w in study.warnings), study.warnings
    finally:
        study.close()
    with zipfile.ZipFile(cd, "a") as zf:
        zf.writestr("DICOM/ST000000/SE000000/IM0009", members[next(iter(members))][:600])
    study = medical.load_study([cd], max_bytes=MB)
    try:
        assert study.count == 4
        assert any("1 damaged DICOM file(s) left out (file-" in w for w in study.warnings), study.warnings
    finally:
        study.close()


def test_a_single_cut_dicom_is_said_in_plain_words(medical, tmp_path, gradio_cache):
    """A DICOM cut in half showed the page "truncated or corrupt pixel data (ValueError: The number of bytes of pixel
    data is less than expected (3267 vs 8192 bytes) - the dataset may be corrupted, have an invalid group 0028 ...)"."""
    whole = write_ct(tmp_path / "whole.dcm", size=64).read_bytes()
    cut = tmp_path / "DOE_JANE.dcm"
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(UploadError) as err:
        medical.load_study([cut], max_bytes=MB)
    msg = str(err.value)
    assert msg == ("upload 1: truncated or corrupt pixel data; the file is incomplete or damaged: copy or export it "
                   "again"), msg


def test_medical_redact_help_says_what_the_masks_black_out(medical):
    from pydicom.dataset import Dataset

    from domains.medical.redact import redaction_regions

    us, ct = Dataset(), Dataset()
    us.Modality, ct.Modality = "US", "CT"
    assert redaction_regions(us, 1000, 1000) == (((0, 0, 1000, 120),), "mask US")  # the top 12 % only
    assert redaction_regions(ct, 1000, 1000) == (((0, 0, 1000, 100), (0, 900, 1000, 1000)), "mask *")
    assert "ultrasound: the top 12 %; other modalities: the top 10 % and the bottom 10 %" in medical.REDACT_HELP


def test_medical_warns_about_recognizable_visual_features(medical):
    from pydicom.dataset import Dataset

    def slice_(flag: str | None) -> Dataset:
        ds = Dataset()
        ds.Modality, ds.BurnedInAnnotation = "CT", "NO"
        if flag is not None:
            ds.RecognizableVisualFeatures = flag
        return ds

    text = " ".join(medical._warnings([slice_("YES")]))
    assert "this file declares that the image shows the patient's face" in text
    assert "RecognizableVisualFeatures = YES" in text and "does not remove it" in text
    assert "2 of 3 slices declare" in " ".join(medical._warnings([slice_("YES"), slice_("NO"), slice_("yes")]))
    assert not any("Recognis" in w for w in medical._warnings([slice_("NO"), slice_(None)]))


def test_medical_multiframe_file_has_a_frame_picker(medical, tmp_path):
    study = medical.load_study([write_ct(tmp_path / "cine.dcm", frames=5)], max_bytes=MB)
    try:
        assert study.kind == "dicom" and study.count == 5 and study.unit == "frame"
        assert not np.array_equal(np.asarray(study.render(0)), np.asarray(study.render(3)))
        assert study.label(3) == "frame 4/5"
        assert study.pick(0, 3) == [0, 2, 4]
        images, labels, prompt = study.model_inputs(0, 3, None)
        # the page says "frame"; the model gets the layout the converters train on ("Slice k/N: <image>")
        assert labels == ["frame 1/5", "frame 3/5", "frame 5/5"]
        assert prompt == "Slice 1/5: <image>\nSlice 3/5: <image>\nSlice 5/5: <image>\n"
    finally:
        study.close()


def test_medical_png_upload(medical, tmp_path):
    study = medical.load_study([png(tmp_path / "DOE_JANE.png")], max_bytes=MB)
    try:
        assert study.kind == "image" and not study.windowable and study.render(0).size == (48, 40)
        assert any("burned" in w or "pixels" in w for w in study.warnings)
    finally:
        study.close()


@pytest.mark.parametrize("name, content, expected", [
    ("DOE_JANE.dcm", b"\0" * 128 + b"DICM" + b"\x02\x00garbage" * 20, "upload 1"),
    ("DOE_JANE.dcm", b"plain text, not DICOM", "upload 1"),
    ("DOE_JANE.zip", b"PK\x03\x04 not really a zip", "upload 1"),
    ("notes.txt", b"hello", "upload 1"),
    ("DOE_JANE.png", b"", "upload 1: empty file"),  # as an empty .dcm reads, not "not an image file"
    ("DOE_JANE.tif", b"II*\x00\x08\x00\x00\x00", "upload 1: not a DICOM file; this page reads DICOM files (one file, "
                                                  "the files of one series, or a .zip of them) and PNG / JPEG images"),
])
def test_medical_bad_files_give_readable_messages(medical, tmp_path, gradio_cache, name, content, expected):
    bad = tmp_path / name
    bad.write_bytes(content)
    from deploy.demo.uploads import runtime_root

    before = set(runtime_root().glob("upload-*"))
    with pytest.raises(UploadError) as err:
        medical.load_study([bad], max_bytes=MB)
    msg = str(err.value)
    assert expected in msg and "DOE" not in msg and "Traceback" not in msg and str(tmp_path) not in msg
    assert set(runtime_root().glob("upload-*")) <= before, "staged copies are removed"


def test_medical_zip_bomb_is_refused(medical, tmp_path):
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a.dcm", b"\0" * (8 * MB))  # 8 MB of zeros deflate to a few KB
    assert bomb.stat().st_size < MB
    with pytest.raises(UploadError) as err:
        medical.load_study([bomb], max_bytes=MB)
    assert "upload 1" in str(err.value) or "zip" in str(err.value)


def test_medical_zip_with_a_path_escape_is_refused_without_naming_members(medical, tmp_path):
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../../DOE_JANE_escaped.dcm", write_ct(tmp_path / "x.dcm").read_bytes())
    with pytest.raises(UploadError, match="upload 1: unsafe path in zip") as err:
        medical.load_study([evil], max_bytes=MB)
    assert "DOE" not in str(err.value)
    assert not (tmp_path.parent / "DOE_JANE_escaped.dcm").exists()


def test_medical_zip_with_a_duplicate_entry_is_refused_in_words(medical, tmp_path):
    """Every slice of a series under one name: the panel said 'upload 1: No such file or directory'."""
    dup = tmp_path / "dup.zip"
    with zipfile.ZipFile(dup, "w") as zf:
        for k in range(3):
            zf.writestr("DOE_JANE/CT/IM1.dcm", write_ct(tmp_path / f"x{k}.dcm", z=k, instance=k + 1).read_bytes())
    with pytest.raises(UploadError) as err:
        medical.load_study([dup], max_bytes=MB)
    assert str(err.value) == "upload 1: duplicate entry in zip (it holds two or more files under one name)"


def test_medical_files_of_two_series_show_the_largest(medical, tmp_path):
    from pydicom.uid import generate_uid

    big, small = generate_uid(), generate_uid()
    files = [write_ct(tmp_path / f"b{k}.dcm", z=k, instance=k + 1, series_uid=big) for k in range(3)]
    files.append(write_ct(tmp_path / "s.dcm", series_uid=small))
    study = medical.load_study(files, max_bytes=MB)
    try:
        assert study.kind == "series" and study.count == 3
        assert ("The upload holds 2 series (3, 1 slices); showing the largest (3 slices). To see another, upload its "
                "files on their own.") in study.warnings
    finally:
        study.close()
    mixed = medical.load_study([files[0], png(tmp_path / "p.png")], max_bytes=MB)  # the DICOM, the image named
    try:
        assert mixed.kind == "dicom" and mixed.warnings[0].startswith("Upload 2 (PNG / JPEG) not shown")
    finally:
        mixed.close()


def test_burned_in_text_is_blacked_out_only_when_asked_and_only_where_flagged(medical, session, tmp_path,
                                                                              gradio_cache):
    from domains.medical.redact import redaction_regions

    blocks = demo_app.build_demo(session, "medical", max_upload_mb=1)
    on_upload, on_redact, on_ask = (handler(blocks, n) for n in ("on_upload", "on_redact", "on_ask"))
    flagged = write_ct(tmp_path / "flagged.dcm", size=64)
    study = on_upload([str(flagged)], None)[0]
    try:
        plain = np.asarray(study.render(0, (0, 4000)))
        assert study.redact is False and study.redaction_note() == "" and plain[:16].max() > 0  # off by default
        image = on_redact(True, 1, medical.CUSTOM, 0, 4000, study)
        import pydicom

        boxes, rule = redaction_regions(pydicom.dcmread(flagged), 64, 64)
        masked = np.zeros((64, 64), bool)
        for x1, y1, x2, y2 in boxes:
            masked[y1:y2, x1:x2] = True
        redacted = np.asarray(study.render(0, (0, 4000)))
        assert (redacted[masked] == 0).all() and np.array_equal(redacted[~masked], plain[~masked])
        assert "burned-in text blacked out" in image.label and rule in image.label
        from PIL import Image as PILImage

        page = np.asarray(PILImage.open(image.value["path"]).convert("RGB")).astype(int)  # as the page gets it
        assert page[masked].max() <= 8 and page[~masked].mean() > 50, "the page shows the redacted render"
        sent = []
        real_stream = session.stream

        def recording_stream(question, images, prompt=None):
            sent.extend(images)
            yield from real_stream(question, images, prompt=prompt)

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(session, "stream", recording_stream)
            list(on_ask("What is shown?", study, 1, 1, medical.CUSTOM, 0, 4000))
        assert sent and (np.asarray(sent[0])[masked] == 0).all(), "the model gets the redacted image"
        on_redact(False, 1, medical.CUSTOM, 0, 4000, study)
        assert np.array_equal(np.asarray(study.render(0, (0, 4000))), plain)
    finally:
        study.close()
    unflagged = on_upload([str(write_ct(tmp_path / "clean.dcm", size=64, burned_in=False))], None, True)[0]
    try:
        assert unflagged.redact is True and np.asarray(unflagged.render(0, (0, 4000)))[:16].max() > 0
        assert unflagged.redaction_note() == "not flagged: nothing blacked out"
    finally:
        unflagged.close()


def test_medical_page_handlers_never_show_phi(session, tmp_path, gradio_cache):
    require("pydicom")
    blocks = demo_app.build_demo(session, "medical", max_upload_mb=1)
    on_upload = handler(blocks, "on_upload")
    zipped = write_series_zip(tmp_path / "DOE_JANE.zip", tmp_path, n=3)
    out = on_upload([str(zipped)], None)
    study = out[0]
    try:
        assert study is not None and "upload 1" in out[1] and "CT series, 3 slices" in out[1]
        assert "Burned" in out[4] and "Header" in out[3]
        assert_no_phi(all_text(out[1:]))
        on_preset, on_slider, on_index = (handler(blocks, n) for n in ("on_preset", "on_slider", "on_index"))
        c, w, image = on_preset("lung", 0, 0, 2, study)
        assert (c, w) == pytest.approx(__import__("domains.medical.dicom", fromlist=["x"]).WINDOW_PRESETS["lung"])
        assert "lung" in image.label and "slice 2/3" in image.label
        preset, image = on_slider(100, 50, 1, study)
        assert preset == "custom (sliders)" and "100/50" in image.label
        c, w, image = on_preset("custom (sliders)", -500, 900, 1, study)  # keeps the sliders' window
        assert c == w == {"__type__": "update"} and "-500/900" in image.label  # sliders left as they are
        assert "slice 3/3" in on_index(3, "bone", 0, 0, study).label
        on_ask = handler(blocks, "on_ask")
        (answer, preview, sent, notice), = on_ask("Where is the lesion?", None, 2, 1, "lung", 0, 0)
        assert answer == "" and "No study loaded" in notice and "nothing was sent to the model" in notice
        *_, (answer, preview, sent, notice) = on_ask("Where is the lesion?", study, 2, 1, "lung", 0, 0)
        assert answer and notice == "" and preview.value is not None
        *_, (answer, preview, sent, notice) = on_ask("Compare the slices.", study, 2, 3, "lung", 0, 0)
        assert answer and sent.visible and len(sent.value) == 3
        assert_no_phi(all_text([answer, notice, sent]))
        out = on_upload([str(png(tmp_path / "DOE_JANE.png"))], study)
        assert not study.staged.root.exists(), "a new upload frees the previous one"
        study = out[0]
        assert study.kind == "image"
    finally:
        if study is not None:
            study.close()


# --------------------------------------------------------------------------------------------- launch / auth / CLI
def test_launch_is_local_private_and_limited_by_default(session, monkeypatch, capsys):
    blocks = demo_app.build_demo(session, None, max_upload_mb=5)
    seen = {}
    monkeypatch.setattr(type(blocks), "launch", lambda self, **kw: seen.update(kw) or (None, "url", None))
    demo_app.launch_demo(blocks)
    assert seen["server_name"] == "127.0.0.1" and seen["server_port"] == 7860 and seen["share"] is False
    assert seen["max_file_size"] == 5 * MB and seen["auth"] is None and seen["show_error"] is False
    assert seen["enable_monitoring"] is False and seen["run_history"] is False and seen["mcp_server"] is False
    assert os.environ["GRADIO_ANALYTICS_ENABLED"] == "False" and blocks.analytics_enabled is False
    assert capsys.readouterr().err == ""
    # the server refused files above 2 MB while the page's button and refusal message said 5 MB
    with pytest.raises(demo_app.DemoError, match=r"max_upload_mb=2 here, but the page was built with 5"):
        demo_app.launch_demo(blocks, max_upload_mb=2)
    demo_app.launch_demo(blocks, host="0.0.0.0", auth=("ann", "pw"), max_upload_mb=5)  # allowed: launch is mocked; checks the non-loopback warning
    err = capsys.readouterr().err
    assert "warning: serving on 0.0.0.0" in err and "without a login" not in err
    assert seen["max_file_size"] == 5 * MB and seen["auth"]("ann", "pw") and not seen["auth"]("ann", "nope")
    assert not seen["auth"]("bob", "pw")
    demo_app.launch_demo(blocks, host="192.168.1.5")
    assert "without a login" in capsys.readouterr().err


def test_launch_blank_or_no_host_serves_on_loopback(session, monkeypatch, capsys):
    """host="" printed "serving on , reachable from other machines" while Gradio fell back to GRADIO_SERVER_NAME
    (or 127.0.0.1); host=None failed with a raw AttributeError. Both now mean the default, 127.0.0.1."""
    blocks = demo_app.build_demo(session, None, max_upload_mb=5)
    seen = {}
    monkeypatch.setattr(type(blocks), "launch", lambda self, **kw: seen.update(kw) or (None, "url", None))
    monkeypatch.setenv("GRADIO_SERVER_NAME", "0.0.0.0")  # must not widen a blank host
    for host in ("", "  ", None):
        demo_app.launch_demo(blocks, host=host)
        assert seen["server_name"] == "127.0.0.1", host
        assert capsys.readouterr().err == "", host
    demo_app.launch_demo(blocks, host=" 0.0.0.0 ")
    assert seen["server_name"] == "0.0.0.0" and "serving on 0.0.0.0," in capsys.readouterr().err
    # an API caller's bare IPv6 address made Gradio fail on http://::1:7860/; it binds the address inside brackets
    for host in ("::1", " ::1 ", "[::1]"):
        demo_app.launch_demo(blocks, host=host)
        assert seen["server_name"] == "[::1]" and capsys.readouterr().err == "", host
    with pytest.raises(demo_app.DemoError, match=r"host must be a host name or address.*7860"):
        demo_app.launch_demo(blocks, host=7860)

def test_launch_refuses_a_port_that_cannot_be_served(session, monkeypatch):
    """launch_demo passed any port to Gradio (the CLI alone checked --port): 70000 or "7860" failed inside Gradio's
    launch, after the signal handlers were installed; now a DemoError naming the port, before anything is touched."""
    blocks = demo_app.build_demo(session, None, max_upload_mb=5)
    seen = {}
    monkeypatch.setattr(type(blocks), "launch", lambda self, **kw: seen.update(kw) or (None, "url", None))
    for bad in (0, 70000, -1, "7860", 7860.0, True):
        with pytest.raises(demo_app.DemoError, match=r"port must be in 1\.\.65535 \(a whole number\), got"):
            demo_app.launch_demo(blocks, port=bad)
    assert not seen
    demo_app.launch_demo(blocks, port=8123)
    assert seen["server_port"] == 8123

def test_is_loopback():
    assert demo_app.is_loopback("127.0.0.1") and demo_app.is_loopback("::1") and demo_app.is_loopback("localhost")
    assert not demo_app.is_loopback("0.0.0.0") and not demo_app.is_loopback("example.org")
    # "LOCALHOST" was told it was reachable from other machines
    for host in ("LOCALHOST", "Localhost.", "localhost.localdomain", "127.0.0.2", "[::1]", " ::1 "):
        assert demo_app.is_loopback(host), host
    for host in ("::", "[::]", "10.0.0.1", "localhost.example.org", "[::1"):
        assert not demo_app.is_loopback(host), host


def test_auth_sources(tmp_path, monkeypatch):
    monkeypatch.delenv(demo_app.PASSWORD_ENV, raising=False)
    with pytest.raises(ValueError, match=demo_app.PASSWORD_ENV):
        demo_app.auth_from_env("ann")
    monkeypatch.setenv(demo_app.PASSWORD_ENV, "s3cret")
    assert demo_app.auth_from_env("ann") == ("ann", "s3cret")
    good = tmp_path / "users.txt"
    good.write_text("# demo users\nann:pa:ss\n\nbob:b b\n")
    good.chmod(0o600)
    assert demo_app.load_auth_file(good) == [("ann", "pa:ss"), ("bob", "b b")]
    bad = tmp_path / "bad.txt"
    bad.write_text("ann:ok\nhunter2\n")
    with pytest.raises(ValueError, match=r"bad.txt:2: expected 'user:password'") as err:
        demo_app.load_auth_file(bad)
    assert "hunter2" not in str(err.value)


def test_cli_flags_defaults_and_password_never_on_the_command_line(monkeypatch, capsys):
    import argparse

    from deploy.demo.cli import PASSWORD_ENV, add_demo_parser, main, run_demo

    assert PASSWORD_ENV == demo_app.PASSWORD_ENV
    parser = argparse.ArgumentParser()
    add_demo_parser(parser.add_subparsers(dest="verb"))
    args = parser.parse_args(["demo", "--domain", "medical"])
    assert (args.host, args.port, args.max_upload_mb, args.model) == ("127.0.0.1", 7860, 200.0, None)
    assert args.max_new_tokens == 128 and args.handler is run_demo
    with pytest.raises(SystemExit):
        parser.parse_args(["demo", "--password", "x"])
    with pytest.raises(SystemExit):
        parser.parse_args(["demo", "--auth-user", "a", "--auth-file", "f"])
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    assert main(["--auth-user", "ann"]) == 1  # fails before loading any model
    assert PASSWORD_ENV in capsys.readouterr().err
    assert main(["--max-upload-mb", "0"]) == 1
    capsys.readouterr()
    assert main(["--port", "70000"]) == 1  # the library's check, named as the flag
    assert "--port must be in 1..65535 (a whole number), got 70000" in capsys.readouterr().err
    for bad in ("inf", "nan"):  # refused before the model loads (inf ended in an OverflowError trace at launch)
        capsys.readouterr()
        assert main(["--max-upload-mb", bad]) == 1
        assert f"--max-upload-mb must be a positive number of MB, got {bad}" in capsys.readouterr().err
    with pytest.raises(ValueError, match="positive number of MB"):
        demo_app.build_demo("pocket-tiny", max_upload_mb=float("nan"))


def test_cli_runs_the_demo_with_launch_settings(monkeypatch, tmp_path):
    from deploy.demo import cli

    seen = {}
    monkeypatch.setattr(demo_app, "launch_demo",
                        lambda blocks, **kw: seen.update(kw, blocks=blocks) or (None, "http://127.0.0.1:7999/", None))
    monkeypatch.setattr(cli, "serve_until_stopped", lambda blocks: seen.update(blocked=blocks))
    users = tmp_path / "users"
    users.write_text("ann:pw\n")
    users.chmod(0o600)
    assert cli.main(["--domain", "remote_sensing", "--model", "pocket-tiny", "--auth-file", str(users),
                     "--port", "7999", "--max-upload-mb", "3"]) == 0
    assert seen["host"] == "127.0.0.1" and seen["port"] == 7999 and seen["auth"] == [("ann", "pw")]
    assert seen["max_upload_mb"] == 3 and seen["blocks"].pocket_settings.max_upload_mb == 3 and seen["blocked"] is seen["blocks"]



def test_the_demo_serves_the_domains_quick_start_model_or_says_how_to_make_one(monkeypatch, tmp_path, capsys):
    """`adapt demo --domain medical` never answers with the untrained base model by default."""
    from adapt import cli as adapt_cli
    from deploy.demo import cli
    from deploy.demo.session import DEFAULT_MAX_NEW_TOKENS

    assert cli.DEFAULT_MAX_NEW_TOKENS == DEFAULT_MAX_NEW_TOKENS
    monkeypatch.chdir(tmp_path)
    built = []
    monkeypatch.setattr(demo_app, "build_demo", lambda model, domain, **kw: built.append((model, domain)) or
                        (_ for _ in ()).throw(SystemExit(0)))
    monkeypatch.setattr(cli, "check_model", lambda model: None)  # the quick-start folder below is a config.json `{}`
    assert adapt_cli.main(["demo", "--domain", "no_such_domain", "--model", "pocket-tiny"]) == 1
    err = capsys.readouterr().err  # refused before anything is loaded (or said to be)
    assert "unknown domain 'no_such_domain'" in err and "loading" not in err and built == []
    assert adapt_cli.main(["demo", "--domain", "medical"]) == 1
    err = capsys.readouterr().err
    assert "adapt demo: error: no medical model: runs/quickstart-medical/train/final does not exist" in err
    assert "`adapt quickstart --field medical`" in err and "--model" in err and built == []
    # where `adapt quickstart --field medical` puts its model (the quick start itself is tested in test_quickstart)
    ran = {}
    monkeypatch.setattr("adapt.quickstart.quickstart", lambda out, overrides, progress, field, force: ran.update(out=out))
    assert adapt_cli.main(["quickstart", "--field", "medical"]) == 0
    assert cli.quickstart_model("medical") == ran["out"] / "train" / "final"
    final = tmp_path / "runs" / "quickstart-medical" / "train" / "final"
    final.mkdir(parents=True)
    (final / "config.json").write_text("{}")
    with pytest.raises(SystemExit):
        cli.main(["--domain", "medical"])
    assert built == [(str(cli.quickstart_model("medical")), "medical")]
    assert cli.default_model(None) == cli.default_model("general") == "pocket-tiny"
    with pytest.raises(ValueError, match="adapt quickstart --field driving"):
        cli.default_model("driving")
    with pytest.raises(SystemExit):
        cli.main(["--domain", "medical", "--model", "pocket-tiny"])  # an explicit model always wins
    assert built[-1] == ("pocket-tiny", "medical")


def test_medical_series_with_two_slices_at_one_position_warns(medical, tmp_path):
    """A slice stored twice (a re-export under a new SOP instance UID) shifts every later slice index; the converter
    and read_upload said so, the demo's series panel did not."""
    from pydicom.uid import generate_uid

    series = generate_uid()
    files = [write_ct(tmp_path / f"b{k}.dcm", z=k, instance=k + 1, series_uid=series) for k in range(3)]
    files.append(write_ct(tmp_path / "again.dcm", z=1, instance=4, series_uid=series))
    study = medical.load_study(files, max_bytes=MB)
    try:
        note = [w for w in study.warnings if "share 1 position(s)" in w]
        assert note, study.warnings
        # the files by the page's names, not the staged ones (upload-2.dcm)
        assert "(upload 2 = upload 4)" in note[0] and "upload-" not in note[0], note[0]
    finally:
        study.close()


def _gzipped_series(tmp_path: Path, slices: int = 3) -> list[Path]:
    """`slices` CT slices of one series, each gzipped as ``IM<k>.dcm.gz``."""
    import gzip

    from pydicom.uid import generate_uid

    series, files = generate_uid(), []
    for k in range(slices):
        dcm = write_ct(tmp_path / f"IM{k}.dcm", z=k, instance=k + 1, series_uid=series)
        files.append(tmp_path / f"IM{k}.dcm.gz")
        files[-1].write_bytes(gzip.compress(dcm.read_bytes()))
    return files


def test_a_gzipped_slice_that_does_not_decode_is_reported_damaged(medical, tmp_path):
    """Staging kept only ``.gz`` of ``IM1.dcm.gz``, so a gzipped slice whose first bytes were overwritten was
    "passed over" as some other file, and the series silently lost a slice; a zip's members kept ``.dcm.gz``."""
    files = _gzipped_series(tmp_path)
    files[1].write_bytes(b"\0" * 500)
    study = medical.load_study(files, max_bytes=MB)
    try:
        assert study.staged.paths[0].name == "upload-1.dcm.gz"
        assert any("1 damaged DICOM file(s) left out (upload 2)" in w for w in study.warnings), study.warnings
    finally:
        study.close()


def test_a_gzipped_slice_cut_short_is_reported_damaged(medical, tmp_path):
    """A ``.dcm.gz`` slice whose gzip stream ends early ("corrupt gzip file") was "passed over, not shown" as if it
    were some unrelated file, so the series lost a slice without the damaged-slice warning."""
    files = _gzipped_series(tmp_path)
    files[1].write_bytes(files[1].read_bytes()[:200])  # the gzip header stays: the stream ends early
    study = medical.load_study(files, max_bytes=MB)
    try:
        assert any("1 damaged DICOM file(s) left out (upload 2)" in w for w in study.warnings), study.warnings
    finally:
        study.close()


def test_medical_series_warnings_read_every_slice_not_only_the_first(medical, tmp_path, gradio_cache):
    """The identifying-attributes warning and the PhotometricInterpretation used to come from the first slice
    only: a series whose first slice was de-identified but a later one still named the patient showed no warning,
    and a later slice of another photometric interpretation went unsaid. Every slice is read now."""
    import pydicom
    from pydicom.uid import generate_uid

    uid, folder = generate_uid(), tmp_path / "src"
    folder.mkdir()
    paths = [write_ct(folder / f"IM{k}.dcm", z=2.5 * k, instance=k + 1, series_uid=uid, burned_in=False)
             for k in range(4)]
    for k, path in enumerate(paths):
        ds = pydicom.dcmread(path)
        if k != 3:  # slices 0-2 de-identified; the last still holds the patient's identity
            for keyword in ("PatientName", "PatientID", "PatientBirthDate", "InstitutionName"):
                delattr(ds, keyword)
        if k == 2:
            ds.PhotometricInterpretation = "MONOCHROME1"
        ds.save_as(path)
    study = medical.load_study(paths, max_bytes=MB)
    try:
        text = " ".join(study.warnings)
        assert "The series is not de-identified: it holds patient identity (PatientName, PatientID, " \
               "PatientBirthDate)" in text, study.warnings
        assert "PhotometricInterpretation (MONOCHROME2: 3 slices, MONOCHROME1: 1 slice)" in text
        assert study.windowable and "Window presets are off" not in text
        assert_no_phi(all_text([study.header, study.warnings, study.summary]))
    finally:
        study.close()


def test_an_image_above_the_pixel_limit_says_the_size_the_limit_and_what_to_do(tmp_path, gradio_cache, monkeypatch):
    """The demo passed on the reader's "downscale the image or raise the limit", which no one at the page can do;
    now it says the image's size, the limit, that no demo option changes it, and a size that fits."""
    from deploy.demo import hooks
    from deploy.demo.panels.generic import read_files

    big = png(tmp_path / "DOE_JANE.png", size=(300, 200))
    monkeypatch.setattr(hooks, "read_image",
                        lambda path, max_pixels=50_000: hooks.load_image(path, max_pixels=max_pixels))
    with pytest.raises(UploadError) as err:
        read_files([big], hooks_for(None)[0], max_bytes=MB)
    text = str(err.value)
    assert text.startswith("upload 1: the image is 300 × 200 = 60,000 pixels, above the demo's limit of 50,000 "
                           "pixels per image (fixed: no demo option changes it; tiling.max_pixels in a recipe sets "
                           "it for adapt train and eval); downscale it to 273 × 182 or less"), text
    assert "raise the limit" not in text and "DOE" not in text
    assert 273 * 182 <= 50_000


def test_frames_and_slices_are_picked_by_one_rule(medical, tmp_path, gradio_cache):
    """Study.pick chose a multi-frame file's frames by linspace (ends included) and a series' slices by the centres
    of equal runs (DicomSeries.pick, the medical reader's rule); both take dicom.pick_slices now."""
    from domains.medical import dicom

    cine = medical.load_study([write_ct(tmp_path / "cine.dcm", frames=4)], max_bytes=MB)
    series = medical.load_study([write_series_zip(tmp_path / "s.zip", tmp_path, n=4)], max_bytes=MB)
    try:
        for n in (2, 3, 4):
            assert cine.pick(0, n) == series.pick(0, n) == series.series.pick(n) == dicom.pick_slices(4, n)
        assert cine.pick(0, 2) == [1, 3]
    finally:
        cine.close()
        series.close()


def test_medical_page_says_why_the_boxes_could_not_be_drawn(caplog):
    """A drawing failure's message was shown on the page whatever the error, and may quote inputs; now a
    PocketAdaptError keeps its message and anything else shows its type and a reference to the server log,
    with the answer and the slices sent still shown."""
    from deploy.demo.panels import medical
    from model.errors import PocketAdaptError

    class Session:
        def stream(self, question, images, prompt=None):
            yield "<box>[[1, 2]]</box>"

    class Study:
        staged = None

        def model_inputs(self, index, n, window):
            return [Image.new("RGB", (32, 32))], ["slice 1"], None

    def draw(images, text):
        raise ValueError("box [1, 2] is not four numbers")

    *_, (text, drawn, labels, note) = medical.ask(Session(), "where?", Study(), draw_answer=draw)
    assert text == "<box>[[1, 2]]</box>" and len(drawn) == 1 and labels == ["slice 1"]
    assert note.startswith("**The answer is shown, but its boxes could not be drawn:**"), note
    # an unexpected error's text may quote inputs (patient data): the type and a reference on the page, the text
    # in the server log under that reference
    assert "ValueError" in note and "is not four numbers" not in note and "reference" in note, note
    ref = note.split("reference ")[-1]
    assert any(ref in r.getMessage() and "is not four numbers" in str(r.exc_info[1]) for r in caplog.records)

    def refused(images, text):
        raise PocketAdaptError("the answer names slice 9 of 1")

    *_, (_text, _drawn, _labels, note) = medical.ask(Session(), "where?", Study(), draw_answer=refused)
    assert "the answer names slice 9 of 1" in note, note  # a user-facing error keeps its message
