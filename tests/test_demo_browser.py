"""The demo pages in a real headless browser (Playwright + Debian's chromium; never `playwright install`).

Each demo runs in-process on 127.0.0.1 with a free port. Medical: asking with no study is refused in words, an
oversize upload is refused without its name (the file input forgets it), a CT DICOM with fake PHI is uploaded,
a question is asked and answered, the page text is checked for PHI. Driving: six frames with nuScenes names,
picked in alphabetical order, land in their cameras' cells; switching the view re-reads the upload and the
model gets that layout; the 3:1 image is shown whole. Remote sensing: bands and stretch are chosen on the page
and shown; a truncated GeoTIFF is reported in words. Screenshots are saved (also to $POCKET_ADAPT_ARTIFACTS
when set). Without /usr/bin/chromium the tests skip, except under CI where they fail.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import time
from pathlib import Path

import pytest

from tests.deps import in_ci, require
from tests.test_demo import PHI_STRINGS, assert_cells, nuscenes_frames, write_ct, write_geotiff

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.slow
# how long the page may take to show what an event produced: a view switch re-reads six frames, which took
# over 30 s on a CI machine whose 2 cores ran other tests too
UI_WAIT_S = 90


def _require_browser():
    missing = []
    if not CHROMIUM.exists():
        missing.append(f"{CHROMIUM} (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright Python package")
    for module in ("gradio", "pydicom"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        reason = "browser test needs " + ", ".join(missing)
        if in_ci():
            pytest.fail(reason + " (CI is set, so this is an error, not a skip)")
        pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _page_strings(page) -> str:
    """The visible text plus the values of every input / textarea (those are not in inner_text)."""
    values = page.evaluate("() => Array.from(document.querySelectorAll('input, textarea')).map(e => e.value)")
    return page.inner_text("body") + "\n" + "\n".join(v for v in values if isinstance(v, str))


@contextlib.contextmanager
def browser_page(blocks, *ready: str, on_request=None):
    """Serve `blocks` on a free loopback port and open it in headless Chromium; yields ``(page, url)`` once the
    texts `ready` and the Ask button are on the page (the controls render after the first paint)."""
    from playwright.sync_api import sync_playwright

    from deploy.demo.app import launch_demo

    _, url, share_url = launch_demo(blocks, port=_free_port(), prevent_thread_lock=True, quiet=True)
    assert url.startswith("http://127.0.0.1:") and share_url is None
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 1000})
                if on_request is not None:
                    page.on("request", lambda r: on_request(url, r))
                page.goto(url, timeout=30_000)
                for text in ready:
                    page.get_by_text(text).wait_for(timeout=30_000)
                page.get_by_role("button", name="Ask").wait_for(timeout=30_000)
                yield page, url
            finally:
                browser.close()
    finally:
        blocks.close()


def test_medical_demo_in_a_browser(tmp_path, monkeypatch):
    _require_browser()
    from deploy.demo.app import build_demo

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    dcm = write_ct(tmp_path / "DOE_JANE_PHI-998877.dcm", size=64)  # the file name itself carries PHI
    big = tmp_path / "DOE_JANE_PHI-998877_big.dcm"
    big.write_bytes(b"\0" * (6 * 2**20))  # above the 5 MB limit below
    blocks = build_demo("pocket-tiny", "medical", max_new_tokens=8, max_upload_mb=5)
    outside: list[str] = []

    def record_outside(url, request):
        if not request.url.startswith((url.rstrip("/"), "data:", "blob:")):
            outside.append(request.url)

    with browser_page(blocks, "No study uploaded yet", on_request=record_outside) as (page, url):
        assert "What to upload" in page.inner_text("body") and "Not for diagnosis" in page.inner_text("body")

        # asking before any upload: refused in words, nothing sent to the model
        page.get_by_label("Question").fill("Is there a lesion?")
        page.get_by_role("button", name="Ask").click()
        page.get_by_text("No study loaded").wait_for(timeout=15_000)
        assert page.get_by_label("Answer").input_value() == ""

        # an upload above the limit: refused, and neither the message nor the file input keeps its name
        file_input = page.locator("input[type=file]")
        file_input.set_input_files(str(big))
        page.get_by_text("maximum allowed size", exact=False).first.wait_for(timeout=30_000)
        assert file_input.evaluate("e => e.value") == "", "the browser still holds the refused file's name"
        assert "DOE" not in _page_strings(page)

        file_input.set_input_files(str(dcm))
        page.get_by_text("CT DICOM").wait_for(timeout=30_000)
        page.get_by_text("Header (de-identified)").wait_for()
        page.get_by_text("Burned-in annotation", exact=False).first.wait_for()

        page.get_by_label("Window preset").click()
        page.get_by_role("option", name="lung").click()
        page.get_by_text("window: lung (-600/1500)").wait_for(timeout=15_000)

        page.get_by_label("Question").fill("Where is the lesion?")
        page.get_by_role("button", name="Ask").click()
        answer = page.get_by_label("Answer")
        deadline = time.monotonic() + UI_WAIT_S
        while not answer.input_value() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert answer.input_value(), "no answer appeared within 30 s"

        assert file_input.evaluate("e => e.value") == ""
        text = _page_strings(page)
        assert "upload 1" in text and "CT DICOM" in text
        for phi in PHI_STRINGS:
            assert phi not in text, f"PHI {phi!r} is shown in the page"
        shot = tmp_path / "demo_medical.png"
        page.screenshot(path=str(shot), full_page=True)

        # too large after a study: the earlier study is closed and the status says why (it stayed "Ready",
        # to be asked about by mistake, with only a passing toast)
        file_input.set_input_files(str(big))
        page.get_by_text("Upload refused:").wait_for(timeout=30_000)
        text = _page_strings(page)
        assert "above the 5 MB limit of this demo" in text and "Ready:" not in text and "DOE" not in text
        page.get_by_label("Question").fill("Is there a lesion?")
        page.get_by_role("button", name="Ask").click()
        page.get_by_text("No study loaded").wait_for(timeout=15_000)

        # a closed page frees its uploads at once (they stayed until the server stopped)
        from deploy.demo.uploads import runtime_root

        file_input.set_input_files(str(dcm))
        page.get_by_text("CT DICOM").wait_for(timeout=30_000)
        assert list(runtime_root().glob("upload-*"))
        page.close()
        deadline = time.monotonic() + UI_WAIT_S
        while list(runtime_root().glob("upload-*")) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not list(runtime_root().glob("upload-*")), "the closed page's upload is still staged"
        assert not list((tmp_path / "gradio").rglob(".pocket-adapt-staged-*")), "its cached copy is still there"
    assert shot.stat().st_size > 10_000
    artifacts = os.environ.get("POCKET_ADAPT_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(artifacts) / shot.name)
    assert outside == [], f"the page fetched resources from outside the demo: {outside[:5]}"


def _save_shot(page, tmp_path, name: str) -> Path:
    shot = tmp_path / name
    page.screenshot(path=str(shot), full_page=True)
    artifacts = os.environ.get("POCKET_ADAPT_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(artifacts) / shot.name)
    return shot


def _wait_value(locator, predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = locator.input_value()
        if predicate(value):
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out; last value {locator.input_value()!r}")


def _gallery_images(page) -> list[dict]:
    """The gallery's shown images: natural size, CSS object-fit, and the shown box."""
    return page.evaluate("""() => Array.from(document.querySelectorAll('.pa-gallery img')).map(img => {
        const r = img.getBoundingClientRect();
        return {w: img.naturalWidth, h: img.naturalHeight, fit: getComputedStyle(img).objectFit,
                bw: r.width, bh: r.height};
    })""")


