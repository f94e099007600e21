"""Building MIME messages from job data.

The common message — a text body, an HTML body or both, no attachments — is written by
mime.py straight to bytes (~0.05 ms); attachments, and the rare value mime.py declines (a
lone surrogate, a URL too long for a line), go through the legacy `email.mime` classes
(`_flatten`, ~0.5 ms). Either way every header is encoded here or in mime.py, by hand:
RFC 2047 for non-ASCII display names and subjects, RFC 2231 for non-ASCII attachment file
names. Everything that comes from job data is checked first, and a problem raises a
permanent error (`InvalidMailDataError` and subclasses): retrying cannot fix it.
Addresses are parsed in addresses.py. Bodies are encoded so that no line is longer than
RFC 5322 allows (`_text_part` here, `mime._text_part`).
"""

from __future__ import annotations

import base64
import binascii
import mimetypes
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from email import encoders
from email.header import Header
from email.mime.base import MIMEBase
from email.mime.multipart import MIMEMultipart
from email.mime.nonmultipart import MIMENonMultipart
from email.mime.text import MIMEText
from email.policy import compat32
from email.utils import formatdate, make_msgid
from typing import Any
from urllib.parse import urlparse

from mailqueue.mail import mime
from mailqueue.mail.addresses import (
    Address,
    no_line_breaks,
    parse_address,
    parse_address_list,
    parse_sender,
)
from mailqueue.mail.errors import AttachmentTooLargeError, InvalidMailDataError

# Address parsing lives in addresses.py; these names stay importable from here.
__all__ = [
    "Address", "Attachment", "OutgoingMessage", "build_message", "check_unsubscribe_url",
    "decode_attachments", "make_message_id", "parse_address", "parse_address_list",
    "parse_sender",
]

# RFC 5322 2.1.1: at most 998 characters a line, CRLF excluded; servers refuse longer ones
# ("500 Line too long"), so a body with a longer line is encoded (see _text_part).
MAX_LINE = 998
# Job data lives in Redis and is copied on every read: attachments stay small.
MAX_ATTACHMENT_BYTES = 1024 * 1024  # decoded, all attachments of a message together

# Headers the builder writes itself; job data cannot override them.
RESERVED_HEADERS = frozenset(
    {
        "from", "to", "cc", "bcc", "reply-to", "subject", "date", "message-id",
        "mime-version", "content-type", "content-transfer-encoding", "content-disposition",
        "list-unsubscribe-post",
    }
)

_WIRE = compat32.clone(linesep="\r\n")
_HEADER_NAME = re.compile(r"^[!-9;-~]{1,76}$")
_ID_ATOM_SAFE = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(frozen=True, slots=True)
class Attachment:
    filename: str
    content: bytes
    content_type: str = "application/octet-stream"


@dataclass(slots=True)
class OutgoingMessage:
    """A message ready for SMTP: the envelope and the flattened bytes."""

    message_id: str
    sender: str
    recipients: list[str]
    data: bytes
    subject: str
    to: list[str] = field(default_factory=list)


def make_message_id(queue: str, job_id: str, domain: str) -> str:
    """A Message-ID from the queue and job id: the same on every attempt of a job.

    Characters outside [A-Za-z0-9_-] are written `=XX` so any job id gives a valid,
    unique id-left (queue names and job ids cannot collide through the `.` separator).
    """
    def atom(text: str) -> str:
        return _ID_ATOM_SAFE.sub(
            lambda m: "".join(f"={b:02X}" for b in m.group().encode()), text
        )

    return f"<{atom(queue)}.{atom(job_id)}@{domain or 'localhost'}>"


