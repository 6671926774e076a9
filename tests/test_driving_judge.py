"""The DriveLM LLM judge against a local chat-completions server (127.0.0.1, no network)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest

from domains.base import DomainError
from domains.driving import layout
from domains.driving.judge import (
    DRIVELM_PROMPT,
    DRIVELM_SYSTEM,
    Judge,
    JudgeConfig,
    JudgeError,
    parse_rating,
)
from domains.driving.metrics import (
    NOTE_NO_JUDGE,
    aggregate_drivelm,
    final_score,
    match_points,
    pixel_points,
)

KEY_ENV = "POCKET_ADAPT_TEST_JUDGE_KEY"
SECRET = "sk-test-secret-123"


class FakeJudgeServer:
    """Answers chat completions: the rating in `replies` for the rated answer (default "80"), or an error."""

    def __init__(self):
        self.requests: list[dict] = []
        self.replies: dict[str, object] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                answer = body["messages"][1]["content"].split("This is my answer: ", 1)[1]
                reply = server.replies.get(answer, "80")
                if isinstance(reply, int):  # an HTTP error status, with the key echoed back as some servers do
                    data = json.dumps({"error": f"bad request for key {self.headers.get('Authorization')}"}).encode()
                    self.send_response(reply)
                else:
                    data = json.dumps({"choices": [{"message": {"role": "assistant", "content": reply}}],
                                       "usage": {"total_tokens": 3}}).encode()
                    self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def server(monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)
    srv = FakeJudgeServer()
    yield srv
    srv.close()


def judge_config(server, **extra):
    return {"url": server.url, "model": "judge-model", "api_key_env": KEY_ENV, "timeout": 5, "retries": 0, **extra}


# --------------------------------------------------------------------------------------------- client
def test_judge_sends_drivelm_prompt_and_reads_the_rating(server):
    server.replies["my answer"] = "85"
    judge = Judge(judge_config(server))
    assert judge.rate("my answer", "the correct answer") == 85.0
    req = server.requests[-1]
    assert req["path"] == "/v1/chat/completions"
    assert req["headers"]["Authorization"] == f"Bearer {SECRET}"
    body = req["body"]
    assert body["model"] == "judge-model" and body["temperature"] == 0.6
    assert body["messages"] == [
        {"role": "system", "content": DRIVELM_SYSTEM},
        {"role": "user", "content": DRIVELM_PROMPT + "This is the correct answer: the correct answer"
                                    + "This is my answer: my answer"}]
    assert SECRET not in repr(judge) and SECRET not in repr(judge.config)


def test_parse_rating():
    assert parse_rating("85") == 85.0
    assert parse_rating("<think>maybe 20?</think>\n62") == 62.0
    assert parse_rating("The answer names 2 of 3 cars.</think>\n62") == 62.0  # opening tag stripped by the server
    with pytest.raises(JudgeError, match="no number"):  # cut off while reasoning: its numbers are no rating
        parse_rating("<think>The answer names 3 cars, the reference 4")
    assert parse_rating("Score: 77/100") == 77.0
    assert parse_rating("Score: 77 / 100.") == 77.0
    assert parse_rating("1e2") == 100.0  # not 1
    with pytest.raises(JudgeError, match="'8/10' is not out of 100"):  # another scale: not 8 of 100
        parse_rating("8/10")
    for bad in ("great answer", "150", "", "5e3"):
        with pytest.raises(JudgeError):
            parse_rating(bad)


def test_parse_rating_reads_the_scale_written_in_words():
    """"8 out of 10" was read as 8 (of 100) while "8/10" was refused: a rating on another scale scored a tenth of
    what the judge meant. The judge rates out of 100 (DriveLM's prompt), so a scale in words is checked the same."""
    assert parse_rating("77 out of 100") == 77.0
    assert parse_rating("Rating: 85 (out of 100).") == 85.0
    for bad in ("8 out of 10", "I'd give it 8 Out Of 10", "score of 7 (out of 10)", "8 / 10", "Rating: 8.5/10", "8/5"):
        with pytest.raises(JudgeError, match="is not out of 100"):
            parse_rating(bad)


def test_failures_are_counted_not_scored_and_the_key_is_masked(server):
    server.replies.update({"broken": 500, "denied": 401, "chatty": "I cannot rate this."})
    judge = Judge(judge_config(server))
    scores, errors = judge.rate_many([("fine", "ref"), ("broken", "ref"), ("denied", "ref"), ("chatty", "ref")],
                                     progress=False)
    assert scores == [80.0, None, None, None]
    assert len(errors) == 3
    assert any("HTTP 500" in e for e in errors) and any("HTTP 401" in e for e in errors)
    assert any("no number" in e for e in errors)
    assert all(SECRET not in e for e in errors) and any("***" in e for e in errors)
    with pytest.raises(JudgeError, match="HTTP 500"):
        judge.rate("broken", "ref")


def test_unreachable_server_is_an_error(monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    judge = Judge({"url": "http://127.0.0.1:9/v1/chat/completions", "model": "m", "timeout": 2, "retries": 0})
    assert judge.config.endpoint == "http://127.0.0.1:9/v1/chat/completions"
    with pytest.raises(JudgeError, match="cannot reach"):
        judge.rate("a", "b")


def test_config_validation(monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(ValueError, match="'url'"):
        JudgeConfig.from_mapping({"model": "m"})
    with pytest.raises(ValueError, match="http"):
        JudgeConfig.from_mapping({"url": "file:///etc/passwd", "model": "m"})
    with pytest.raises(ValueError, match="unknown keys"):
        JudgeConfig.from_mapping({"url": "https://x", "model": "m", "api_key": "sk-inline"})
    with pytest.raises(ValueError, match="timeout"):
        JudgeConfig.from_mapping({"url": "https://x", "model": "m", "timeout": 0})
    with pytest.raises(ValueError, match=KEY_ENV):
        Judge({"url": "https://x", "model": "m", "api_key_env": KEY_ENV})


@pytest.mark.parametrize("url", ["http://judge.example.com/v1", "http://10.0.0.5:8000/v1", "http://[2001:db8::1]/v1",
                                 "http://127.0.0.1.example.com/v1", "https:///v1"])
def test_plain_http_to_another_machine_is_refused(url):
    with pytest.raises(DomainError, match="http"):
        JudgeConfig.from_mapping({"url": url, "model": "m"})


@pytest.mark.parametrize("url", ["https://judge.example.com/v1", "http://127.0.0.1:8000/v1", "http://127.1.2.3/v1",
                                 "http://localhost:11434/v1", "http://[::1]:8000/v1", "HTTP://LOCALHOST/v1"])
def test_https_anywhere_and_http_to_this_machine_are_accepted(url):
    assert JudgeConfig.from_mapping({"url": url, "model": "m"}).url == url


def test_the_judge_follows_no_redirect_and_so_never_forwards_its_key(server, monkeypatch):
    class Redirect(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(307)
            self.send_header("Location", server.url + "/chat/completions")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    try:
        judge = Judge(judge_config(server, url=f"http://127.0.0.1:{httpd.server_address[1]}/v1"))
        scores, errors = judge.rate_many([("Go.", "Go.")], progress=False)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert scores == [None] and "redirect (HTTP 307)" in errors[0]
    assert server.requests == []  # the redirect target never saw the request, nor the key


def test_http_to_this_machine_ignores_an_environment_proxy(server, monkeypatch):
    # urllib reads the proxy variables when an opener is built (at import): the judge runs in a fresh process
    proxy = FakeJudgeServer()  # stands in for a proxy elsewhere: it would read the bearer key in clear
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("no_proxy", "http_proxy", "all_proxy")}
    env.update(http_proxy=proxy.url.removesuffix("/v1"), all_proxy=proxy.url.removesuffix("/v1"))
    code = ("import json, sys; from domains.driving.judge import Judge; "
            "print(Judge(json.loads(sys.argv[1])).rate('Go.', 'Go.'))")
    try:
        out = subprocess.run([sys.executable, "-c", code, json.dumps(judge_config(server))], env=env, text=True,
                             capture_output=True, cwd=Path(__file__).resolve().parents[1], timeout=60)
    finally:
        proxy.close()
    assert out.returncode == 0, out.stderr
    assert proxy.requests == [] and len(server.requests) == 1 and out.stdout.strip() == "80.0"
    assert server.requests[0]["headers"]["Authorization"] == f"Bearer {SECRET}"


# --------------------------------------------------------------------------------------------- final score
def tag(obj, camera, x, y):
    return layout.render_ctag(obj, camera, *layout.to_stitched(x, y, camera))


def pred(prediction, drivelm_tag, answer_pixels):
    meta = {"drivelm_tag": drivelm_tag, "view_mode": "stitched", "answer_pixels": answer_pixels}
    return SimpleNamespace(prediction=prediction, reference="", meta=meta, task="drivelm", scores={})


def corpus():
    return [
        pred("A", 0, "A"),
        pred("No.", 0, "Yes."),
        pred("Slow down and stop.", 1, "Keep going at the same speed."),
        pred("Turn left.", 1, "Turn left at the intersection."),
        pred("There is a car to the front of the ego vehicle.", 2, "There is a truck to the front of the ego vehicle."),
        pred("There is a red light.", 2, "There is a green light."),
        pred(f"Notice {tag(1, 'CAM_BACK', 1090.0, 500.0)} first.", 3,
             "Notice <c1,CAM_BACK,1088.3,497.5> first, then <c2,CAM_FRONT,700.0,400.0>."),
    ]


def test_final_score_with_a_judge(server):
    server.replies.update({"Slow down and stop.": "20", "Turn left.": "90",
                           "Notice <c1,CAM_BACK,1090.0,500.0> first.": "70"})
    out = aggregate_drivelm(corpus(), {"judge": judge_config(server), "progress": False})
    assert out["chatgpt"] == pytest.approx(55.0)
    f1 = match_points(pixel_points("<c1,CAM_BACK,1090.0,500.0>"),
                      pixel_points("<c1,CAM_BACK,1088.3,497.5> <c2,CAM_FRONT,700.0,400.0>"))[1]
    assert out["match_f1"] == pytest.approx(f1)
    assert out["match"] == pytest.approx((f1 * 100 + 70.0) / 2)
    assert out["accuracy"] == pytest.approx(0.5)
    assert out["final_score"] == pytest.approx(final_score(chatgpt=55.0, language=out["language"],
                                                           match=out["match"], accuracy=0.5))
    assert out["final_score"] == pytest.approx(
        0.4 * 0.55 + 0.2 * out["language"] + 0.2 * out["match"] / 100 + 0.2 * 0.5)
    assert out["final_score_no_judge"] == pytest.approx(0.2 * out["language"] + 0.2 * 0.5 + 0.1 * f1)
    assert NOTE_NO_JUDGE not in out["notes"]
    # the judge saw the predictions with their c-tags back in camera pixels (DriveLM's form)
    rated = [r["body"]["messages"][1]["content"].split("This is my answer: ")[1] for r in server.requests]
    assert sorted(rated) == sorted(["Slow down and stop.", "Turn left.", "Notice <c1,CAM_BACK,1090.0,500.0> first."])


def test_judge_failures_and_missing_key_are_reported(server, monkeypatch):
    server.replies["Slow down and stop."] = 500
    out = aggregate_drivelm(corpus(), {"judge": judge_config(server), "progress": False})
    assert out["chatgpt"] == pytest.approx(80.0)  # only "Turn left." was rated
    assert any("LLM judge failed on 1 of 3 samples" in n for n in out["notes"])
    assert all(SECRET not in n for n in out["notes"])

    monkeypatch.delenv(KEY_ENV)
    out = aggregate_drivelm(corpus(), {"judge": judge_config(server), "progress": False})
    assert out["chatgpt"] is None and out["match"] is None and out["final_score"] is None
    assert out["final_score_no_judge"] is not None
    assert any("LLM judge not used" in n and KEY_ENV in n for n in out["notes"])

    out = aggregate_drivelm(corpus(), {})  # no judge configured
    assert out["final_score"] is None and NOTE_NO_JUDGE in out["notes"]


def test_a_recipe_with_a_plain_http_judge_elsewhere_is_invalid():
    from adapt.recipe import RecipeError, load_recipe
    from model.resources import templates_dir

    quickstart = templates_dir() / "recipes" / "quickstart.yaml"
    with pytest.raises(RecipeError, match="eval.judge.url: .* plain http to another machine"):
        load_recipe(quickstart, ['eval.judge={url: "http://10.1.1.1/v1", model: m}'])
    assert load_recipe(quickstart, ['eval.judge={url: "http://127.0.0.1:8000/v1", model: m}']).eval.judge.url


def test_a_judge_config_built_directly_is_checked_like_one_from_a_recipe():
    """`Judge(JudgeConfig(url="http://elsewhere/v1", ...))` skipped the https / loopback check that from_mapping
    makes, so the bearer key could go out in clear."""
    from domains.base import DomainError
    from domains.driving.judge import JudgeConfig

    with pytest.raises(DomainError, match="https"):
        JudgeConfig(url="http://example.invalid/v1", model="m", api_key_env="JK")
    assert JudgeConfig(url=" http://127.0.0.1:8000/v1 ", model="m").url == "http://127.0.0.1:8000/v1"


def test_a_reply_cut_off_mid_body_is_one_failed_answer_and_is_retried(server):
    """A server that promises more bytes than it sends (http.client.IncompleteRead) or closes without a status line
    (BadStatusLine) raised past `rate_many` and ended the whole evaluation with a traceback."""
    calls = []

    class CutOff(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            calls.append(1)
            if len(calls) % 2:  # every other request: a body cut short, then a garbled status line
                self.send_response(200)
                self.send_header("Content-Length", "500")
                self.end_headers()
                self.wfile.write(b'{"choices": [')
            else:
                self.wfile.write(b"garbage\r\n\r\n")
            self.close_connection = True

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), CutOff)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    try:
        judge = Judge(judge_config(server, url=f"http://127.0.0.1:{httpd.server_address[1]}/v1", retries=1))
        scores, errors = judge.rate_many([("Go.", "Go.")], progress=False)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert scores == [None] and len(calls) == 2  # retried once, then counted as one failed answer
    assert "broke off" in errors[0] and SECRET not in errors[0]
