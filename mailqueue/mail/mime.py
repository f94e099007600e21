"""A lean MIME writer for the common message: a text body, an HTML body or both, no files.

The email package spends ~0.5 ms building and flattening such a message (object tree, policy
lookups, a generic folder); this writes the same bytes directly, in ~0.05 ms. It only takes
the shapes it can write exactly; anything else raises `Unsupported` and message.py uses the
email package. The output (tests/mailqueue/mail/test_mime.py parses it back and fuzzes it):

- CRLF line endings throughout, as SMTP sends them; no line over 998 characters (RFC 5322
  2.1.1), header lines folded at 78 where the content allows.
- Non-ASCII header text as RFC 2047 encoded-words of at most 75 characters (RFC 2047 2),
  split between code points, never inside a UTF-8 sequence: a decoder that decodes each word
  on its own (many do) must not see half a character. Q when it is shorter (mostly-ASCII
  text stays readable in the raw message), else B.
- Bodies: 7bit when ASCII with short lines, quoted-printable (binascii, in C) for ASCII with
  a longer line or a control character, base64 for non-ASCII; line breaks are made CRLF
  first, so CR, LF and CRLF in job data all mean one line break, as in the email package.
- multipart/alternative with a random boundary checked against the parts.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from collections.abc import Sequence
from email.utils import formatdate

from mailqueue.mail.addresses import Address

CRLF = "\r\n"
MAX_LINE = 998  # RFC 5322 2.1.1: a hard limit, servers refuse longer lines
FOLD_AT = 78  # RFC 5322 2.1.1: the recommended one
_WORD_MAX = 75  # RFC 2047 2: an encoded-word is at most 75 characters
# An unencoded word longer than this makes its header RFC 2047-encoded (encoded-words can be
# split across lines, plain text only at spaces): "Name: " + 900 stays under 998.
_PLAIN_WORD_MAX = 900
_B_OPEN, _Q_OPEN, _CLOSE = "=?utf-8?b?", "=?utf-8?q?", "?="
_OVERHEAD = len(_B_OPEN) + len(_CLOSE)

# RFC 2047 5 (3): the characters a Q encoded-word may carry as they are in a display name,
# the strictest context, so one table serves phrases and unstructured text alike.
_Q_SAFE = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!*+-/"
_Q_ASCII = {chr(b): chr(b) if chr(b) in _Q_SAFE else f"={b:02X}" for b in range(128)}
_Q_ASCII[" "] = "_"
_Q_ONE_CHAR = (_Q_SAFE + " ").encode()  # bytes that take one character in Q

# An ASCII display name that needs no quoting: atoms separated by single spaces (RFC 5322
# 3.2.3). '.' is left out: "A. Name" unquoted is obsolete syntax.
_ATOMS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?: [A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
# Characters a 7bit body must not carry (RFC 2045 2.7: no NUL; other controls upset servers).
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class Unsupported(ValueError):
    """The lean writer cannot write this exactly: the caller uses the email package."""


def _encoded_words(value: str, first: int) -> list[str]:
    """`value` as encoded-words joined by nothing but folding white space when written.

    `first`: the room for the first word (the rest of the header's first line), so a short
    value stays on one line. Decoders ignore the white space between adjacent encoded-words
    (RFC 2047 6.2), so spaces of the value are always inside a word, never between two.
    """
    try:
        data = value.encode()
    except UnicodeEncodeError as exc:  # a lone surrogate from JSON: not text
        raise Unsupported(str(exc)) from None
    q_length = len(data) + 2 * len(data.translate(None, _Q_ONE_CHAR))
    words: list[str] = []
    room = max(first, _OVERHEAD + 12) - _OVERHEAD  # 12: one 4-byte character in Q
    if q_length <= (len(data) + 2) // 3 * 4:
        text = ""
        for char in value:
            piece = _Q_ASCII.get(char) or "".join(f"={b:02X}" for b in char.encode())
            if len(text) + len(piece) > room:
                words.append(f"{_Q_OPEN}{text}{_CLOSE}")
                text, room = "", _WORD_MAX - _OVERHEAD
            text += piece
        words.append(f"{_Q_OPEN}{text}{_CLOSE}")
        return words
    start = 0
    while start < len(data):
        end = min(start + room // 4 * 3, len(data))
        while end < len(data) and data[end] & 0xC0 == 0x80:  # a UTF-8 continuation byte
            end -= 1
        words.append(f"{_B_OPEN}{base64.b64encode(data[start:end]).decode()}{_CLOSE}")
        start, room = end, _WORD_MAX - _OVERHEAD
    return words or [f"{_Q_OPEN}{_CLOSE}"]


def _fold(name: str, tokens: Sequence[str]) -> str:
    """`Name: t1 t2 ...`, a line break before the space between two tokens where needed."""
    lines: list[str] = []
    line = f"{name}:"
    for i, token in enumerate(tokens):
        if i and len(line) + 1 + len(token) > FOLD_AT:
            lines.append(line)
            line = " " + token
        else:
            line += " " + token
        if len(line) > MAX_LINE:
            raise Unsupported(f"{name}: a word too long for a header line")
    lines.append(line)
    return CRLF.join(lines)


def unstructured(name: str, value: str) -> str:
    """A folded `Name: value` line for free text (Subject, custom headers)."""
    # Plain when a receiver reads back exactly `value`: printable ASCII (isprintable() is
    # false for CR, LF and tab), no "=?" that a decoder would take for an encoded-word, no
    # white space at the ends (unfolding drops it), every word short enough to fit a line.
    if value.isascii() and value.isprintable() and "=?" not in value \
            and value == value.strip(" "):
        tokens = value.split(" ")
        if "" in tokens and value:  # a run of spaces: the extra ones go before the next word
            merged: list[str] = []
            spaces = ""
            for token in tokens:
                if token:
                    merged.append(spaces + token)
                    spaces = ""
                else:
                    spaces += " "
            tokens = merged
        if max(map(len, tokens)) <= _PLAIN_WORD_MAX:
            return _fold(name, tokens)
    return _fold(name, _encoded_words(value, FOLD_AT - len(name) - 2))


def _ascii_value(what: str, value: str, limit: int = MAX_LINE - 80) -> str:
    if not (value.isascii() and value.isprintable()) or len(value) > limit:
        raise Unsupported(f"{what}: not a short printable ASCII value")
    return value


def address_list(name: str, addresses: Sequence[Address]) -> str:
    """`To: Name <a@x>, =?utf-8?q?Zo=C3=AB?= <z@x>`, folded between addresses and words."""
    tokens: list[str] = []
    for address in addresses:
        email = _ascii_value(name, address.email, 254)
        display = address.name
        if not display:
            tokens.append(email + ",")
            continue
        if _ATOMS.fullmatch(display) and "=?" not in display and len(display) <= 60:
            tokens.append(display)
        elif display.isascii() and display.isprintable() and "=?" not in display \
                and len(display) <= 60:
            escaped = display.replace("\\", "\\\\").replace('"', '\\"')
            tokens.append(f'"{escaped}"')
        else:
            first = FOLD_AT - len(name) - 2 if not tokens else _WORD_MAX
            tokens += _encoded_words(display, first)
        tokens.append(f"<{email}>,")
    if not tokens:
        raise Unsupported(f"{name}: no address")
    tokens[-1] = tokens[-1][:-1]  # the last address takes no comma
    return _fold(name, tokens)


def _text_part(text: str, subtype: str) -> tuple[str, bytes]:
    """The Content-Type and Content-Transfer-Encoding lines of a text part, and its body."""
    if "\r" in text:  # CRLF and a lone CR are line breaks too (aiosmtplib would make them so)
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = text.replace("\n", CRLF)
    if not text.isascii():
        encoded = base64.b64encode(text.encode())
        # 76 characters a line (RFC 2045 6.8), CRLF between lines.
        body = b"\r\n".join(encoded[i:i + 76] for i in range(0, len(encoded), 76))
        return (f'Content-Type: text/{subtype}; charset="utf-8"{CRLF}'
                f"Content-Transfer-Encoding: base64"), body
    data = text.encode("ascii")
    long_line = len(data) > MAX_LINE and any(len(line) > MAX_LINE for line in text.split(CRLF))
    if long_line or _CONTROL.search(text):
        # binascii writes soft breaks ("=" at 76) with the data's own line break, CRLF, but
        # with LF when the data has no line break at all.
        encoded = binascii.b2a_qp(data, istext=True)
        if b"\r\n" not in data:
            encoded = encoded.replace(b"\n", b"\r\n")
        return (f'Content-Type: text/{subtype}; charset="us-ascii"{CRLF}'
                f"Content-Transfer-Encoding: quoted-printable"), encoded
    return (f'Content-Type: text/{subtype}; charset="us-ascii"{CRLF}'
            f"Content-Transfer-Encoding: 7bit"), data


def _boundary(parts: Sequence[bytes]) -> str:
    # "=_" cannot occur in base64 or quoted-printable text; a 7bit part is checked.
    while True:
        boundary = "=_" + secrets.token_hex(16)
        marker = boundary.encode()
        if not any(marker in part for part in parts):
            return boundary


def write_message(
    *,
    sender: Address,
    to: Sequence[Address],
    cc: Sequence[Address],
    reply_to: Sequence[Address],
    subject: str,
    message_id: str,
    text: str | None,
    html: str | None,
    unsubscribe_url: str | None = None,
    headers: Sequence[tuple[str, str]] = (),
) -> bytes:
    """The flattened message, headers and bodies as the email package would mean them.

    Everything is checked by the caller (message.py): header names, no line breaks in
    header values, addresses. `unsubscribe_url` is the checked URL, `headers` the custom
    headers in order. Raises `Unsupported` for what it cannot write exactly.
    """
    lines = [address_list("From", [sender])]
    if to:
        lines.append(address_list("To", to))
    if cc:
        lines.append(address_list("Cc", cc))
    if reply_to:
        lines.append(address_list("Reply-To", reply_to))
    lines.append(unstructured("Subject", subject))
    lines.append(f"Date: {formatdate(usegmt=True)}")
    lines.append(f"Message-ID: {_ascii_value('Message-ID', message_id)}")
    if unsubscribe_url:
        # A URL cannot be folded or encoded: a non-ASCII or huge one goes the long way.
        lines.append(f"List-Unsubscribe: <{_ascii_value('List-Unsubscribe', unsubscribe_url)}>")
        if unsubscribe_url.startswith("https:"):
            lines.append("List-Unsubscribe-Post: List-Unsubscribe=One-Click")
    lines += [unstructured(name, value) for name, value in headers]
    lines.append("MIME-Version: 1.0")

    parts = [_text_part(body, subtype)
             for body, subtype in ((text, "plain"), (html, "html")) if body is not None]
    if not parts:
        raise Unsupported("no body")
    if len(parts) == 1:
        part_headers, body = parts[0]
        return f"{CRLF.join(lines)}{CRLF}{part_headers}{CRLF}{CRLF}".encode() + body
    boundary = _boundary([body for _, body in parts])
    lines.append(f'Content-Type: multipart/alternative; boundary="{boundary}"')
    out = [f"{CRLF.join(lines)}{CRLF}{CRLF}".encode()]
    for part_headers, body in parts:
        out.append(f"--{boundary}{CRLF}{part_headers}{CRLF}{CRLF}".encode())
        out.append(body)
        out.append(b"\r\n")  # the CRLF before a delimiter belongs to the delimiter
    out.append(f"--{boundary}--{CRLF}".encode())
    return b"".join(out)
