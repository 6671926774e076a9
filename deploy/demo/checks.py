"""Checks of the demo's settings that need neither Gradio nor torch, so that ``adapt demo`` refuses a wrong flag
before their imports (seconds; tens on a busy machine). :mod:`deploy.demo.app` re-exports them."""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

from deploy.demo.page import DemoError

__all__ = ["PASSWORD_ENV", "auth_from_env", "check_domain", "check_port", "check_upload_mb", "gradio_host",
           "load_auth_file"]

PASSWORD_ENV = "POCKET_ADAPT_DEMO_PASSWORD"


def gradio_host(host: str) -> str:
    """`host` as Gradio takes it: an IPv6 address in brackets (``[::1]``; it binds the address inside them, and
    ``::1`` bare made its address check fail on ``http://::1:7860/``), anything else as given."""
    import ipaddress

    try:
        return f"[{host}]" if ipaddress.ip_address(host).version == 6 else host
    except ValueError:  # a name, or already in brackets
        return host


def check_port(port: int, name: str = "port") -> int:
    """`port` as a TCP port, 1..65535, else a DemoError naming it as `name` (``--port`` for the CLI)."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise DemoError(f"{name} must be in 1..65535 (a whole number), got {port!r}")
    return port


def check_upload_mb(max_upload_mb: float) -> float:
    """`max_upload_mb` as a finite number of MB above 0, else a DemoError naming it."""
    number = isinstance(max_upload_mb, (int, float)) and not isinstance(max_upload_mb, bool)
    if not number or not 0 < max_upload_mb < math.inf:
        raise DemoError(f"max_upload_mb must be a positive number of MB, got {max_upload_mb!r}")
    return float(max_upload_mb)


def check_domain(domain: str | None):
    """The registered plugin of a domain name (None / "general" = plain images), or None for a domain that has
    its own panel but no plugin yet; an unknown name raises the registry's error listing the known ones."""
    from deploy.demo import panels
    from domains.base import get_domain

    name = (domain or "general").strip()
    try:
        return get_domain(name)
    except ValueError:
        if not panels.has_own_panel(name):
            raise
        return None  # a dedicated panel works from its own modules even before the plugin is registered


def auth_from_env(user: str, env: str = PASSWORD_ENV) -> tuple[str, str]:
    """``(user, password)`` with the password read from the environment variable `env`; the user name trimmed, as
    `load_auth_file` trims the names in an auth file (a login typed without the spaces failed)."""
    user, password = user.strip(), os.environ.get(env, "")
    if not user:
        raise DemoError("--auth-user needs a user name")
    if not password:
        raise DemoError(f"--auth-user {user}: set the password in the environment variable {env} "
                         "(it is never taken on the command line)")
    return user, password


def load_auth_file(path: str | Path) -> list[tuple[str, str]]:
    """``user:password`` lines (blank lines and ``#`` comments ignored), the password exactly as written after
    the first ``:``; DemoError naming a bad line (never its text: it may hold a password)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")  # an editor's byte-order mark would join the first user's name
    except OSError as err:
        raise DemoError(f"{p}: cannot read the auth file ({err.strerror or err})") from None
    except UnicodeDecodeError:
        raise DemoError(f"{p}: not UTF-8 text; save the auth file as UTF-8") from None
    if os.name == "posix" and p.stat().st_mode & 0o077:
        print(f"adapt demo: warning: {p} is readable by other users; consider chmod 600", file=sys.stderr)
    pairs: list[tuple[str, str]] = []
    seen: dict[str, int] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        user, sep, password = line.partition(":")
        user = user.strip()
        if not sep or not user or not password:
            raise DemoError(f"{p}:{n}: expected 'user:password'")
        if password != password.strip():  # invisible in the file, and a login typed without them fails
            raise DemoError(f"{p}:{n}: the password begins or ends with spaces or tabs; write 'user:password' "
                            "with nothing around the password")
        if user in seen:  # one of the two passwords would silently stop working
            raise DemoError(f"{p}:{n}: this user is already on line {seen[user]}; give each user one line")
        seen[user] = n
        pairs.append((user, password))
    if not pairs:
        raise DemoError(f"{p}: no 'user:password' lines")
    return pairs
