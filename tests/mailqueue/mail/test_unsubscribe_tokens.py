"""One-click unsubscribe links (issue 13, point 3; RFC 8058): the signed tokens, their
settings, and which messages carry them (mailqueue.mail.unsubscribe, MailService.build)."""

from __future__ import annotations

import base64
import hmac
import logging
import time
from email import message_from_bytes, policy
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import ValidationError

from mailqueue.cli.common import _settings_problem
from mailqueue.mail.handlers import MailService
from mailqueue.mail.unsubscribe import (
    ExpiredTokenError,
    ForgedTokenError,
    MalformedTokenError,
    UnsubscribeSettingsError,
    UnsubscribeTokenError,
    make_token,
    read_settings_token,
    read_token,
    unsubscribe_url,
)
from mailqueue.settings import Settings

SECRET = "correct horse battery staple"
BASE = "https://news.example.org/u"
NOW = 1_800_000_000


def unsub_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {"mail_unsubscribe_url": BASE, "mail_unsubscribe_secret": SECRET}
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def token_for(address: str = "Ada@Example.com", expires: int = NOW + 3600, **kw: Any) -> str:
    return make_token(SECRET, address, expires=expires, **kw)


# --- the token ----------------------------------------------------------------------------


def test_a_token_names_the_lowercased_address_its_expiry_and_list() -> None:
    token = token_for(list_name="Monthly news")
    read = read_token(SECRET, token, now=NOW)
    assert (read.address, read.expires, read.list_name) == ("ada@example.com", NOW + 3600,
                                                            "Monthly news")
    # Compact and URL-safe: base64url payload "." base64url MAC, nothing to escape.
    payload, mac = token.split(".")
    assert all(c.isalnum() or c in "-_" for c in payload + mac)
    assert len(base64.urlsafe_b64decode(mac + "=")) == 32  # HMAC-SHA256
    assert len(token) < 120


def test_the_mac_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    read_token(SECRET, token_for(), now=NOW)
    with pytest.raises(ForgedTokenError):
        read_token("another secret of some length", token_for(), now=NOW)
    assert len(calls) == 2 and all(len(a) == len(b) == 32 for a, b in calls)


def test_a_token_signed_with_another_secret_is_forged() -> None:
    forged = make_token("not the server's secret!", "ada@example.com", expires=NOW + 3600)
    with pytest.raises(ForgedTokenError, match="signature does not match"):
        read_token(SECRET, forged, now=NOW)


def test_another_address_or_a_later_expiry_under_the_old_mac_is_refused() -> None:
    mac = token_for().split(".")[1]
    for changed in (token_for("eve@example.com"), token_for(expires=NOW + 10**8),
                    token_for(list_name="x")):
        other_payload = changed.split(".")[0]
        with pytest.raises(ForgedTokenError):
            read_token(SECRET, f"{other_payload}.{mac}", now=NOW)
    # A payload made by hand (no MAC at all for it) neither.
    raw = base64.urlsafe_b64encode(b"1\n9999999999\n\nboss@example.com").rstrip(b"=").decode()
    with pytest.raises(ForgedTokenError):
        read_token(SECRET, f"{raw}.{mac}", now=NOW)


def test_every_one_character_alteration_is_refused() -> None:
    token = token_for()
    for i, original in enumerate(token):
        for replacement in "A_-0z.":
            if replacement == original:
                continue
            altered = token[:i] + replacement + token[i + 1:]
            with pytest.raises(UnsubscribeTokenError):
                read_token(SECRET, altered, now=NOW)
    # Cut short, or lengthened.
    for altered in (token[:-1], token[1:], token + "A", "A" + token):
        with pytest.raises(UnsubscribeTokenError):
            read_token(SECRET, altered, now=NOW)


def test_an_expired_token_is_refused_but_only_once_its_signature_holds() -> None:
    token = token_for(expires=NOW + 60)
    assert read_token(SECRET, token, now=NOW + 59).address == "ada@example.com"
    with pytest.raises(ExpiredTokenError, match="expired"):
        read_token(SECRET, token, now=NOW + 60)
    # An old token signed by someone else: forged, whatever its expiry says.
    old = make_token("not the server's secret!", "ada@example.com", expires=NOW - 1)
    with pytest.raises(ForgedTokenError):
        read_token(SECRET, old, now=NOW)


@pytest.mark.parametrize("token", [
    "", ".", "abc", "abc.", ".abc", "a.b.c", "x" * 2000 + "." + "y" * 43,
    "payload with spaces.mac", "pay<script>.mac", "cGF5bG9hZA==.bWFj", "é.é", None, 42,
])
def test_malformed_tokens_are_refused(token: Any) -> None:
    with pytest.raises(MalformedTokenError):
        read_token(SECRET, token, now=NOW)


