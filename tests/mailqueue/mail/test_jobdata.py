"""Job data in either spelling (issue 10): snake_case from Python, camelCase and nodemailer's
option names from Node. One function reads it; these are its rules, then the message a
camelCase job builds, checked header by header."""

from __future__ import annotations

import base64
from email import message_from_bytes, policy
from email.message import EmailMessage
from types import SimpleNamespace
from typing import Any

import pytest

from mailqueue.mail.errors import InvalidMailDataError, TemplateNotFoundError
from mailqueue.mail.handlers import MailService
from mailqueue.mail.jobdata import camel_case, normalize_mail_data, snake_case
from mailqueue.mail.message import decode_attachments
from mailqueue.settings import Settings

JOB = SimpleNamespace(queue=SimpleNamespace(name="emails"), id="7")


@pytest.mark.parametrize(("camel", "snake"), [
    ("resetUrl", "reset_url"), ("firstName", "first_name"), ("replyTo", "reply_to"),
    ("unsubscribeUrl", "unsubscribe_url"), ("expiresInMinutes", "expires_in_minutes"),
    ("resetURL", "reset_url"), ("to", "to"), ("reset_url", "reset_url"),
    ("X-Ticket", "X-Ticket"), ("Name", "Name"),
])
def test_snake_case_of_a_key(camel: str, snake: str) -> None:
    assert snake_case(camel) == snake


def test_camel_case_of_a_field() -> None:
    assert camel_case("reset_url") == "resetUrl"
    assert camel_case("expires_in_minutes") == "expiresInMinutes"
    assert camel_case("to") == "to"


def test_nodemailer_options_are_options_not_variables() -> None:
    fields = normalize_mail_data({
        "to": "a@example.com", "replyTo": "help@example.com", "cc": "c@example.com",
        "bcc": ["b@example.com"], "unsubscribeUrl": "https://x.example/u", "resetUrl": "https://r",
        "inReplyTo": "<1@x>", "attachments": [{"filename": "a.txt", "content": "hi",
                                               "contentType": "text/plain"}],
    })
    assert fields.options["reply_to"] == "help@example.com"
    assert fields.options["cc"] == "c@example.com" and fields.options["bcc"] == ["b@example.com"]
    assert fields.options["unsubscribe_url"] == "https://x.example/u"
    assert fields.options["in_reply_to"] == "<1@x>"
    assert fields.options["attachments"] == [
        {"filename": "a.txt", "content": "hi", "content_type": "text/plain"}
    ]
    # Not template variables (before, replyTo was one, and the mail had no Reply-To)...
    assert "replyTo" not in fields.variables and "reply_to" not in fields.variables
    # ...but the unsubscribe URL is both: the header and the templates' footer link.
    assert fields.variables["unsubscribe_url"] == "https://x.example/u"
    # Variables in both spellings: the built-in templates read snake_case, a user's own
    # template may read the producer's.
    assert fields.variables["reset_url"] == fields.variables["resetUrl"] == "https://r"
    assert fields.style == "camel"


def test_snake_case_data_reads_as_before() -> None:
    fields = normalize_mail_data({"to": "a@example.com", "reply_to": "h@example.com",
                                  "reset_url": "https://r", "variables": {"app_name": "Acme"}})
    assert fields.options == {"to": "a@example.com", "reply_to": "h@example.com"}
    assert fields.variables == {"reset_url": "https://r", "app_name": "Acme"}
    assert fields.style == "snake"


def test_nested_variables_in_camel_case_win_over_top_level() -> None:
    fields = normalize_mail_data({"to": "a@example.com", "appName": "Top",
                                  "variables": {"appName": "Nested", "actionUrl": "https://go"}})
    assert fields.variables["app_name"] == "Nested"
    assert fields.variables["action_url"] == "https://go"


