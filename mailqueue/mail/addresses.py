"""Recipient addresses from job data, parsed strictly.

A field (`to`, `cc`, `bcc`, `reply_to`, `from`) is one address, an RFC 5322 address list in
one string (`"a@example.com, Bob <b@example.com>"`; `;` separates too, as nodemailer users
write it), a `{"email", "name"}` object, or a list of any of these. The string forms go
through the standard library's RFC 5322 parser (`email._header_value_parser`, the one
`email.headerregistry` uses), not `email.utils.parseaddr`: parseaddr is lenient and gave
`"Ada\\r\\nBcc: evil@example.com" <e2@example.com>` as `evil@example.com` (issue 11). Here
anything the parser flags as invalid — an unbalanced quote, a missing `>`, text between
addresses — is refused, and so is any control character (CR, LF, NUL, tab...) in the value
or in a display name once its RFC 2047 encoded-words are decoded. The addr-spec itself is
then checked by email-validator (syntax only, no DNS).

Every problem raises `InvalidAddressError` (permanent: the job fails, not retried), naming
the field and the entry, with the value shown escaped and shortened.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from email import _header_value_parser as rfc5322
from email import errors as email_errors
from email.utils import formataddr, parseaddr
from typing import Any

from email_validator import SPECIAL_USE_DOMAIN_NAMES, EmailNotValidError, validate_email

from mailqueue.mail.errors import InvalidAddressError, InvalidMailDataError

# Unicode categories refused anywhere in an address field: controls (C0 with CR, LF and tab,
# DEL, C1) and the Unicode line and paragraph separators, which some clients show as breaks.
_REFUSED_CATEGORIES = frozenset({"Cc", "Zl", "Zp"})
_SHOWN = 80  # characters of a refused value quoted in a failure reason


@dataclass(frozen=True, slots=True)
class Address:
    """A checked address: `email` is the ASCII addr-spec sent in SMTP, `name` may be empty."""

    email: str
    name: str = ""

    def header(self) -> str:
        """The header form, with a non-ASCII display name RFC 2047-encoded."""
        if not self.name:
            return self.email
        return formataddr((self.name, self.email), charset="utf-8")


def shown(value: Any) -> str:
    """`value` for a failure reason: repr() escapes CR, LF and the rest; long ones cut."""
    text = repr(value)
    return text if len(text) <= _SHOWN else f"{text[:_SHOWN]}...' ({len(str(value)):,} chars)"


def no_line_breaks(where: str, value: str) -> str:
    if "\r" in value or "\n" in value:
        raise InvalidMailDataError(f"{where}: line breaks are not allowed in a header value")
    return value


def _control_character(value: str) -> str | None:
    """The first refused character of `value`, written as U+XXXX, or None."""
    if value.isascii() and value.isprintable():  # the common case, checked in C
        return None
    for char in value:
        if unicodedata.category(char) in _REFUSED_CATEGORIES:
            return f"U+{ord(char):04X}"
    return None


def _check_text(where: str, what: str, value: str) -> None:
    bad = _control_character(value)
    if bad is not None:
        raise InvalidAddressError(
            f"{where}: {shown(value)}: a control character ({bad}) in {what} is not allowed"
        )


# The common address, checked strictly without email-validator (~1 us instead of ~20 per
# address): a dot-atom local part, ASCII host labels, a letters-only top-level domain that
# is not a special-use name. What it accepts email-validator accepts and normalises the
# same way (the domain lowercased); everything else goes to email-validator
# (tests/mailqueue/mail/test_address_fast_path.py checks both with hypothesis).
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_PLAIN = re.compile(rf"({_ATOM}(?:\.{_ATOM})*)@((?:{_LABEL}\.)+([A-Za-z]{{2,63}}))")
_SPECIAL_USE = frozenset(SPECIAL_USE_DOMAIN_NAMES)


def plain_email(raw: str) -> str | None:
    """`raw` normalised when it is a plain ASCII address; None: ask email-validator."""
    match = _PLAIN.fullmatch(raw)
    if (match is None or len(raw) > 254 or len(match[1]) > 64 or "--" in match[2]
            or match[3].lower() in _SPECIAL_USE):
        return None
    return f"{match[1]}@{match[2].lower()}"


def _checked_email(where: str, raw: str) -> str:
    plain = plain_email(raw)
    if plain is not None:
        return plain
    try:
        checked = validate_email(raw, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        raise InvalidAddressError(
            f"{where}: {shown(raw)} is not a valid e-mail address: {exc}"
        ) from exc
    return checked.ascii_email or checked.normalized


# A bare addr-spec of dot-atom characters only (most recipients of bulk mail): nothing for
# the RFC 5322 parser to find, so the addr-spec check alone (plain_email, else
# email-validator) decides.
_BARE = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9.-]+")


@functools.lru_cache(maxsize=1024)
def _parse_string(value: str, where: str) -> tuple[Address, ...]:
    """An RFC 5322 address list (`,` or `;` between addresses; groups are expanded).

    Cached: a job's `to` is read twice (the greeting's name, then the message), and parsing
    costs ~0.1 ms. Errors are not cached; they are raised again.
    """
    if _BARE.fullmatch(value):
        return (Address(_checked_email(where, value)),)
    _check_text(where, "an address", value)
    if "@" not in value and not any(c in value for c in "<>,;:\""):
        # One word with no @ (`help`, `ada.example.com`): email-validator says what is
        # missing more plainly than the RFC 5322 parser's "local part with no domain".
        return (Address(_checked_email(where, value.strip())),)
    addresses: list[Address] = []
    rest = value
    while True:
        # Empty entries (`a@x.com,`, `a, , b`) are obsolete syntax, harmless: skipped.
        rest = rest.lstrip(" ")
        while rest[:1] in (",", ";"):
            rest = rest[1:].lstrip(" ")
        if not rest:
            return tuple(addresses)
        # Past the first address, say where in the string the problem is.
        entry = f"{where} (address {len(addresses) + 1} of {shown(value)})" if addresses \
            else where
        try:
            token, after = rfc5322.get_address(rest)
        except Exception as exc:
            # HeaderParseError, and IndexError for some truncated input (`a@`): either way
            # the text is not an address, a permanent problem of the job data.
            raise InvalidAddressError(
                f"{entry}: {shown(rest)} is not a valid e-mail address: {exc}"
            ) from None
        text = rest[: len(rest) - len(after)].strip()
        # Obsolete forms (`Ada L. Lovelace <a@x>`, routes) are read as RFC 5322 says
        # receivers must; everything else the parser flags is refused.
        defects = [d for d in token.all_defects
                   if not isinstance(d, email_errors.ObsoleteHeaderDefect)]
        if defects:
            raise InvalidAddressError(
                f"{entry}: {shown(text)} is not a valid e-mail address: "
                + "; ".join(dict.fromkeys(_describe(d) for d in defects))
            )
        for mailbox in token.all_mailboxes:
            name = mailbox.display_name or ""
            # Encoded-words are decoded by the parser: `=?utf-8?q?A=0D=0A...?=` hides a CRLF.
            _check_text(entry, "a display name", name)
            addresses.append(Address(_checked_email(entry, mailbox.addr_spec), name.strip()))
        rest = after.lstrip(" ")
        if rest and rest[0] not in ",;" and token[0].token_type != "group":
            raise InvalidAddressError(
                f"{entry}: expected ',' or ';' after {shown(text)}, found {shown(rest)}"
            )


def _describe(defect: email_errors.MessageDefect) -> str:
    text = str(defect)
    if isinstance(defect, email_errors.NonPrintableDefect):
        # A control character from a decoded encoded-word (`=0D=0A` is CR LF).
        return f"a control character in an encoded-word ({text})"
    if "quoted string" in text:
        return f"{text} (an unbalanced quote)"
    return text


def _parse_one(value: Any, where: str) -> list[Address]:
    if isinstance(value, str):
        return list(_parse_string(value, where))
    if isinstance(value, Mapping):
        raw_email, name = value.get("email"), value.get("name") or ""
        if not isinstance(raw_email, str) or not isinstance(name, str):
            raise InvalidAddressError(f"{where}: expected {{'email': str, 'name': str}}")
        _check_text(where, "an address", raw_email)
        _check_text(where, "a display name", name)
        return [Address(_checked_email(where, raw_email.strip()), name.strip())]
    raise InvalidAddressError(
        f"{where}: expected an address string or {{'email', 'name'}}, got "
        f"{type(value).__name__}"
    )


def parse_address_list(value: Any, where: str) -> list[Address]:
    """Every address of a field: one, an address-list string, or a list; None gives []."""
    if value is None:
        return []
    items = value if isinstance(value, list | tuple) else [value]
    addresses: list[Address] = []
    for i, item in enumerate(items):
        addresses += _parse_one(item, f"{where}[{i}]" if len(items) > 1 else where)
    return addresses


def parse_address(value: Any, where: str = "address") -> Address:
    """Exactly one address: `"Ada <ada@example.com>"`, `"ada@example.com"` or a mapping."""
    addresses = _parse_one(value, where)
    if len(addresses) != 1:
        raise InvalidAddressError(
            f"{where}: expected one address, found {len(addresses)} in {shown(value)}"
        )
    return addresses[0]


def parse_sender(value: str) -> Address:
    """The configured sender (MAIL_FROM). Checked loosely: `noreply@localhost` is fine here."""
    name, email = parseaddr(value)
    if "@" not in email or any(c.isspace() for c in email):
        raise InvalidAddressError(f"MAIL_FROM {value!r} is not an address like 'App <a@b.c>'")
    no_line_breaks("MAIL_FROM", name)
    return Address(email=email, name=name)
