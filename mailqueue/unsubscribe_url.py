"""MAIL_UNSUBSCRIBE_URL checked: the public base URL that one-click unsubscribe links
(mailqueue/mail/unsubscribe.py) start with. It imports nothing of mailqueue: the settings,
at the bottom of the layers, use it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def check_base_url(value: Any) -> str:
    """MAIL_UNSUBSCRIBE_URL checked (ValueError saying why), without its trailing `/`.

    https, as RFC 8058 requires of the one-click URL; plain http only on localhost or
    127.0.0.1, for development. No query or fragment (the token is appended as a path
    segment) and no credentials (the URL is in every message).
    """
    text = value.strip() if isinstance(value, str) else ""
    try:
        parsed = urlsplit(text)
        host = parsed.hostname or ""
        parsed.port  # noqa: B018 - a bad port raises here
    except ValueError:
        raise ValueError(f"{text!r} is not a URL: use https://host/path") from None
    if parsed.scheme not in ("https", "http") or not host:
        raise ValueError(f"{text!r} must be an https:// URL (RFC 8058 one-click)")
    if parsed.scheme == "http" and host not in _LOCAL_HOSTS:
        raise ValueError(f"{text!r} must be https: plain http is for localhost or 127.0.0.1 "
                         "only (development)")
    if parsed.username is not None or parsed.password is not None:
        raise ValueError("must not hold a user name or password (it is in every message)")
    if parsed.query or parsed.fragment or text.endswith(("?", "#")):
        raise ValueError(f"{text!r} must not have a query or fragment: the token is appended "
                         "as a path segment")
    if any(c.isspace() or ord(c) < 32 for c in text) or not text.isascii():
        raise ValueError(f"{text!r} must be ASCII without spaces (percent-encode the path)")
    return text.rstrip("/")