def test_driving_demo_in_a_browser(tmp_path, monkeypatch):
    """Real-size (1600×900) frames with nuScenes names, picked in the order a file dialog lists them."""
    _require_browser()
    from deploy.demo.app import build_demo
    from deploy.demo.session import ModelSession
    from domains.driving.layout import STITCHED_PREFIX

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    frames = nuscenes_frames(tmp_path / "sample", size=(1600, 900))
    assert "CAM_BACK_LEFT" in frames[0].name  # alphabetical: not the stitched order
    session = ModelSession("pocket-tiny", max_new_tokens=6)
    sent, stitched = [], []  # what the model is given
    real = session.stream

    def spy(question, images, prompt=None, **kw):
        sent.append((len(images), [im.size for im in images], prompt))
        if len(images) == 1:
            stitched.append(images[0].copy())
        yield from real(question, images, prompt=prompt, **kw)

    monkeypatch.setattr(session, "stream", spy)
    blocks = build_demo(session, "driving", max_upload_mb=20)
    with browser_page(blocks, "No file uploaded yet", "Order of the six images") as (page, url):
        body = page.inner_text("body")
        assert "What to upload" in body and "six camera frames" in body and "stitched" in body
        assert "Not for diagnosis" not in body, "the medical disclaimer belongs to the medical page"
        page.get_by_label("Question").fill("What is ahead?")
        page.get_by_role("button", name="Ask").click()
        page.get_by_text("No upload yet").wait_for(timeout=15_000)

        file_input = page.locator("input[type=file]")
        file_input.set_input_files([str(f) for f in frames])
        page.get_by_text("Ready:").wait_for(timeout=60_000)
        assert file_input.evaluate("e => e.value") == ""
        text = _page_strings(page)
        assert "read from the file names" in text and "upload-" not in text and "n008" not in text
        deadline = time.monotonic() + UI_WAIT_S
        while not (shown := _gallery_images(page)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(shown) == 1 and abs(shown[0]["w"] / shown[0]["h"] - 3) < 0.01
        assert shown[0]["fit"] == "contain", "the 3:1 image would be cropped to the thumbnail's shape"
        _save_shot(page, tmp_path, "demo_driving_stitched.png")

        page.get_by_role("button", name="Ask").click()
        answer = page.get_by_label("Answer")
        _wait_value(answer, bool)
        assert sent[-1][0] == 1 and sent[-1][2] == STITCHED_PREFIX
        assert_cells(stitched[-1])  # each camera in its own cell, whatever the pick order

        # switch the view after the upload: read again, the model gets six images
        page.get_by_role("radio", name="multi").check()
        deadline = time.monotonic() + UI_WAIT_S
        while len(_gallery_images(page)) != 6 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(_gallery_images(page)) == 6
        answer.evaluate("e => { e.value = ''; }")
        before = len(sent)
        page.get_by_role("button", name="Ask").click()
        deadline = time.monotonic() + UI_WAIT_S
        while len(sent) == before and time.monotonic() < deadline:
            time.sleep(0.2)
        _wait_value(answer, bool)
        assert sent[-1][0] == 6 and sent[-1][2].count("<image>") == 6
        assert all(size == (1600, 900) for size in sent[-1][1])
        time.sleep(1)
        assert "Could not" not in page.inner_text("body")
        _save_shot(page, tmp_path, "demo_driving_multi.png")


def test_remote_sensing_demo_in_a_browser(tmp_path, monkeypatch):
    _require_browser()
    require("rasterio")

    from deploy.demo.app import build_demo

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    tif = write_geotiff(tmp_path / "site_A.tif", bands=4, descriptions=["B02", "B03", "B04", "B08"])
    whole = tif.read_bytes()
    cut = tmp_path / "site_B.tif"
    cut.write_bytes(whole[: len(whole) // 2])
    blocks = build_demo("pocket-tiny", "remote_sensing", max_new_tokens=6, max_upload_mb=5)
    with browser_page(blocks, "No file uploaded yet", "Stretch to 8 bits") as (page, url):
        body = page.inner_text("body")
        assert "What to upload" in body and "GeoTIFF" in body and "Not for diagnosis" not in body
        assert "Bands for red, green, blue" in body and "Stretch to 8 bits" in body

        file_input = page.locator("input[type=file]")
        file_input.set_input_files(str(tif))
        page.get_by_text("Ready:").wait_for(timeout=60_000)
        page.get_by_text("3, 2, 1 (B04, B03, B02) as red, green, blue").wait_for(timeout=10_000)
        page.get_by_text("2–98 percentiles per band", exact=False).wait_for()

        bands = page.get_by_label("Bands for red, green, blue", exact=False)
        bands.fill("B08,B04,B03")
        bands.press("Enter")
        page.get_by_text("4, 3, 2 (B08, B04, B03) as red, green, blue").wait_for(timeout=15_000)
        page.get_by_role("radio", name="min–max per band").check()
        page.get_by_text("0–100 percentiles per band", exact=False).wait_for(timeout=15_000)
        _save_shot(page, tmp_path, "demo_remote_sensing.png")

        file_input.set_input_files(str(cut))
        page.get_by_text("cut short (an interrupted download or copy?)", exact=False).wait_for(timeout=30_000)
        body = page.inner_text("body")
        assert "TIFFRead" not in body and "IReadBlock" not in body and "site_B" not in body