def test_a_signed_payload_of_another_format_is_refused(monkeypatch: pytest.MonkeyPatch
                                                       ) -> None:
    from mailqueue.mail import unsubscribe

    payload = base64.urlsafe_b64encode(b"2\nsomething else").rstrip(b"=").decode()
    mac = unsubscribe._b64(unsubscribe._mac(SECRET.encode(), payload))
    with pytest.raises(MalformedTokenError, match=r"unknown format|not a valid"):
        read_token(SECRET, f"{payload}.{mac}", now=NOW)


def test_every_error_is_a_value_error_with_a_one_line_reason() -> None:
    for error in (MalformedTokenError, ForgedTokenError, ExpiredTokenError):
        assert issubclass(error, UnsubscribeTokenError) and issubclass(error, ValueError)
    try:
        read_token(SECRET, "nope.nope", now=NOW)
    except UnsubscribeTokenError as exc:
        assert exc.reason and "\n" not in exc.reason and exc.kind in ("malformed", "forged")


# --- settings ----------------------------------------------------------------------------


def test_unsubscribe_url_is_the_setting_then_the_token_valid_ttl_days() -> None:
    settings = unsub_settings(mail_unsubscribe_url=BASE + "/", mail_unsubscribe_ttl_days=30)
    url = unsubscribe_url(settings, "Ada@Example.com", now=NOW)
    assert url.startswith(BASE + "/") and "/" not in url.removeprefix(BASE + "/")
    read = read_settings_token(settings, url.rsplit("/", 1)[1], now=NOW)
    assert read.address == "ada@example.com" and read.expires == NOW + 30 * 86_400
    assert unsub_settings().mail_unsubscribe_ttl_days == 365


@pytest.mark.parametrize("url", ["https://news.example.org/u", "https://news.example.org",
                                 "http://localhost:3001", "http://127.0.0.1:3001/u",
                                 "https://x.example:8443/a/b/"])
def test_https_urls_and_local_http_ones_are_accepted(url: str) -> None:
    assert unsub_settings(mail_unsubscribe_url=url).mail_unsubscribe_url == url.rstrip("/")


@pytest.mark.parametrize(("url", "expected"), [
    ("http://news.example.org/u", "must be https"),
    ("ftp://news.example.org/u", "must be an https:// URL"),
    ("news.example.org/u", "must be an https:// URL"),
    ("https://news.example.org/u?list=1", "query or fragment"),
    ("https://news.example.org/u#x", "query or fragment"),
    ("https://user:pw@news.example.org/u", "user name or password"),
    ("https://news.example.org/u nsub", "without spaces"),
])
def test_other_urls_are_refused_with_a_reason(url: str, expected: str) -> None:
    with pytest.raises(ValidationError) as caught:
        unsub_settings(mail_unsubscribe_url=url)
    (error,) = caught.value.errors()
    assert error["loc"] == ("mail_unsubscribe_url",) and expected in error["msg"]


def test_the_secret_is_required_with_the_url_one_line_naming_it() -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(_env_file=None, mail_unsubscribe_url=BASE)  # type: ignore[call-arg]
    (error,) = caught.value.errors()
    line = _settings_problem(error)
    assert line.startswith("MAIL_UNSUBSCRIBE_SECRET: required when MAIL_UNSUBSCRIBE_URL is set")
    assert "\n" not in line
    with pytest.raises(ValidationError, match="at least 16"):
        unsub_settings(mail_unsubscribe_secret="short")
    # Neither set: nothing is signed, and nothing is required.
    plain = Settings(_env_file=None)  # type: ignore[call-arg]
    assert plain.mail_unsubscribe_url is None and plain.mail_unsubscribe_secret is None
    with pytest.raises(UnsubscribeSettingsError):
        unsubscribe_url(plain, "ada@example.com")


def test_the_secret_is_masked_like_the_other_secrets(tmp_path: Path) -> None:
    settings = unsub_settings()
    for text in (repr(settings), str(settings)):
        assert SECRET not in text and "mail_unsubscribe_secret='***'" in text
    assert settings.mail_unsubscribe_secret is not None
    assert settings.mail_unsubscribe_secret.get_secret_value() == SECRET
    # From the environment and .env too.
    (tmp_path / ".env").write_text(f"MAIL_UNSUBSCRIBE_URL={BASE}\n"
                                   f"MAIL_UNSUBSCRIBE_SECRET={SECRET}\n")
    from_file = Settings(_env_file=tmp_path / ".env")  # type: ignore[call-arg]
    assert from_file.mail_unsubscribe_url == BASE and SECRET not in repr(from_file)


# --- which messages carry a signed link ----------------------------------------------------


def job(name: str, job_id: str = "1") -> Any:
    return SimpleNamespace(name=name, id=job_id, queue=SimpleNamespace(name="emails"))


def headers_of(service: MailService, name: str, template: str | None, data: dict[str, Any]
               ) -> Any:
    _, _, message = service.prepare(data, template, job(name))
    return message_from_bytes(message.data, policy=policy.default)


