"""The medical demo in a real headless browser (Playwright + Debian's chromium; never `playwright install`).

The demo runs in-process on 127.0.0.1 with a free port; a CT DICOM with fake PHI is uploaded, a question is
asked and answered, the page text is checked for PHI, and a screenshot is saved (also to
$POCKET_ADAPT_ARTIFACTS when set). Without /usr/bin/chromium the test skips, except under CI where it fails.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from pathlib import Path

import pytest

from tests.test_demo import PHI_STRINGS, write_ct

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.slow


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
        if os.environ.get("CI"):
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


def test_medical_demo_in_a_browser(tmp_path, monkeypatch):
    _require_browser()
    from playwright.sync_api import sync_playwright

    from deploy.demo.app import build_demo, launch_demo

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    dcm = write_ct(tmp_path / "DOE_JANE_PHI-998877.dcm", size=64)  # the file name itself carries PHI
    blocks = build_demo("pocket-tiny", "medical", max_new_tokens=8, max_upload_mb=5)
    _, url, share_url = launch_demo(blocks, port=_free_port(), prevent_thread_lock=True, quiet=True)
    assert url.startswith("http://127.0.0.1:") and share_url is None
    outside: list[str] = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 1000})
                page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(url.rstrip("/"))
                        and not r.url.startswith(("data:", "blob:")) else None)
                page.goto(url, timeout=30_000)
                page.get_by_text("No study uploaded yet").wait_for(timeout=30_000)

                page.locator("input[type=file]").set_input_files(str(dcm))
                page.get_by_text("CT DICOM").wait_for(timeout=30_000)
                page.get_by_text("Header (de-identified)").wait_for()
                page.get_by_text("Burned-in annotation", exact=False).first.wait_for()

                page.get_by_label("Window preset").click()
                page.get_by_role("option", name="lung").click()
                page.get_by_text("window: lung (-600/1500)").wait_for(timeout=15_000)

                page.get_by_label("Question").fill("Where is the lesion?")
                page.get_by_role("button", name="Ask").click()
                answer = page.get_by_label("Answer")
                deadline = time.monotonic() + 30
                while not answer.input_value() and time.monotonic() < deadline:
                    time.sleep(0.2)
                assert answer.input_value(), "no answer appeared within 30 s"

                text = _page_strings(page)
                assert "upload 1" in text and "CT DICOM" in text
                for phi in PHI_STRINGS:
                    assert phi not in text, f"PHI {phi!r} is shown in the page"
                shot = tmp_path / "demo_medical.png"
                page.screenshot(path=str(shot), full_page=True)
            finally:
                browser.close()
    finally:
        blocks.close()
    assert shot.stat().st_size > 10_000
    artifacts = os.environ.get("POCKET_ADAPT_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(artifacts) / shot.name)
    assert outside == [], f"the page fetched resources from outside the demo: {outside[:5]}"
