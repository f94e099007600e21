from __future__ import annotations

import base64
from email import message_from_bytes, policy
from email.message import EmailMessage

import pytest

from mailqueue.mail.errors import (
    AttachmentTooLargeError,
    InvalidAddressError,
    InvalidMailDataError,
)
from mailqueue.mail.message import (
    build_message,
    decode_attachments,
    make_message_id,
    parse_address,
    parse_address_list,
    parse_sender,
)

SENDER = parse_sender("Zoë's App <noreply@localhost>")


def parsed(data: bytes) -> EmailMessage:
    message = message_from_bytes(data, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


def test_addresses_are_validated_and_normalised() -> None:
    assert parse_address("Ada <ada@Example.COM>").email == "ada@example.com"
    assert parse_address({"email": "b@example.com", "name": "Bé"}).name == "Bé"
    assert parse_address("a@exämple.com").email == "a@xn--exmple-cua.com"
    for bad in ("not-an-address", "a@b", "ada@", "", 42, {"name": "x"}):
        with pytest.raises(InvalidAddressError):
            parse_address(bad, "to")
    with pytest.raises(InvalidAddressError, match=r"cc\[1\]"):
        parse_address_list(["a@example.com", "nope"], "cc")


def test_headers_non_ascii_names_and_subject_bcc_hidden() -> None:
    out = build_message(
        sender=SENDER,
        to=[parse_address("Zoë Ångström <zoe@example.com>")],
        cc=[parse_address("Jürgen <j@example.com>")],
        bcc=[parse_address("secret@example.com")],
        reply_to=[parse_address("Support <help@example.com>")],
        subject=("Héllo wörld — ça va ? " * 3).strip(),
        text="plain é", html="<p>html é</p>",
        headers={"X-Campaign": "spring-été"},
        message_id="<q.1@localhost>",
    )
    raw = out.data.decode("ascii")  # everything is 7-bit: non-ASCII is encoded
    assert "Zoë" not in raw and "=?utf-8?" in raw
    assert "secret@example.com" not in raw
    assert out.recipients == ["zoe@example.com", "j@example.com", "secret@example.com"]
    message = parsed(out.data)
    assert str(message["Subject"]) == ("Héllo wörld — ça va ? " * 3).strip()
    assert message["To"].addresses[0].display_name == "Zoë Ångström"
    assert message["From"].addresses[0].display_name == "Zoë's App"
    assert message["Cc"].addresses[0].display_name == "Jürgen"
    assert message["Reply-To"].addresses[0].addr_spec == "help@example.com"
    assert message["X-Campaign"] == "spring-été"
    assert message["Message-ID"] == "<q.1@localhost>"
    assert message.get_content_type() == "multipart/alternative"
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None and html is not None
    assert text.get_content() == "plain é" and html.get_content() == "<p>html é</p>"


def test_message_id_is_stable_and_valid_for_any_job_id() -> None:
    first = make_message_id("emails", "42", "example.com")
    assert first == make_message_id("emails", "42", "example.com") == "<emails.42@example.com>"
    odd = make_message_id("emails", "a.b c:<d>", "example.com")
    assert " " not in odd and odd.count("<") == 1 and odd.count(">") == 1
    assert make_message_id("a.b", "c", "x") != make_message_id("a", "b.c", "x")


def test_attachments_are_attached_and_limited() -> None:
    files = decode_attachments([{"filename": "résumé.pdf", "encoding": "base64",
                                 "content": base64.b64encode(b"%PDF-1").decode()}])
    assert files[0].content_type == "application/pdf"
    out = build_message(sender=SENDER, to=[parse_address("a@example.com")], subject="s",
                        text="t", html=None, attachments=files)
    message = parsed(out.data)
    attachment = next(message.iter_attachments())
    assert isinstance(attachment, EmailMessage)
    assert attachment.get_filename() == "résumé.pdf"
    assert attachment.get_content() == b"%PDF-1"

    big = base64.b64encode(b"x" * 2000).decode()
    with pytest.raises(AttachmentTooLargeError, match="limit is 1,000 bytes"):
        decode_attachments([{"filename": "a.bin", "content": big, "encoding": "base64"}],
                           limit=1000)
    with pytest.raises(InvalidMailDataError, match="base64"):
        decode_attachments([{"filename": "a.bin", "content": "***", "encoding": "base64"}])
    with pytest.raises(InvalidMailDataError, match="filename"):
        decode_attachments([{"content": "aGk="}])


def test_list_unsubscribe_headers_rfc_8058() -> None:
    out = build_message(sender=SENDER, to=[parse_address("a@example.com")], subject="s",
                        text="t", html=None, unsubscribe_url="https://example.com/u?id=1")
    message = parsed(out.data)
    assert message["List-Unsubscribe"] == "<https://example.com/u?id=1>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    with pytest.raises(InvalidMailDataError):
        build_message(sender=SENDER, to=[parse_address("a@example.com")], subject="s",
                      text="t", html=None, unsubscribe_url="javascript:alert(1)")


@pytest.mark.parametrize(
    "headers",
    [{"Bcc": "x@example.com"}, {"X-A": "a\r\nBcc: x@example.com"}, {"Bad Name": "v"}],
)
def test_extra_headers_cannot_inject_or_override(headers: dict[str, str]) -> None:
    with pytest.raises(InvalidMailDataError):
        build_message(sender=SENDER, to=[parse_address("a@example.com")], subject="s",
                      text="t", html=None, headers=headers)


def test_subject_with_a_line_break_is_refused() -> None:
    with pytest.raises(InvalidMailDataError):
        build_message(sender=SENDER, to=[parse_address("a@example.com")],
                      subject="a\nBcc: x@example.com", text="t", html=None)


def test_address_lists_in_one_string_give_every_address() -> None:
    emails = [a.email for a in parse_address_list(
        '"Lovelace, Ada" <ada@example.com>; b@example.com, Team: c@example.com, '
        'd@example.com;, Ada L. Lovelace <e@example.com>,', "to")]
    assert emails == ["ada@example.com", "b@example.com", "c@example.com", "d@example.com",
                      "e@example.com"]
    assert parse_address_list("=?utf-8?q?Zo=C3=AB?= <z@example.com>", "to")[0].name == "Zoë"
    with pytest.raises(InvalidAddressError, match="expected one address, found 2"):
        parse_address("a@example.com, b@example.com", "from")


@pytest.mark.parametrize("bad", [
    '"Ada\r\nBcc: evil@example.com" <e2@example.com>', "a@example.com\tb@example.com",
    '"Ada\u2028" <a@example.com>', "=?utf-8?q?A=0D=0AB?= <a@example.com>",
    '"Ada <a@example.com>', "Ada <a@example.com", "a@example.com b@example.com",
    "a@example.com (comment", "a@", "Team: a@example.com", "<>",
])
def test_what_a_strict_parser_refuses_is_refused(bad: str) -> None:
    with pytest.raises(InvalidAddressError) as info:
        parse_address_list(f"ok@example.com, {bad}", "to")
    assert "\r" not in str(info.value) and "\n" not in str(info.value)


def test_long_lines_are_encoded_short_ascii_ones_are_not() -> None:
    long_html = "<p>" + "x=1 " * 2000 + "</p>"
    for text, html, encodings in [
        ("short\n", "<p>short</p>", ["7bit", "7bit"]),
        ("y" * 999, long_html, ["quoted-printable", "quoted-printable"]),
        ("ü" + "y" * 2000, "<p>" + "ü" * 2000 + "</p>", ["base64", "base64"]),
    ]:
        out = build_message(sender=SENDER, to=[parse_address("a@example.com")], subject="s",
                            text=text, html=html)
        assert max(len(line) for line in out.data.split(b"\r\n")) <= 998
        message = parsed(out.data)
        parts = [message.get_body((kind,)) for kind in ("plain", "html")]
        assert [p["Content-Transfer-Encoding"] if p else None for p in parts] == encodings
        # Line breaks travel as CRLF (SMTP's, and MIME's canonical form of text).
        assert [p.get_content().replace("\r\n", "\n") if p else None for p in parts] \
            == [text, html]


def test_a_subject_with_a_word_longer_than_a_line_is_folded() -> None:
    subject = "s" * 1200
    out = build_message(sender=SENDER, to=[parse_address("a@example.com")], subject=subject,
                        text="t", html=None)
    assert max(len(line) for line in out.data.split(b"\n")) <= 998
    assert str(parsed(out.data)["Subject"]) == subject