def test_two_spellings_of_one_field_must_agree() -> None:
    same = normalize_mail_data({"to": "a@example.com", "resetUrl": "u", "reset_url": "u"})
    assert same.variables["reset_url"] == "u"
    with pytest.raises(InvalidMailDataError, match="both 'replyTo' and 'reply_to'"):
        normalize_mail_data({"to": "a@example.com", "replyTo": "a@x.io", "reply_to": "b@x.io"})


def test_null_is_absent() -> None:
    fields = normalize_mail_data({"to": "a@example.com", "replyTo": None, "name": None})
    assert "reply_to" not in fields.options and "name" not in fields.variables


@pytest.mark.parametrize(("data", "name"), [
    ({"to": "a@example.com", "firstName": "Ada"}, "Ada"),
    ({"to": "Grace Hopper <g@example.com>"}, "Grace Hopper"),
    ({"to": [{"email": "z@example.com", "name": "Zoë"}]}, "Zoë"),
    ({"to": "Grace <g@example.com>", "name": "  "}, "Grace"),
    ({"to": "Grace <g@example.com>", "name": "G."}, "G."),
])
def test_the_greeting_name_falls_back_to_first_name_then_the_recipient(
    data: dict[str, Any], name: str
) -> None:
    assert normalize_mail_data(data).variables["name"] == name


@pytest.mark.parametrize("data", [
    {"to": "a@example.com"}, {"to": ["a@example.com", "Bob <b@example.com>"]},
    {"to": "a@example.com", "name": ""},
])
def test_no_name_at_all_is_no_name(data: dict[str, Any]) -> None:
    assert "name" not in normalize_mail_data(data).variables


@pytest.mark.parametrize(("data", "named"), [
    ({"to": "a@example.com", "firstName": "Ada", "resetLink": "https://r"}, "'resetUrl'"),
    ({"to": "a@example.com", "first_name": "Ada"}, "'reset_url'"),
    ({"to": "a@example.com"}, "'reset_url' (or 'resetUrl')"),
    ({"to": "a@example.com", "resetUrl": "  "}, "'resetUrl'"),
    ({"to": "a@example.com", "reset_url": None, "expires_in_minutes": 5}, "'reset_url'"),
])
def test_a_missing_field_is_named_as_the_producer_spells_it(
    data: dict[str, Any], named: str
) -> None:
    with pytest.raises(InvalidMailDataError) as info:
        normalize_mail_data(data).template_variables("reset-password")
    assert f"template 'reset-password' needs {named} in the job data" in str(info.value)
    # The keys the job has (never their values) show what was written instead.
    assert "(the job has: " in str(info.value)
    assert "https://r" not in str(info.value)


def test_a_notification_takes_its_title_from_the_subject() -> None:
    fields = normalize_mail_data({"to": "a@example.com", "subject": "Disk", "message": "Full"})
    assert fields.template_variables("notification")["title"] == "Disk"
    with pytest.raises(InvalidMailDataError, match="needs 'message'"):
        normalize_mail_data({"to": "a@example.com", "title": "T"}
                            ).template_variables("notification")


def test_nodemailer_options_we_do_not_implement_are_refused() -> None:
    with pytest.raises(InvalidMailDataError, match="'messageId' is a nodemailer option"):
        normalize_mail_data({"to": "a@example.com", "messageId": "<x@y>"})


def test_job_data_must_be_an_object() -> None:
    with pytest.raises(InvalidMailDataError, match="must be an object"):
        normalize_mail_data(["a@example.com"])
    with pytest.raises(InvalidMailDataError, match="'variables' must be an object"):
        normalize_mail_data({"to": "a@example.com", "variables": [1]})


# --- attachments, nodemailer's shape ---------------------------------------------------------

def test_attachment_content_is_text_unless_an_encoding_says_otherwise() -> None:
    png = bytes(range(256))
    files = decode_attachments([
        {"filename": "note.txt", "content": "Grüße"},
        {"filename": "logo.png", "content": base64.b64encode(png).decode(), "encoding": "base64"},
        {"filename": "a.bin", "content": "cafe", "encoding": "hex"},
        {"filename": "data", "content": "x", "content_type": "application/json"},
    ])
    assert [f.content for f in files] == ["Grüße".encode(), png, b"\xca\xfe", b"x"]
    assert [f.content_type for f in files] == ["text/plain", "image/png",
                                               "application/octet-stream", "application/json"]


