"""The lean MIME writer (mailqueue/mail/mime.py), parsed back by the email package.

Every message is parsed with `policy.default` and every header and body part compared,
decoded, with what went in; the wire form is checked on its own too (CRLF only, no line over
998 characters, encoded-words of at most 75 characters that each decode alone). Hypothesis
fuzzes subjects, display names and bodies with derandomized, bounded settings.
"""

from __future__ import annotations

import base64
import binascii
import operator
import re
from datetime import timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailqueue.mail import mime
from mailqueue.mail.addresses import Address
from mailqueue.mail.errors import InvalidMailDataError
from mailqueue.mail.message import Attachment, build_message

FUZZ = settings(
    max_examples=300, derandomize=True, deadline=timedelta(seconds=2), database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
ENCODED_WORD = re.compile(r"=\?utf-8\?([bq])\?([^?]*)\?=")
# A display name written as encoded-words: the run of words, then the address.
ENCODED_NAME = re.compile(r"((?:=\?utf-8\?[bq]\?[^?]*\?=\s*)+)<([^>]+)>")
SENDER = Address("noreply@example.com", "Zoë's App")

# Any code point but lone surrogates (not text): astral, combining marks, controls included.
CHARS = st.characters(blacklist_categories=["Cs"])
HEADER_CHARS = st.characters(blacklist_categories=["Cs"], blacklist_characters="\r\n")
NAME_CHARS = st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp"))  # as addresses.py


def repeated(pieces: list[str], lo: int, hi: int) -> st.SearchStrategy[str]:
    return st.builds(operator.mul, st.sampled_from(pieces), st.integers(lo, hi))


LONG_PIECES = ["s", "é", "😀", "e\u0301", "中", "=?", " ", "ab ", "x=1 "]
header_values = st.one_of(
    st.text(HEADER_CHARS, max_size=120),
    st.text(st.sampled_from("ab é😀 =?_\t"), max_size=200),
    repeated(LONG_PIECES, 1, 1300),
    st.just("=?utf-8?q?not_a_word?="),
)
names = st.one_of(
    st.text(NAME_CHARS, max_size=90),
    st.text(st.sampled_from('ab .,"\\<>@é😀'), max_size=80),
    repeated(["中", "Zoë ", "a", "\U0001f600", "a\u0301"], 1, 60),
).map(str.strip)
bodies = st.one_of(
    st.text(CHARS, max_size=400),
    st.text(st.sampled_from("ab =.-\t\r\n\x00é"), max_size=400),
    st.lists(
        st.one_of(st.text(CHARS, max_size=40), st.sampled_from(["\n", "\r\n", "\r"]),
                  repeated(["y", "é", "😀", "x=1 ", " "], 990, 1100)),
        max_size=8,
    ).map("".join),
    repeated(["y", "é", "😀", "<p>", "a\u0301"], 5000, 5000).map(lambda s: s[:5000]),
    st.just(""),
)


def lf(text: str) -> str:
    # MIME text is CRLF on the wire; CR, LF and CRLF in job data all mean one line break.
    return text.replace("\r\n", "\n").replace("\r", "\n")


def check_wire(data: bytes) -> None:
    """CRLF line ends only, no line over 998, every encoded-word <= 75 and whole UTF-8."""
    text = data.decode("ascii")  # 7-bit: everything non-ASCII is encoded
    lines = text.split("\r\n")
    assert "\r" not in "".join(lines) and "\n" not in "".join(lines)
    assert max(map(len, lines)) <= 998
    head = text.split("\r\n\r\n", 1)[0]
    for match in ENCODED_WORD.finditer(head):
        assert len(match.group()) <= 75
        word_text(match)  # decodes alone: the split fell between characters
    for line in head.split("\r\n"):
        # Encoded text can break anywhere: its lines fit 78. (A long address, URL or ASCII
        # word cannot be broken; only the 998 above holds for it.)
        assert len(line) <= 78 or "=?" not in line, line


def word_text(match: re.Match[str]) -> str:
    kind, payload = match.groups()
    raw = base64.b64decode(payload) if kind == "b" \
        else binascii.a2b_qp(payload.encode(), header=True)
    return raw.decode("utf-8")  # strict: half a character raises


def parse(data: bytes) -> EmailMessage:
    message = message_from_bytes(data, policy=policy.default)
    assert isinstance(message, EmailMessage)
    assert not message.defects
    for part in message.walk():
        assert not part.defects, part.defects
    return message


def wsp_runs(text: str) -> str:
    return re.sub(r"[ \t]+", " ", text)


def check_names(message: EmailMessage, field: str, expected: list[Address]) -> None:
    header = message[field]
    assert [a.addr_spec for a in header.addresses] == [a.email for a in expected]
    # The header as written (unfolded), not the parser's decoded reading of it.
    raw = " ".join(next(v for k, v in message.raw_items() if k == field).split())
    encoded = {email: words for words, email in ENCODED_NAME.findall(raw)}
    for parsed_address, address in zip(header.addresses, expected, strict=True):
        words = encoded.get(address.email)
        if words is None:
            assert parsed_address.display_name == address.name
            continue
        # RFC 2047 6.2: the white space between adjacent encoded-words is not text.
        pieces = [word_text(m) for m in ENCODED_WORD.finditer(words)]
        assert "".join(pieces) == address.name
        # Python's own reading of a display name differs from RFC 2047 in two known ways:
        # it keeps the space between adjacent encoded-words (CPython gh-128110, fixed after
        # 3.13) and it collapses runs of spaces and tabs inside the decoded text. Up to
        # those, and exactly for a one-word name without such runs, it reads the same.
        assert wsp_runs(parsed_address.display_name) == wsp_runs(" ".join(pieces))


def build(**kwargs: Any) -> tuple[bytes, EmailMessage]:
    options: dict[str, Any] = {"sender": SENDER, "to": [Address("a@example.com")],
                                  "subject": "s", "text": "t", "html": None}
    options.update(kwargs)
    out = build_message(**options)
    check_wire(out.data)
    return out.data, parse(out.data)


def check_bodies(message: EmailMessage, text: str | None, html: str | None) -> None:
    for subtype, body in (("plain", text), ("html", html)):
        part = message.get_body((subtype,))
        if body is None:
            assert part is None or part.get_content_subtype() != subtype
            continue
        assert part is not None and part.get_content_subtype() == subtype
        assert lf(part.get_content()) == lf(body)
        encoding = part["Content-Transfer-Encoding"]
        if not body.isascii():
            assert encoding == "base64"
        elif max(map(len, lf(body).split("\n"))) <= 998 \
                and not re.search(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", body):
            assert encoding == "7bit"
        else:
            assert encoding == "quoted-printable"


@FUZZ
@given(subject=header_values, custom=header_values)
def test_fuzz_subject_and_custom_headers_read_back(subject: str, custom: str) -> None:
    _, message = build(subject=subject, headers={"X-Fuzz": custom})
    assert str(message["Subject"]) == subject
    assert str(message["X-Fuzz"]) == custom


@FUZZ
@given(to=st.lists(names, min_size=1, max_size=4), cc=st.lists(names, max_size=2),
       sender=names)
def test_fuzz_display_names_read_back(to: list[str], cc: list[str], sender: str) -> None:
    to_addresses = [Address(f"to{i}@example.com", name) for i, name in enumerate(to)]
    cc_addresses = [Address(f"cc{i}@example.com", name) for i, name in enumerate(cc)]
    from_address = Address("from@example.com", sender)
    _, message = build(sender=from_address, to=to_addresses, cc=cc_addresses,
                       reply_to=[from_address])
    check_names(message, "To", to_addresses)
    check_names(message, "From", [from_address])
    check_names(message, "Reply-To", [from_address])
    if cc_addresses:
        check_names(message, "Cc", cc_addresses)


@FUZZ
@given(text=st.none() | bodies, html=st.none() | bodies)
def test_fuzz_bodies_read_back(text: str | None, html: str | None) -> None:
    if text is None and html is None:
        return
    data, message = build(text=text, html=html)
    check_bodies(message, text, html)
    if text is not None and html is not None:
        assert message.get_content_type() == "multipart/alternative"
        boundary = message.get_boundary()
        assert boundary is not None
        # The delimiter occurs only as the three delimiter lines.
        assert data.count(f"--{boundary}".encode()) == 3


def test_a_typical_message_every_header() -> None:
    data, message = build(
        sender=SENDER, to=[Address("ada@example.com", "Ada Lovelace")],
        cc=[Address("j@example.com", "Jürgen"), Address("k@example.com", "Kim, \"K\"")],
        reply_to=[Address("help@example.com", "Support")],
        bcc=[Address("secret@example.com")], subject="Your order has shipped ✓",
        text="Hello Ada,\n\nIt has shipped.\n", html="<p>Hello Ada,</p>",
        message_id="<emails.42@example.com>", unsubscribe_url="https://example.com/u?id=42",
        headers={"X-Campaign": "orders", "X-Count": 3},
    )
    assert b"secret@example.com" not in data
    assert str(message["Subject"]) == "Your order has shipped ✓"
    check_names(message, "To", [Address("ada@example.com", "Ada Lovelace")])
    check_names(message, "Cc", [Address("j@example.com", "Jürgen"),
                                Address("k@example.com", "Kim, \"K\"")])
    check_names(message, "From", [SENDER])
    assert message["Message-ID"] == "<emails.42@example.com>"
    assert message["List-Unsubscribe"] == "<https://example.com/u?id=42>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["X-Campaign"] == "orders" and message["X-Count"] == "3"
    assert message["MIME-Version"] == "1.0" and message["Date"].datetime is not None
    check_bodies(message, "Hello Ada,\n\nIt has shipped.\n", "<p>Hello Ada,</p>")


@pytest.mark.parametrize("subject", [
    "中文" * 200, "😀" * 300, "e\u0301" * 400, "s" * 1200, "é" + "s" * 2000,
    "word " * 100 + "end", "  spaced  out  ", "=?utf-8?q?x?=", "\tTab",
])
def test_long_and_odd_subjects_fold_and_split_between_characters(subject: str) -> None:
    data, message = build(subject=subject)
    assert str(message["Subject"]) == subject
    head = data.split(b"\r\n\r\n", 1)[0].decode()
    subject_lines = head.split("Subject:", 1)[1].split("\r\nDate:", 1)[0].split("\r\n")
    assert all(len(line) <= 78 for line in subject_lines[1:])
    assert len("Subject:" + subject_lines[0]) <= 78


def test_wire_form_is_crlf_and_7bit() -> None:
    data, _ = build(text="a\nb\r\nc\rd", html="<p>ü</p>")
    assert b"\r\n" in data and b"\n" not in data.replace(b"\r\n", b"")
    assert b"\r" not in data.replace(b"\r\n", b"")


def test_boundaries_are_unique_and_never_in_a_part(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = {build(text="t", html="<p>h</p>")[1].get_boundary() for _ in range(300)}
    assert len(seen) == 300
    # A 7bit part holding the first boundary drawn: the writer draws another.
    drawn = iter(["f" * 32, "0" * 32])
    monkeypatch.setattr(mime.secrets, "token_hex", lambda n: next(drawn))
    text = "--=_" + "f" * 32 + "\n"
    _, message = build(text=text, html="<p>h</p>")
    assert message.get_boundary() == "=_" + "0" * 32
    check_bodies(message, text, "<p>h</p>")


def test_what_the_lean_writer_declines_goes_through_the_email_package() -> None:
    # Attachments, and a URL that cannot be written on a line as it is.
    data, message = build(attachments=[Attachment("a.txt", b"hi", "text/plain")])
    assert message.get_content_type() == "multipart/mixed" and b"=_" not in data
    url = "https://example.com/ü"
    _, message = build(unsubscribe_url=url)
    assert message["List-Unsubscribe"] is not None
    with pytest.raises(mime.Unsupported):
        mime.unstructured("Subject", "\ud800")  # a lone surrogate (JSON allows one)
    with pytest.raises(mime.Unsupported):
        mime.address_list("To", [Address("zoë@example.com")])


def test_header_injection_is_still_refused() -> None:
    for bad in ({"X-A": "a\r\nBcc: x@example.com"}, {"X-A": "a\nb"}):
        with pytest.raises(InvalidMailDataError):
            build(headers=bad)
    with pytest.raises(InvalidMailDataError):
        build(subject="a\rBcc: x@example.com")
