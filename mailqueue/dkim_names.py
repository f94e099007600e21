"""What the DKIM settings may say, checked as text (no key file is read): the signing
domain and selector as DNS names, MAIL_DKIM_HEADERS as header names. mailqueue/settings.py
validates with these; mailqueue/mail/dkim.py signs. Nothing here imports the rest of
mailqueue: the settings, at the bottom of the layers, use it.
"""

from __future__ import annotations

import re

# What MAIL_DKIM_HEADERS defaults to: the headers mailqueue writes that a receiver shows or
# acts on. Only those a message has are signed (h= lists them).
DEFAULT_SIGNED_HEADERS = (
    "From", "To", "Cc", "Subject", "Date", "Message-ID", "MIME-Version", "Content-Type",
    "Reply-To", "List-Unsubscribe", "List-Unsubscribe-Post",
)
# RFC 6376 5.4: headers a signature should not cover (relays add or change them); dkimpy
# refuses to sign them.
UNSIGNABLE_HEADERS = frozenset(
    {"return-path", "received", "comments", "keywords", "bcc", "resent-bcc", "dkim-signature"}
)
_HEADER_NAME = re.compile(r"^[!-9;-~]{1,76}$")
_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def check_dns_name(value: str, what: str) -> str:
    """`value` as a DNS name of LDH labels (a ValueError says what is wrong); a trailing dot,
    as zone files write names, is dropped."""
    name = value.strip().removesuffix(".")
    if not name:
        raise ValueError(f"{what} is empty")
    if not name.isascii():
        raise ValueError(f"{value!r} is not ASCII: give the xn-- (IDNA) form of the {what}")
    bad = [label for label in name.split(".") if not _LABEL.match(label)]
    if bad:
        raise ValueError(
            f"{value!r} is not a {what}: {bad[0]!r} is not a DNS label (letters, digits and "
            "inner hyphens, at most 63)"
        )
    if len(name) > 253:
        raise ValueError(f"{value!r} is longer than a DNS name may be (253)")
    return name


def signed_header_names(value: str) -> tuple[str, ...]:
    """MAIL_DKIM_HEADERS as header names, checked: From among them, none that relays change."""
    first: dict[str, str] = {}  # one of each, case aside, in the order given
    for name in value.replace(",", " ").split():
        first.setdefault(name.lower(), name)
    names = tuple(first.values())
    for name in names:
        if not _HEADER_NAME.match(name):
            raise ValueError(f"{name!r} is not a header name")
        if name.lower() in UNSIGNABLE_HEADERS:
            raise ValueError(f"{name} must not be signed (RFC 6376 5.4: relays add or change it)")
    if "from" not in (n.lower() for n in names):
        raise ValueError("must include From (RFC 6376 5.4: the one header a signature must cover)")
    return names
