"""The demo framework: one model session, a domain panel, and a launch that is safe by default.

    from deploy.demo import build_demo, launch_demo
    blocks = build_demo("pocket-tiny", domain="medical")
    launch_demo(blocks)                      # http://127.0.0.1:7860, no share link, no analytics

Panels: a domain with its own controls has a module in :mod:`deploy.demo.panels` (``medical``); any other
registered domain (and ``general`` / no domain) gets the generic panel, driven by the plugin's
``demo_hooks`` (:mod:`deploy.demo.hooks`).
"""

from __future__ import annotations

import hmac
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import gradio as gr  # deploy/demo/__init__.py has switched Gradio's analytics off before this import

from deploy.demo.checks import (
    PASSWORD_ENV,
    auth_from_env,
    check_domain,
    check_port,
    check_upload_mb,
    gradio_host,
    load_auth_file,
)
from deploy.demo.page import CLEAR_FILE_INPUTS, DemoError, DemoSettings
from deploy.demo.session import DEFAULT_MAX_NEW_TOKENS, ModelSession, check_max_new_tokens, check_sampling
from deploy.demo.uploads import close_session, install_signal_cleanup, sweep_stale, use_private_gradio_cache
from model.hosts import is_loopback

__all__ = ["DEFAULT_HOST", "PASSWORD_ENV", "auth_from_env", "build_demo", "check_port", "check_upload_mb",
           "is_loopback", "launch_demo", "load_auth_file", "resolve_domain"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
DEFAULT_MAX_UPLOAD_MB = 200.0
Auth = Callable[[str, str], bool]

# system fonts only: the default theme would make every browser fetch fonts from Google
_FONTS = ["system-ui", "-apple-system", "Segoe UI", "Roboto", "sans-serif"]
_MONO = ["ui-monospace", "SFMono-Regular", "Menlo", "monospace"]
CSS = """
.pa-notice p { margin: 0.2em 0; }
#pa-preview img { width: 100%; height: 100%; object-fit: contain; }
#pa-refused { display: none !important; }
"""


class _DemoBlocks(gr.Blocks):
    """Blocks whose page is not told the upload limit: the browser would check it itself and name the
    refused file (often a patient's name) in its message. The server still refuses larger files, with a
    message naming none."""

    def get_config_file(self):
        config = super().get_config_file()
        config["max_file_size"] = None
        return config


def resolve_domain(domain: str | None):
    """``(panel module, plugin or None)`` for a domain name (None / "general" = plain images)."""
    from deploy.demo import panels

    plugin = check_domain(domain)
    return panels.panel_for((domain or "general").strip()), plugin


def build_demo(model_source: str | Path | ModelSession, domain: str | None = None, *, dtype: str | None = None,
               device: str | None = None, max_new_tokens: int | None = None,
               max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB, allow_pickle: bool = False,
               temperature: float | None = None, top_p: float | None = None, seed: int | None = None) -> gr.Blocks:
    """The demo page for `domain` around `model_source` (preset, checkpoint folder, or a loaded session).

    The model is loaded here, so a wrong path fails now rather than at the first question. Answers are greedy unless
    `temperature` > 0 (then sampled as ``adapt chat`` samples, with `top_p` and `seed`: see :class:`ModelSession`; given
    for greedy answers they are a DemoError); None keeps a given session's setting, as it does for `max_new_tokens`
    (default DEFAULT_MAX_NEW_TOKENS for a model loaded here). `dtype`, `device` and `allow_pickle` say how a model is
    loaded: with a loaded session they are refused (a DemoError), not ignored.
    """
    check_upload_mb(max_upload_mb)
    loaded = isinstance(model_source, ModelSession)
    if loaded:  # they were silently ignored: the session answered in the dtype and on the device it was loaded with
        named = [f"{k}={v!r}" for k, v in (("dtype", dtype), ("device", device), ("allow_pickle", allow_pickle))
                 if v is not None and v is not False]
        if named:
            raise DemoError(f"build_demo: {', '.join(named)} cannot apply to a model already loaded in a ModelSession; "
                            "give them to ModelSession(...), or pass the preset or checkpoint folder instead")
    if max_new_tokens is not None:
        try:
            max_new_tokens = check_max_new_tokens(max_new_tokens)
        except ValueError as err:
            raise DemoError(str(err)) from None
    sampling = {k: v for k, v in {"temperature": temperature, "top_p": top_p, "seed": seed}.items() if v is not None}
    now = model_source if loaded else ModelSession  # the class holds the defaults
    drawn = check_sampling(**{"temperature": now.temperature, "top_p": now.top_p, "seed": now.seed, **sampling})
    if not drawn[0] and (top_p not in (None, 1.0) or seed not in (None, 0)):  # greedy answers draw nothing
        raise DemoError(f"top_p={top_p!r} and seed={seed!r} shape sampled answers, and these answers are greedy: give "
                        "a temperature too (e.g. temperature=0.7), or leave them out")
    panel, plugin = resolve_domain(domain)  # before a given session is changed: a refused build changes nothing
    if loaded:
        model_source.set_sampling(**sampling)
        if max_new_tokens is not None:  # a given session answered at its own length whatever was asked here
            model_source.max_new_tokens = max_new_tokens
    use_private_gradio_cache()  # before any component: Gradio's copies of uploads and renders stay private
    session = model_source if isinstance(model_source, ModelSession) else ModelSession(
        model_source, dtype=dtype, device=device, max_new_tokens=max_new_tokens or DEFAULT_MAX_NEW_TOKENS,
        allow_pickle=allow_pickle, **sampling)
    settings = DemoSettings(domain=domain, max_upload_mb=float(max_upload_mb), max_new_tokens=session.max_new_tokens)
    title = f"pocket-adapt demo · {panel.title(plugin)}"
    # temporary files (rendered images, uploads) are swept hourly and all removed when the server restarts
    with _DemoBlocks(title=title, analytics_enabled=False, delete_cache=(900, 3600)) as blocks:
        panel.build(session, plugin, settings)
        blocks.unload(_free_uploads)  # a closed page frees its uploads now (Gradio drops its state an hour later)
    blocks.pocket_settings = settings
    return blocks


def _free_uploads(request: gr.Request) -> None:
    close_session(request.session_hash)


def launch_demo(blocks: gr.Blocks, host: str | None = DEFAULT_HOST, port: int = DEFAULT_PORT,
                auth: Auth | tuple[str, str] | Sequence[tuple[str, str]] | None = None,
                max_upload_mb: float | None = None, *, prevent_thread_lock: bool = False, quiet: bool = False):
    """Serve `blocks` on `host`:`port` (loopback by default; None or "" too), never through a share link.

    `auth` is a ``(user, password)`` pair, a list of them, or a checker ``(user, password) -> bool``.
    Uploads above `max_upload_mb` (default: the value given to :func:`build_demo`; a page built by it refuses
    another value, a DemoError: its upload button and messages state its own) are refused.
    Staging folders of demo processes that have ended are swept first; from the main thread, SIGTERM and
    SIGINT remove this process's staged uploads before it ends.
    Returns Gradio's ``(app, local_url, share_url)``.
    """
    checker = _checker(auth) if auth is not None else None  # a bad auth is refused before anything is touched
    host = _serving_host(host)
    check_port(port)
    settings = getattr(blocks, "pocket_settings", None)
    if max_upload_mb is not None:  # nan / inf failed in Gradio's launch with a raw error; 0 or less refused all uploads
        check_upload_mb(max_upload_mb)
        if settings and float(max_upload_mb) != settings.max_upload_mb:
            # the page (its upload button, its refusal message, its staging) keeps build_demo's limit
            raise DemoError(f"max_upload_mb={max_upload_mb:g} here, but the page was built with "
                            f"{settings.max_upload_mb:g}: give the limit to build_demo (or the same one to both)")
    sweep_stale()
    install_signal_cleanup()
    if not is_loopback(host):
        print(f"adapt demo: warning: serving on {host}, reachable from other machines"
              + ("" if auth else " by anyone, without a login (use --auth-user or --auth-file)")
              + "; the demo is not hardened for untrusted networks.", file=sys.stderr)
    if max_upload_mb is None:
        max_upload_mb = settings.max_upload_mb if settings else DEFAULT_MAX_UPLOAD_MB
    return blocks.queue(default_concurrency_limit=1).launch(
        server_name=host, server_port=port, share=False, auth=checker,
        max_file_size=int(max_upload_mb * 2**20), prevent_thread_lock=prevent_thread_lock, quiet=quiet,
        show_error=False, inbrowser=False, enable_monitoring=False, mcp_server=False, ssr_mode=False,
        run_history=False, footer_links=["settings"], strict_cors=True,
        theme=gr.themes.Default(font=_FONTS, font_mono=_MONO), css=CSS, js=CLEAR_FILE_INPUTS)


def _serving_host(host: str | None) -> str:
    """`host` stripped, an IPv6 address in brackets (:func:`gradio_host`: the CLI and API callers both pass here);
    None or blank is DEFAULT_HOST (given to Gradio as "" it took GRADIO_SERVER_NAME or 127.0.0.1,
    and the warning said "serving on , reachable from other machines"); anything but a string is a DemoError."""
    if host is None or (isinstance(host, str) and not host.strip()):
        return DEFAULT_HOST
    if not isinstance(host, str):
        raise DemoError(f"host must be a host name or address such as {DEFAULT_HOST!r} or '0.0.0.0', got {host!r}")
    return gradio_host(host.strip())


def _checker(auth) -> Auth:
    if callable(auth):
        return auth
    pairs = [auth] if isinstance(auth, tuple) else list(auth)
    for pair in pairs:
        if not (isinstance(pair, tuple) and len(pair) == 2 and all(isinstance(v, str) and v for v in pair)):
            raise DemoError("auth must be (user, password) pairs with non-empty strings")
    if not pairs:  # an empty list would otherwise serve the demo without any login
        raise DemoError("auth is an empty list: give at least one (user, password) pair, or auth=None for no login")
    users = [user for user, _ in pairs]
    twice = sorted({user for user in users if users.count(user) > 1})
    if twice:  # a dict would silently keep the last password and the other would stop working
        raise DemoError(f"auth lists user(s) {', '.join(map(repr, twice))} more than once; give each user one pair")
    table = {user.encode(): password.encode() for user, password in pairs}

    def check(user: str, password: str) -> bool:
        expected = table.get((user or "").encode())
        # compare against something even for an unknown user, so timing does not tell which users exist
        ok = hmac.compare_digest((password or "").encode(), expected or b"\0" * 32)
        return bool(expected) and ok

    return check
