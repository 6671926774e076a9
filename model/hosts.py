"""Whether a host name is this machine: the demo warns before serving anywhere else, and the DriveLM judge sends
answers over plain http only to it."""

from __future__ import annotations

import ipaddress

LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")


def is_loopback(host: str) -> bool:
    """True for this machine's names (any case, a trailing dot) and loopback addresses (127.0.0.0/8, ::1, also as
    ``[::1]``)."""
    host = host.strip().lower()
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host.rstrip(".")
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