def test_a_newsletter_gets_a_signed_https_link_and_the_one_click_header() -> None:
    settings = unsub_settings()
    service = MailService(settings)
    parsed = headers_of(service, "send-newsletter", "newsletter",
                        {"to": "Ada Lovelace <Ada@Example.com>"})
    value = parsed["List-Unsubscribe"]
    # RFC 8058 section 3.1: one https URI in angle brackets, and the POST header exactly so.
    assert value.startswith(f"<{BASE}/") and value.endswith(">") and "," not in value
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    token = value[1:-1].rsplit("/", 1)[1]
    assert read_settings_token(settings, token).address == "ada@example.com"
    # On the wire: each header on one line, as written.
    _, _, message = service.prepare({"to": "ada@example.com"}, "newsletter",
                                    job("send-newsletter"))
    lines = message.data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    assert b"List-Unsubscribe-Post: List-Unsubscribe=One-Click" in lines
    assert any(line.startswith(b"List-Unsubscribe: <https://") for line in lines)


def test_which_jobs_get_a_link() -> None:
    service = MailService(unsub_settings())
    reset = {"to": "ada@example.com", "reset_url": "https://x.example/r"}
    assert headers_of(service, "send-reset-password", "reset-password", reset)[
        "List-Unsubscribe"] is None  # transactional: none
    assert headers_of(service, "send-welcome", "welcome", {"to": "ada@example.com"})[
        "List-Unsubscribe"] is None
    # Any job asks with `unsubscribe: true`; a send-email naming the newsletter template too.
    asked = headers_of(service, "send-email", None, {"to": "ada@example.com", "subject": "Hi",
                                                    "text": "Hello", "unsubscribe": True})
    assert asked["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    by_template = headers_of(service, "send-email", None,
                             {"to": "ada@example.com", "template": "newsletter"})
    assert by_template["List-Unsubscribe"].startswith(f"<{BASE}/")
    # A newsletter may opt out; its own URL wins over the signed one.
    assert headers_of(service, "send-newsletter", "newsletter",
                      {"to": "ada@example.com", "unsubscribe": False})[
        "List-Unsubscribe"] is None
    own = headers_of(service, "send-newsletter", "newsletter",
                     {"to": "ada@example.com", "unsubscribeUrl": "https://mine.example/u/1"})
    assert own["List-Unsubscribe"] == "<https://mine.example/u/1>"
    # Without MAIL_UNSUBSCRIBE_URL, nothing changes.
    plain = MailService(Settings(_env_file=None))  # type: ignore[call-arg]
    assert headers_of(plain, "send-newsletter", "newsletter", {"to": "ada@example.com"})[
        "List-Unsubscribe"] is None


def test_several_recipients_get_no_signed_link_and_a_warning(
    caplog: pytest.LogCaptureFixture
) -> None:
    service = MailService(unsub_settings())
    caplog.set_level(logging.WARNING, "mailqueue.mail.unsubscribe")
    for data in ({"to": ["ada@example.com", "bob@example.com"]},
                 {"to": "ada@example.com", "cc": "bob@example.com"},
                 {"to": "ada@example.com", "bcc": "bob@example.com"}):
        assert headers_of(service, "send-newsletter", "newsletter", data)[
            "List-Unsubscribe"] is None
    assert len(caplog.records) == 3
    assert all("several recipients" in r.getMessage() for r in caplog.records)


def test_a_local_http_url_gets_the_link_but_not_the_one_click_header() -> None:
    # RFC 8058: one-click needs https. A development URL still gives the plain header.
    service = MailService(unsub_settings(mail_unsubscribe_url="http://127.0.0.1:3001"))
    parsed = headers_of(service, "send-newsletter", "newsletter", {"to": "ada@example.com"})
    assert parsed["List-Unsubscribe"].startswith("<http://127.0.0.1:3001/")
    assert parsed["List-Unsubscribe-Post"] is None


def test_signing_is_cheap() -> None:
    settings = unsub_settings()
    start = time.perf_counter()
    for i in range(2000):
        unsubscribe_url(settings, f"reader{i}@example.com")
    assert (time.perf_counter() - start) / 2000 < 0.001  # well under a millisecond a link


def test_the_footer_link_is_the_signed_one_click_url() -> None:
    service = MailService(unsub_settings())
    _, mail, message = service.prepare({"to": "ada@example.com"}, "newsletter",
                                       job("send-newsletter"))
    parsed = message_from_bytes(message.data, policy=policy.default)
    url = parsed["List-Unsubscribe"][1:-1]
    assert f'href="{url}"' in mail.html and url in mail.text
    # A job's own URL wins, in the footer too.
    _, own, _ = service.prepare({"to": "ada@example.com",
                                 "unsubscribe_url": "https://mine.example/u/1"},
                                "newsletter", job("send-newsletter"))
    assert 'href="https://mine.example/u/1"' in own.html and BASE not in own.html
