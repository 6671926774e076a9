"""The LLM judge of the DriveLM score: an OpenAI-compatible chat-completions client (standard library only).

DriveLM (``challenge/gpt_eval.py``) asks ``gpt-3.5-turbo`` at temperature 0.6 to rate an answer against the
correct one "out of 100" and reads the number it replies; the ``chatgpt`` term averages those ratings and the
``match`` term mixes them with the coordinate F1. :class:`Judge` sends the same system and user messages to
any server that speaks the chat-completions protocol (OpenAI, vLLM, llama.cpp, Ollama, ...).

Configuration (``adapt eval``'s ``judge`` setting, a mapping):

* ``url``: the server's base URL (``https://api.openai.com/v1``) or the full ``.../chat/completions`` URL;
  https, or plain http only to this machine (``http://127.0.0.1:8000/v1``); redirects are not followed, and a
  request to this machine ignores the environment's proxies (``http_proxy``); https may go through one (TLS);
* ``model``: the model name the server expects;
* ``api_key_env`` (optional): the name of the environment variable holding the API key. The key is read
  from the environment when the judge is built, sent as a bearer token, never stored in the configuration,
  never logged, and masked in error messages;
* ``timeout`` (seconds, default 60), ``temperature`` (0.6), ``max_tokens`` (3000, as DriveLM),
  ``workers`` (parallel requests, 4), ``retries`` (extra tries on 429 / 5xx / connection errors, 2).

A sample whose request fails or whose reply holds no rating in 0..100 gets no score (``None``) and an error
message; callers count those instead of scoring them 0.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from domains.base import DomainError
from model.errors import PocketAdaptError
from model.hosts import is_loopback
from model.progress import Progress, progress_bar

__all__ = ["DRIVELM_PROMPT", "DRIVELM_SYSTEM", "Judge", "JudgeConfig", "JudgeError", "judge_messages",
           "parse_rating"]

# DriveLM's judge prompt (challenge/gpt_eval.py), kept word for word so ratings are comparable
DRIVELM_SYSTEM = "an evaluator who rates my answer based on the correct answer"
DRIVELM_PROMPT = ("Rate my answer based on the correct answer out of 100, with higher scores indicating that the "
                  "answer is closer to the correct answer, and you should be accurate to single digits like 62, "
                  "78, 41,etc. Output the number only")


class JudgeError(PocketAdaptError, RuntimeError):
    """One judge request failed or its reply held no rating."""


def check_judge_url(url: str) -> str:
    """`url` stripped, or a `DomainError`: the judge gets answers (and a bearer key) only over https, or over
    plain http to this machine (a local server: vLLM, llama.cpp, Ollama)."""
    url = url.strip()
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DomainError(f"judge url must be https://HOST/… (or http:// to this machine), got {url!r}")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise DomainError(f"judge url {url!r} is plain http to another machine: the answers and the API key would "
                          "cross the network unencrypted; use https://, or http:// only to localhost / 127.0.0.1")
    return url


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect could send the bearer key to another host (or over http): the judge follows none."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        raise JudgeError(f"{req.full_url} answered with a redirect (HTTP {code}); the judge follows none, as it "
                         "would carry the API key elsewhere: give the final URL as judge.url")


# A loopback or plain-http request never goes through a proxy from the environment (http_proxy, all_proxy): the
# proxy would read the answers and the bearer key in clear. https may use one: TLS runs through its CONNECT tunnel.
_DIRECT_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirects)
_OPENER = urllib.request.build_opener(_NoRedirects)


def _opener_for(url: str) -> urllib.request.OpenerDirector:
    """The opener for `url`: no proxy for plain http or a loopback host, the environment's proxies for https."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "https" or is_loopback(parts.hostname or ""):
        return _DIRECT_OPENER
    return _OPENER


@dataclass(frozen=True)
class JudgeConfig:
    """Where and how to ask the judge (see the module docstring). Holds no secret: only the variable name."""

    url: str
    model: str
    api_key_env: str | None = None
    timeout: float = 60.0
    temperature: float = 0.6
    max_tokens: int = 3000
    workers: int = 4
    retries: int = 2

    def __post_init__(self) -> None:  # however it is built: the key never goes out over plain http elsewhere
        if not isinstance(self.url, str):
            raise DomainError(f"judge config needs 'url' (a non-empty string), got {self.url!r}")
        object.__setattr__(self, "url", check_judge_url(self.url))

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any]) -> JudgeConfig:
        """Build from ``{"url", "model", "api_key_env", "timeout", ...}``; ValueError naming a bad key
        (TypeError when `cfg` is not a mapping)."""
        if not isinstance(cfg, Mapping):
            raise TypeError(f"judge config must be a mapping with url and model, got {type(cfg).__name__}")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise DomainError(f"judge config has unknown keys {unknown}; known: {sorted(known)}")
        for key in ("url", "model"):
            if not isinstance(cfg.get(key), str) or not cfg[key].strip():
                raise DomainError(f"judge config needs {key!r} (a non-empty string)")
        url = check_judge_url(cfg["url"])
        values = {k: cfg[k] for k in known if cfg.get(k) is not None}
        values["url"] = url
        try:
            out = cls(**values)
            numbers = (float(out.timeout), float(out.temperature), int(out.max_tokens), int(out.workers),
                       int(out.retries))
        except (TypeError, ValueError) as exc:
            raise DomainError(f"judge config has a value of the wrong type: {exc}") from None
        if numbers[0] <= 0 or numbers[2] < 1 or numbers[3] < 1 or numbers[4] < 0:
            raise DomainError("judge config needs timeout > 0, max_tokens >= 1, workers >= 1 and retries >= 0")
        return out

    @property
    def endpoint(self) -> str:
        """The chat-completions URL: `url` itself when it already ends with ``/chat/completions``."""
        url = self.url.rstrip("/")
        return url if url.endswith("/chat/completions") else url + "/chat/completions"


