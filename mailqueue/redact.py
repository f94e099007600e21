"""Secrets out of what is shown: URLs and error texts lose their passwords before any log line,
error message, repr or page shows them."""

from __future__ import annotations

import re

# `scheme://user:password@` (the password up to the last @ before the path or a blank:
# an unencoded @ inside a password is still part of it, as urllib reads it).
_USERINFO = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]*):[^/\s]+@", re.IGNORECASE)
# Query options that carry a secret: `?password=`, `&ssl_password=`, `&token=`...
_QUERY = re.compile(
    r"(?P<head>[?&](?:[a-z_]*password|[a-z_]*token|secret)=)[^&#\s]+", re.IGNORECASE
)
MASK = "***"


def redact_url(text: str) -> str:
    """`text` (a URL, or any message quoting one) with every password replaced by ***."""
    text = _USERINFO.sub(rf"\g<head>:{MASK}@", text)
    return _QUERY.sub(rf"\g<head>{MASK}", text)
