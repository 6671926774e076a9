"""Small text helpers for the demo page: escaped markdown tables, warnings, notices, and settings."""

from __future__ import annotations

import html
import logging
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from model.errors import PocketAdaptError

__all__ = ["CLEAR_FILE_INPUTS", "DISCLAIMER", "MEDICAL_DISCLAIMER", "REFUSED_BUTTON", "DemoError", "DemoSettings",
           "answer_failed_md", "ask_failed_md", "error_md", "escape_md", "failed_md", "info_md", "log_reference",
           "notice_md", "refused_md", "warnings_md"]

log = logging.getLogger(__name__)

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|~>-])")

# The browser keeps the chosen file's name (often a patient's name) in the file input, whatever became of the
# upload (refused as too large, unreadable, read). Run once at page load: every file input is emptied right
# after each choice, once Gradio's own change handler has taken the files (it copies them synchronously).
#
# An upload above the limit is refused by the server before any handler runs (HTTP 413): Gradio shows a passing
# toast, and the page would keep the earlier study as "Ready", to be asked about by mistake. So a refused upload
# also presses the hidden REFUSED_BUTTON, whose handler closes the earlier study and says why in the status line.
REFUSED_BUTTON = "pa-refused"
CLEAR_FILE_INPUTS = """() => {
  document.addEventListener('change', (event) => {
    const input = event.target;
    if (input instanceof HTMLInputElement && input.type === 'file') { setTimeout(() => { input.value = ''; }, 0); }
  }, true);
  const fetchFirst = window.fetch.bind(window);
  window.fetch = async (...args) => {
    const response = await fetchFirst(...args);
    const url = String(args[0] instanceof Request ? args[0].url : args[0]);
    if (response.status === 413 && url.includes('/upload')) {
      setTimeout(() => document.getElementById('""" + REFUSED_BUTTON + """')?.click(), 0);
    }
    return response;
  };
}"""


def refused_md(max_upload_mb: float, had_study: bool) -> str:
    """The status line after an upload the server refused as too large."""
    closed = "; the earlier upload was closed, so nothing is loaded now" if had_study else ""
    return error_md(f"the file was refused: it is above the {max_upload_mb:g} MB limit of this demo, and nothing "
                    f"of it was kept{closed}",
                    "Upload refused")

DISCLAIMER = "Research demo: answers come from a small model and may be wrong."
MEDICAL_DISCLAIMER = ("Research demo: answers come from a small model and may be wrong. "
                      "Not for diagnosis or any decision about a person.")


class DemoError(PocketAdaptError, ValueError):
    """A demo setting (port, upload limit, login) that cannot work."""


@dataclass(frozen=True)
class DemoSettings:
    """What every panel needs to know besides the model."""

    domain: str | None = None
    max_upload_mb: float = 200.0
    max_new_tokens: int = 128

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)


def escape_md(text: object) -> str:
    """`text` safe inside markdown: HTML escaped, markdown punctuation backslashed, on one line."""
    return _MD_SPECIAL.sub(r"\\\1", html.escape(" ".join(str(text).split()), quote=False))


def info_md(info: Mapping[str, str], title: str = "") -> str:
    """A two-column markdown table (empty string for no rows)."""
    if not info:
        return ""
    rows = [f"| {escape_md(k)} | {escape_md(v)} |" for k, v in info.items()]
    head = f"**{escape_md(title)}**\n\n" if title else ""
    return head + "| field | value |\n|---|---|\n" + "\n".join(rows)


def warnings_md(warnings: Sequence[str]) -> str:
    return "\n".join(f"**Warning:** {escape_md(w)}  " for w in warnings)


def error_md(message: str, what: str = "Could not read the upload") -> str:
    return f"**{escape_md(what)}:** {escape_md(message)}"


def answer_failed_md(exc: BaseException) -> str:
    """The notice for a model that failed while answering (`exc`, its ``__cause__`` the model's own error): a
    PocketAdaptError's message, which is written for users (NaN scores from broken weights, ...); for anything else
    only the type, as its text may quote inputs (the server log has it)."""
    cause = exc.__cause__ or exc
    if isinstance(cause, PocketAdaptError) and str(cause):
        return error_md(f"the model failed while answering: {cause}"[:600], "Could not answer")
    return error_md(f"the model failed while answering ({type(cause).__name__}); see the server log",
                    "Could not answer")


def failed_md(exc: BaseException, what: str, doing: str) -> str:
    """The notice for `exc`, raised while `doing` something: a PocketAdaptError's message, which is written for
    users; for anything else the type and a reference only, as its text may quote inputs (patient data): the full
    error goes to the server log under that reference."""
    if isinstance(exc, PocketAdaptError) and str(exc):
        return error_md(f"{exc}"[:600], what)
    ref = log_reference(exc, doing)
    return error_md(f"{doing} failed ({type(exc).__name__}); see the server log, reference {ref}", what)


def log_reference(exc: BaseException, doing: str) -> str:
    """Log `exc` (raised while `doing` something) with its traceback under a fresh reference, and return that
    reference: the page names it instead of the error's text."""
    ref = secrets.token_hex(4)
    log.error("demo: %s failed (reference %s)", doing, ref, exc_info=exc)
    return ref


def ask_failed_md(exc: BaseException) -> str:
    """The notice for `exc`, raised by ``ModelSession.stream``: the model failing while answering
    (:func:`answer_failed_md`), a refused question in its own words (a PocketAdaptError: empty, too long, ...), and
    anything else by its type and a server-log reference only (its text may quote inputs)."""
    from deploy.demo.session import GenerationError

    if isinstance(exc, GenerationError):
        log.error("demo: generation failed", exc_info=exc)
        return answer_failed_md(exc)
    return failed_md(exc, "Could not ask" if isinstance(exc, PocketAdaptError) else "Could not answer",
                     "answering the question")


def notice_md(message: str, what: str = "Note") -> str:
    """A neutral notice (not an error) in the same form as :func:`error_md`."""
    return f"**{escape_md(what)}:** {escape_md(message)}"


REPEATED_NOTE = "the answer had begun repeating itself, so it was cut there (a sign the model is unsure)"