@pytest.mark.parametrize(("item", "reason"), [
    ({"filename": "a", "content": "***", "encoding": "base64"}, "not valid base64"),
    ({"filename": "a", "content": "zz", "encoding": "hex"}, "not valid hex"),
    ({"filename": "a", "content": "x", "encoding": "rot13"}, "unknown 'encoding' 'rot13'"),
    ({"filename": "a", "path": "/etc/passwd"}, "'path' is not supported"),
    ({"filename": "a", "href": "http://169.254.169.254/"}, "'href' is not supported"),
    ({"filename": "a", "content": 3}, "'content' must be a string"),
])
def test_bad_attachments_are_refused(item: dict[str, Any], reason: str) -> None:
    with pytest.raises(InvalidMailDataError, match=reason):
        decode_attachments([item])


# --- the message a camelCase job builds ------------------------------------------------------

@pytest.fixture
def service(tmp_path: Any) -> MailService:
    return MailService(Settings(_env_file=None, data_dir=tmp_path,  # type: ignore[call-arg]
                                mail_from="App <app@example.com>"))


def parsed(data: bytes) -> EmailMessage:
    message = message_from_bytes(data, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


def test_a_camel_case_job_builds_every_header(service: MailService) -> None:
    name, mail, out = service.prepare({
        "to": "Zoë <zoe@example.com>", "subject": "Bienvenue !", "firstName": "<b>Zoë</b>",
        "replyTo": "Support <support@example.com>", "cc": ["cc@example.com"],
        "bcc": "audit@example.com", "unsubscribeUrl": "https://x.example/u?id=1",
        "inReplyTo": "<42@example.com>", "references": ["<41@example.com>", "<42@example.com>"],
        "actionUrl": "https://app.example/start",
        "attachments": [{"filename": "hello.txt", "content": "Hello", "contentType": "text/plain"}],
    }, "welcome", JOB)
    assert name == "welcome"
    message = parsed(out.data)
    assert message["Subject"] == "Bienvenue !"
    assert message["Reply-To"].addresses[0].addr_spec == "support@example.com"
    assert message["Cc"] == "cc@example.com"
    assert "Bcc" not in message and "audit@example.com" in out.recipients
    assert message["List-Unsubscribe"] == "<https://x.example/u?id=1>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["In-Reply-To"] == "<42@example.com>"
    assert message["References"] == "<41@example.com> <42@example.com>"
    [attachment] = message.iter_attachments()
    assert isinstance(attachment, EmailMessage)
    assert attachment.get_filename() == "hello.txt" and attachment.get_content() == "Hello"
    # firstName greets, escaped in the HTML part (untrusted job data); actionUrl is the button.
    assert "Welcome, &lt;b&gt;Zoë&lt;/b&gt;!" in mail.html and "<b>Zoë</b>" not in mail.html
    assert 'href="https://app.example/start"' in mail.html
    assert "Unsubscribe: https://x.example/u?id=1" in mail.text


def test_the_producer_spelling_is_in_every_refusal(service: MailService) -> None:
    with pytest.raises(InvalidMailDataError, match=r"^replyTo: 'nope' is not a valid"):
        service.prepare({"to": "a@example.com", "replyTo": "nope"}, "welcome", JOB)
    with pytest.raises(InvalidMailDataError, match=r"^unsubscribeUrl 'ftp://x'"):
        service.prepare({"to": "a@example.com", "unsubscribeUrl": "ftp://x"}, "welcome", JOB)
    with pytest.raises(TemplateNotFoundError, match="no e-mail template 'invoice'"):
        service.prepare({"to": "a@example.com"}, "invoice", JOB)
