"""Which names the dashboard answers to, and which pages may ask it to change something.

DNS rebinding: a web page on `evil.example` can make its own name resolve to 127.0.0.1 and
then talk to a dashboard on this machine as a same-origin page — the browser sends
`Host: evil.example:3000`. Without credentials (the loopback default) that page could read
every job and send mail through the dashboard. So a request is answered only when its Host
is a name the dashboard is served under: loopback names and addresses, the address it was
bound to, and the names listed in DASHBOARD_ALLOWED_HOSTS (those a proxy serves; `*` turns
the check off, for a proxy that checks Host itself).

A state change must also come from a page of the dashboard: when the browser says where the
request comes from (Origin, else Referer), that origin's host must be the request's own
Host. Scripts (curl, a CI job) send neither and are judged by credentials and CSRF alone.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from urllib.parse import urlsplit

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})
ANY_HOST = "*"


class AllowedHosts:
    """The Host names (ports ignored) the dashboard answers to."""

    def __init__(self, extra: Iterable[str] = (), bound: str | None = None) -> None:
        names = {name.strip().lower().rstrip(".") for name in extra if name.strip()}
        self.any = ANY_HOST in names
        self.names = (names - {ANY_HOST}) | LOOPBACK_NAMES
        if bound and not _is_wildcard(bound):
            self.names.add(bound.strip("[]").lower())

    @classmethod
    def from_setting(cls, value: str | None, bound: str | None = None) -> AllowedHosts:
        return cls((value or "").split(","), bound)

    def allows(self, host_header: str | None) -> bool:
        if self.any:
            return True
        host = host_name(host_header or "")
        if not host:
            return False
        if host in self.names or host.endswith(".localhost"):  # RFC 6761: always loopback
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False


def host_name(host_header: str) -> str:
    """`Example.com:3000` -> `example.com`; `[::1]:3000` -> `::1`; junk -> ''."""
    value = host_header.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        return value[1:end] if end > 0 else ""
    name, _, port = value.partition(":")
    if port and not port.isdigit():
        return ""
    return name.rstrip(".")


def same_origin(origin: str | None, referer: str | None, host_header: str | None) -> bool:
    """Whether the page that sent a state change is one of ours (see the module's text)."""
    source = origin if origin is not None else referer
    if source is None or source == "":
        return True  # not a browser, or one told to send nothing: CSRF token and auth decide
    if source == "null":  # sandboxed frames, data: URLs, file: pages
        return False
    parts = urlsplit(source)
    default_port = {"http": 80, "https": 443}.get(parts.scheme)
    try:
        source_port = parts.port or default_port
    except ValueError:  # a port that is not a number
        return False
    if not parts.hostname or source_port is None:
        return False
    name, _, port = (host_header or "").strip().lower().rpartition(":")
    if not name or "]" in port:  # no port in Host: the scheme's default
        name, port = (host_header or "").strip().lower(), str(default_port)
    return (parts.hostname == name.strip("[]").rstrip(".")
            and port.isdigit() and int(port) == source_port)


def _is_wildcard(host: str) -> bool:
    return host.strip("[]") in ("0.0.0.0", "::", "")
