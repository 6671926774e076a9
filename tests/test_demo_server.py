"""The demo as a running server on 127.0.0.1 (no browser): upload limits, identical uploads at once, and what
is left on disk after SIGTERM. Files are uploaded through gradio_client, the way the page uploads them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from tests.deps import require

gradio = require("gradio")

from deploy.demo import app as demo_app  # noqa: E402
from deploy.demo.uploads import OWNER_FILE, RUNTIME_PREFIX, _start_token  # noqa: E402
from domains.files import HOST_TAG  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def png(path: Path, colour=(5, 6, 7)) -> Path:
    Image.new("RGB", (40, 30), colour).save(path)
    return path


@pytest.fixture
def served(monkeypatch):
    """A general demo served in this process; Gradio's cache is the demo's private one."""
    monkeypatch.delenv("GRADIO_TEMP_DIR", raising=False)
    blocks = demo_app.build_demo("pocket-tiny", "general", max_new_tokens=4, max_upload_mb=1)
    _, url, _ = demo_app.launch_demo(blocks, port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        yield url
    finally:
        blocks.close()


def test_the_page_is_not_told_the_limit_and_the_server_refusal_names_no_file(served, tmp_path):
    import json

    import httpx

    config = json.load(urllib.request.urlopen(served + "config", timeout=10))
    # the page would check the size itself and name the file (often a patient's name) in its message
    assert config["max_file_size"] is None
    big = tmp_path / "DOE_JANE_1970.png"
    big.write_bytes(b"\0" * (2 * 2**20))
    refused = httpx.post(served + "gradio_api/upload", files={"files": (big.name, big.read_bytes())}, timeout=30)
    assert refused.status_code == 413 and "DOE" not in refused.text and "maximum allowed size" in refused.text
    cache = Path(os.environ["GRADIO_TEMP_DIR"])
    assert not any("DOE" in p.name for p in cache.rglob("*"))


def test_twenty_identical_uploads_at_once_all_succeed(served, tmp_path):
    """Gradio caches identical files under one path; before per-request staging 19 of 20 failed."""
    from gradio_client import Client, handle_file

    same = png(tmp_path / "DOE_JANE.png")
    client = Client(served, verbose=False, download_files=False)
    jobs = [client.submit([handle_file(str(same))], api_name="/on_upload") for _ in range(20)]
    statuses = [job.result(timeout=120)[0] for job in jobs]
    assert statuses == ["**Ready:** upload 1 (1 image)"] * 20
    cache = Path(os.environ["GRADIO_TEMP_DIR"])
    assert not any("DOE" in p.name for p in cache.rglob("*"))


@pytest.mark.slow
def test_ctrl_c_ends_adapt_demo_with_status_130(tmp_path):
    """Ctrl+C on a serving `adapt demo` is an interrupt as for every verb: "adapt demo: interrupted", status 130
    (Gradio's block_thread swallowed it: the demo printed Gradio's own line and ended with status 0)."""
    out, err = tmp_path / "out.log", tmp_path / "err.log"
    env = {k: v for k, v in os.environ.items() if k != "GRADIO_TEMP_DIR"}
    env.update(TMPDIR=str(tmp_path), PYTHONPATH=str(REPO))
    with out.open("w") as stdout, err.open("w") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "adapt", "demo", "--model", "pocket-tiny", "--port",
                                 str(free_port())], cwd=tmp_path, env=env, stdout=stdout, stderr=stderr,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as a terminal's
    try:
        deadline = time.monotonic() + 180
        while "(Ctrl+C to stop)" not in err.read_text():  # printed once serving, right before the wait for Ctrl+C
            assert proc.poll() is None, err.read_text()[-2000:]
            assert time.monotonic() < deadline, "the demo did not start within 180 s"
            time.sleep(0.2)
        time.sleep(1)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    said = out.read_text() + err.read_text()
    assert proc.returncode == 130, said
    assert said.rstrip().endswith("adapt demo: interrupted") and "Keyboard interruption" not in said, said


@pytest.mark.slow
def test_sigterm_removes_the_staged_uploads_and_a_start_sweeps_ended_demos(tmp_path):
    """`python -m deploy.demo` with TMPDIR pointed here: at start it removes the folder of a demo that has
    ended (never a live one); a study is uploaded; SIGTERM; nothing of the upload is left."""
    from gradio_client import Client, handle_file

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    dead_pid = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                                  text=True, check=True).stdout)
    dead = tmp / f"{RUNTIME_PREFIX}{dead_pid}-old"
    (dead / "upload-x").mkdir(parents=True)
    (dead / "upload-x" / "upload-1.dcm").write_bytes(b"PHI of an ended demo")
    (dead / OWNER_FILE).write_text(f"{dead_pid}@{HOST_TAG} 1\n")
    live = tmp / f"{RUNTIME_PREFIX}{os.getpid()}-live"  # a demo still running (this test process)
    live.mkdir()
    (live / OWNER_FILE).write_text(f"{os.getpid()}@{HOST_TAG} {_start_token(os.getpid())}\n")

    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "GRADIO_TEMP_DIR"}
    env.update(TMPDIR=str(tmp), PYTHONPATH=str(REPO))
    log = (tmp_path / "demo.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "deploy.demo", "--domain", "medical", "--model", "pocket-tiny",
                             "--port", str(port), "--max-new-tokens", "4"], cwd=REPO, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, (tmp_path / "demo.log").read_text()[-2000:]
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline, "the demo did not start within 180 s"
                time.sleep(0.5)
        assert not dead.exists(), "the folder of an ended demo is swept at start"
        assert live.exists(), "a live demo's folder is never touched"

        client = Client(url, verbose=False, download_files=False)
        out = client.predict([handle_file(str(png(tmp_path / "DOE_JANE_1970.png")))], api_name="/on_upload")
        assert "Ready" in out[0], out
        (root,) = tmp.glob(f"{RUNTIME_PREFIX}{proc.pid}-*")
        assert oct(root.stat().st_mode & 0o777) == "0o700"
        staged = list(root.glob("upload-*/upload-1.png"))
        assert len(staged) == 1, "the study is held staged while the page is open"
        assert (root / "gradio").is_dir(), "Gradio's cache is inside the private folder"
        assert not any("DOE" in p.name for p in tmp.rglob("*"))

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == -signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    assert not root.exists(), f"left after SIGTERM: {sorted(p.name for p in root.rglob('*'))[:10]}"
    assert live.exists()


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 0, -5, "10"])
def test_launch_refuses_an_upload_limit_that_cannot_work_before_serving(bad, monkeypatch):
    """launch_demo's own max_upload_mb went unchecked: nan / inf failed inside the launch call with a raw
    ValueError / OverflowError, 0 or less served a page that refused every upload."""
    from deploy.demo.page import DemoError

    blocks = gradio.Blocks()
    monkeypatch.setattr(blocks, "launch", lambda *a, **k: pytest.fail("the demo was served"))
    with pytest.raises(DemoError, match=r"max_upload_mb must be a positive number of MB, got "):
        demo_app.launch_demo(blocks, port=free_port(), max_upload_mb=bad)