def judge_messages(answer: str, reference: str) -> list[dict[str, str]]:
    """DriveLM's chat messages asking to rate `answer` against `reference` (the correct answer)."""
    prompt = DRIVELM_PROMPT + "This is the correct answer: " + reference + "This is my answer: " + answer
    return [{"role": "system", "content": DRIVELM_SYSTEM}, {"role": "user", "content": prompt}]


_THINK = re.compile(r"<think>.*?</think>", re.DOTALL)
# a number, and the scale it is written on: "77/100", "8 / 10", "8 out of 10", "7 (out of 10)"
_NUMBER = re.compile(r"(?P<value>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)"
                     r"(?:\s*/\s*(?P<scale>\d+(?:\.\d+)?)|\s*\(?\s*out\s+of\s+(?P<out_of>\d+(?:\.\d+)?)\)?)?", re.I)


def parse_rating(reply: str) -> float:
    """The rating in a judge reply: its first number (after any ``<think>`` block), which must lie in 0..100; one
    written on a scale must be out of 100 (``77/100``, ``77 out of 100``; ``8/10`` and ``8 out of 10`` are refused,
    not read as 8 of 100).

    Reasoning left open (a reply cut at ``max_tokens`` inside ``<think>``) or closed without its opening tag (a
    server that strips ``<think>``) is no rating either: its numbers are the judge's working, not its score."""
    text = _THINK.sub(" ", str(reply or ""))
    text = text.rpartition("</think>")[2].partition("<think>")[0]
    m = _NUMBER.search(text)
    if m is None:
        raise JudgeError(f"judge reply holds no number: {text.strip()[:80]!r}")
    value = float(m["value"])
    scale = m["scale"] or m["out_of"]
    if scale is not None and float(scale) != 100.0:  # "8/10", "8 out of 10": another scale, not 8 of 100
        raise JudgeError(f"judge rating {m.group(0)!r} is not out of 100 (reply {text.strip()[:80]!r})")
    if not 0.0 <= value <= 100.0:
        raise JudgeError(f"judge rating {value:g} is outside 0..100 (reply {text.strip()[:80]!r})")
    return value


class Judge:
    """A chat-completions client that rates answers the DriveLM way."""

    def __init__(self, config: JudgeConfig | Mapping[str, Any]):
        self.config = config if isinstance(config, JudgeConfig) else JudgeConfig.from_mapping(config)
        self._key: str | None = None
        if self.config.api_key_env:
            key = os.environ.get(self.config.api_key_env, "").strip()
            if not key:
                raise DomainError(f"the judge's API key variable {self.config.api_key_env!r} is not set or empty")
            self._key = key

    def __repr__(self) -> str:  # never shows the key
        return f"Judge(endpoint={self.config.endpoint!r}, model={self.config.model!r})"

    def _redact(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    def _post(self, body: dict) -> dict:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        request = urllib.request.Request(self.config.endpoint, data=json.dumps(body).encode("utf-8"),
                                         headers=headers, method="POST")
        opener = _opener_for(self.config.endpoint)  # https or loopback: checked
        with opener.open(request, timeout=float(self.config.timeout)) as response:
            return json.loads(response.read().decode("utf-8"))

    def rate(self, answer: str, reference: str) -> float:
        """The judge's 0..100 rating of `answer` against `reference`; JudgeError when it cannot be had."""
        body = {"model": self.config.model, "messages": judge_messages(answer, reference),
                "temperature": float(self.config.temperature), "max_tokens": int(self.config.max_tokens)}
        last = ""
        for attempt in range(int(self.config.retries) + 1):
            if attempt:
                time.sleep(min(2.0 ** attempt, 10.0) * 0.5)
            try:
                reply = self._post(body)
            except urllib.error.HTTPError as exc:
                detail = exc.read().decode("utf-8", "replace")[:200] if exc.fp else ""
                last = f"HTTP {exc.code} from {self.config.endpoint}: {detail.strip()}"
                if exc.code == 429 or exc.code >= 500:
                    continue
                break
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                last = f"cannot reach {self.config.endpoint}: {getattr(exc, 'reason', exc)}"
                continue
            except http.client.HTTPException as exc:  # a reply cut short or garbled: worth another try
                last = f"reply from {self.config.endpoint} broke off: {type(exc).__name__}: {str(exc)[:120]}"
                continue
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                last = f"reply from {self.config.endpoint} is not JSON: {exc}"
                break
            try:
                content = reply["choices"][0]["message"]["content"]
            except (KeyError, IndexError, TypeError):
                last = f"reply from {self.config.endpoint} has no choices[0].message.content: {str(reply)[:200]}"
                break
            return parse_rating(content)
        raise JudgeError(self._redact(last))

    def rate_many(self, pairs: Sequence[tuple[str, str]], *, progress: Progress = True, desc: str = "LLM judge"
                  ) -> tuple[list[float | None], list[str]]:
        """Ratings for ``(answer, reference)`` pairs, in order, with ``config.workers`` requests in flight.

        Returns ``(scores, errors)``: a failed pair's score is None and its message is in `errors`.
        """
        def one(pair: tuple[str, str]) -> tuple[float | None, str | None]:
            try:
                return self.rate(*pair), None
            except JudgeError as exc:
                return None, str(exc)

        results: list[tuple[float | None, str | None]] = []
        if pairs:
            with ThreadPoolExecutor(max_workers=int(self.config.workers)) as pool:
                with progress_bar(pool.map(one, pairs), total=len(pairs), desc=desc, unit="answer",
                                  progress=progress) as bar:
                    results = list(bar)
        return [score for score, _ in results], [err for _, err in results if err is not None]