def decode_attachments(items: Any, limit: int = MAX_ATTACHMENT_BYTES) -> list[Attachment]:
    """nodemailer's shape, `[{"filename", "content", "content_type"?, "encoding"?}]`, checked.

    As in nodemailer, `content` is text (sent as UTF-8) unless `encoding` says otherwise:
    `"base64"` for binary files, or `"hex"`, `"utf-8"`, `"ascii"`, `"latin1"`. `path` and
    `href` are refused: job data must not make a worker read its files or fetch URLs.
    """
    if items is None:
        return []
    if not isinstance(items, list):
        raise InvalidMailDataError("attachments: expected a list of {filename, content}")
    attachments: list[Attachment] = []
    total = 0
    for i, item in enumerate(items):
        where = f"attachments[{i}]"
        if not isinstance(item, Mapping):
            raise InvalidMailDataError(f"{where}: expected {{filename, content}}")
        for unsafe in ("path", "href"):
            if item.get(unsafe) is not None:
                raise InvalidMailDataError(
                    f"{where}: '{unsafe}' is not supported (a job cannot make the worker read "
                    "a file or fetch a URL): put the file in 'content'"
                )
        filename, content = item.get("filename"), item.get("content")
        if not isinstance(filename, str) or not filename.strip():
            raise InvalidMailDataError(f"{where}: 'filename' is required")
        no_line_breaks(f"{where}.filename", filename)
        if not isinstance(content, str):
            raise InvalidMailDataError(f"{where}: 'content' must be a string")
        # Check the size before decoding, so a huge payload fails fast and cheaply.
        if total + len(content) * 3 // 4 > limit + 2:
            raise _too_large(filename, total + len(content) * 3 // 4, limit)
        raw = _decode_content(content, item.get("encoding"), where)
        total += len(raw)
        if total > limit:
            raise _too_large(filename, total, limit)
        content_type = item.get("content_type") or (
            mimetypes.guess_type(filename)[0] or "application/octet-stream"
        )
        if not isinstance(content_type, str) or content_type.count("/") != 1:
            raise InvalidMailDataError(f"{where}: 'contentType' must look like 'type/subtype'")
        attachments.append(Attachment(filename.strip(), raw, content_type))
    return attachments


_TEXT_ENCODINGS = {"utf-8": "utf-8", "utf8": "utf-8", "ascii": "ascii", "latin1": "latin-1",
                   "binary": "latin-1"}


def _decode_content(content: str, encoding: Any, where: str) -> bytes:
    name = encoding.lower() if isinstance(encoding, str) else encoding
    try:
        if name is None or name in _TEXT_ENCODINGS:
            return content.encode(_TEXT_ENCODINGS.get(name or "utf-8", "utf-8"))
        if name == "base64":
            return base64.b64decode(content, validate=True)
        if name == "hex":
            return bytes.fromhex(content)
    except (binascii.Error, ValueError) as exc:  # UnicodeEncodeError is a ValueError
        raise InvalidMailDataError(
            f"{where}: 'content' is not valid {name or 'text'}: {exc}"
        ) from exc
    raise InvalidMailDataError(
        f"{where}: unknown 'encoding' {encoding!r}: use base64, hex, utf-8, ascii or latin1 "
        "(none: the content is text)"
    )


def _too_large(filename: str, size: int, limit: int) -> AttachmentTooLargeError:
    return AttachmentTooLargeError(
        f"attachments reach {size:,} bytes at {filename!r}; the limit is {limit:,} bytes per "
        "message (they travel inside the job in Redis): send a link to the file instead"
    )


def check_unsubscribe_url(url: Any, where: str = "unsubscribe_url") -> str:
    """`where`: the field as the producer spelt it (`unsubscribeUrl` for a Node producer)."""
    parsed = urlparse(url) if isinstance(url, str) else None
    if parsed is None or parsed.scheme not in ("https", "http", "mailto") \
            or not (parsed.netloc or parsed.path):
        raise InvalidMailDataError(
            f"{where} {url!r}: expected an https:// (RFC 8058) or mailto: URL"
        )
    return no_line_breaks(where, url)


def _header_text(value: str) -> Any:
    # A Header object: typeshed wants str, but email.mime messages flatten it encoded.
    # Folding only breaks at spaces, so an ASCII word too long for one line (a pasted
    # token as the subject) is RFC 2047-encoded too: encoded-words are split across lines.
    if value.isascii() and (len(value) < 900 or max(map(len, value.split())) < 900):
        return value
    return Header(value, "utf-8")


def _has_long_line(text: str) -> bool:
    # Short texts (most mail) are answered by their length alone; "\n" is the only split
    # needed, a lone "\r" becomes a line break on the wire, which only shortens lines.
    return len(text) > MAX_LINE and any(len(line) > MAX_LINE for line in text.split("\n"))


def _text_part(text: str, subtype: str) -> MIMEBase:
    """A text part whose lines all fit RFC 5322's 998 characters.

    ASCII with short lines goes as it is (7bit, no encoding cost); non-ASCII is base64
    (email's utf-8 charset; 76-character lines). ASCII with a longer line — minified HTML,
    a one-line paragraph — is quoted-printable, encoded by binascii in C: 5 MB in ~50 ms,
    where email.quoprimime takes seconds.
    """
    if not text.isascii():
        return MIMEText(text, subtype, "utf-8")
    if not _has_long_line(text):
        return MIMEText(text, subtype, "us-ascii")
    part = MIMENonMultipart("text", subtype, charset="us-ascii")
    part["Content-Transfer-Encoding"] = "quoted-printable"
    part.set_payload(binascii.b2a_qp(text.encode("ascii"), istext=True).decode("ascii"))
    return part


def _checked_headers(headers: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    """The job's custom headers, checked: valid names, none of ours, no line breaks."""
    checked: list[tuple[str, str]] = []
    for name, value in (headers or {}).items():
        if not isinstance(name, str) or not _HEADER_NAME.match(name):
            raise InvalidMailDataError(f"headers: {name!r} is not a valid header name")
        if name.lower() in RESERVED_HEADERS:
            raise InvalidMailDataError(
                f"headers: {name!r} is set by mailqueue; use the matching field of the job data"
            )
        if not isinstance(value, str | int):
            raise InvalidMailDataError(f"headers: the value of {name!r} must be a string")
        checked.append((name, no_line_breaks(f"headers.{name}", str(value))))
    return checked


def _flatten(
    *, sender: Address, to: list[Address], cc: list[Address], reply_to: list[Address],
    subject: str, text: str | None, html: str | None, files: list[Attachment],
    message_id: str, unsubscribe_url: str | None, headers: list[tuple[str, str]],
) -> bytes:
    """The message through the email package: attachments, and what mime.py does not take."""
    body: MIMEBase
    if text is not None and html is not None:
        body = MIMEMultipart("alternative", _subparts=[_text_part(text, "plain"),
                                                       _text_part(html, "html")])
    elif html is not None:
        body = _text_part(html, "html")
    else:
        assert text is not None
        body = _text_part(text, "plain")

    message: MIMEBase
    if files:
        message = MIMEMultipart("mixed")
        message.attach(body)
        for file in files:
            maintype, subtype = file.content_type.split("/", 1)
            part = MIMEBase(maintype, subtype)
            part.set_payload(file.content)
            encoders.encode_base64(part)
            filename: str | tuple[str, str, str] = (
                file.filename if file.filename.isascii() else ("utf-8", "", file.filename)
            )
            part.add_header("Content-Disposition", "attachment", filename=filename)
            message.attach(part)
    else:
        message = body

    message["From"] = sender.header()
    if to:
        message["To"] = ", ".join(a.header() for a in to)
    if cc:
        message["Cc"] = ", ".join(a.header() for a in cc)
    if reply_to:
        message["Reply-To"] = ", ".join(a.header() for a in reply_to)
    message["Subject"] = _header_text(subject)
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = message_id
    if unsubscribe_url:
        message["List-Unsubscribe"] = f"<{unsubscribe_url}>"
        # RFC 8058 one-click: the POST header only goes with an https URL.
        if unsubscribe_url.startswith("https:"):
            message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    for name, value in headers:
        message[name] = _header_text(value)
    # CRLF line ends, as mime.py writes them and SMTP sends them (aiosmtplib would convert).
    return message.as_bytes(policy=_WIRE)


def build_message(
    *,
    sender: Address,
    to: Iterable[Address],
    subject: str,
    text: str | None,
    html: str | None,
    cc: Iterable[Address] = (),
    bcc: Iterable[Address] = (),
    reply_to: Iterable[Address] = (),
    headers: Mapping[str, Any] | None = None,
    attachments: Iterable[Attachment] = (),
    message_id: str | None = None,
    unsubscribe_url: str | None = None,
) -> OutgoingMessage:
    """Assemble and flatten a message. Bcc recipients are in the envelope, never in a header."""
    to, cc, bcc, reply_to = list(to), list(cc), list(bcc), list(reply_to)
    if not to and not cc and not bcc:
        raise InvalidMailDataError("a message needs at least one recipient in 'to'")
    if text is None and html is None:
        raise InvalidMailDataError("a message needs a text or an HTML body")
    no_line_breaks("subject", subject)
    url = check_unsubscribe_url(unsubscribe_url) if unsubscribe_url else None
    extra = _checked_headers(headers)
    domain = sender.email.rpartition("@")[2]
    message_id = message_id or make_msgid(domain=domain)

    files = list(attachments)
    data: bytes | None = None
    if not files:
        try:
            data = mime.write_message(
                sender=sender, to=to, cc=cc, reply_to=reply_to, subject=subject,
                message_id=message_id, text=text, html=html, unsubscribe_url=url,
                headers=extra,
            )
        except mime.Unsupported:
            data = None  # an unusual value (a lone surrogate, a huge URL): the email package
    if data is None:
        data = _flatten(sender=sender, to=to, cc=cc, reply_to=reply_to, subject=subject,
                        text=text, html=html, files=files, message_id=message_id,
                        unsubscribe_url=url, headers=extra)

    recipients = list(dict.fromkeys(a.email for a in (*to, *cc, *bcc)))
    return OutgoingMessage(
        message_id=message_id,
        sender=sender.email,
        recipients=recipients,
        data=data,
        subject=subject,
        to=[a.email for a in to],
    )
