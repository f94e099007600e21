"""DKIM's key file and settings, checked when the signer is made: every bad key is one line
naming the file and its problem; half the settings is an error, not silence; names are
checked without reading the key, and what is harmless is normalised.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from mailqueue.mail.dkim import DkimSettingsError, message_signer
from mailqueue.settings import Settings
from tests.mailqueue.mail.dkim_support import (
    bad_key_files,
    dkim_settings,
    write_key,
)


def test_every_bad_key_is_one_line_naming_the_file(settings: Settings, tmp_path: Path,
                                                   dkim_key: rsa.RSAPrivateKey) -> None:
    for name, (content, problem) in bad_key_files(dkim_key).items():
        path = write_key(tmp_path, name, content)
        with pytest.raises(DkimSettingsError) as caught:
            message_signer(dkim_settings(settings, path))
        assert str(caught.value) == f"MAIL_DKIM_KEY_FILE: {path}: {problem}", name
    with pytest.raises(DkimSettingsError, match=r": is a folder, not a key file$"):
        message_signer(dkim_settings(settings, tmp_path))


def test_half_the_settings_is_an_error_not_silence(settings: Settings, dkim_key_file: Path) -> None:
    with pytest.raises(DkimSettingsError) as caught:
        message_signer(dkim_settings(settings, None))
    assert str(caught.value) == ("DKIM signing needs MAIL_DKIM_DOMAIN, MAIL_DKIM_SELECTOR and "
                                 "MAIL_DKIM_KEY_FILE together: MAIL_DKIM_KEY_FILE is not set")
    only_the_file = Settings(_env_file=None, mail_dkim_key_file=dkim_key_file)  # type: ignore[call-arg]
    with pytest.raises(DkimSettingsError,
                       match=r"MAIL_DKIM_DOMAIN and MAIL_DKIM_SELECTOR are not set$"):
        message_signer(only_the_file)


@pytest.mark.parametrize(("field", "value", "problem"), [
    ("mail_dkim_domain", "exa mple.com",
     "'exa mple.com' is not a domain: 'exa mple' is not a DNS label (letters, digits and "
     "inner hyphens, at most 63)"),
    ("mail_dkim_domain", "-bad.example", "'-bad' is not a DNS label"),
    ("mail_dkim_domain", "bücher.example", "give the xn-- (IDNA) form of the domain"),
    ("mail_dkim_selector", "mail_2026", "'mail_2026' is not a selector"),
    ("mail_dkim_selector", "a" * 64, "is not a DNS label"),
    ("mail_dkim_headers", "To, Subject", "must include From"),
    ("mail_dkim_headers", "From, Received", "Received must not be signed"),
    ("mail_dkim_headers", "From, Sub ject:", "'ject:' is not a header name"),
])
def test_settings_check_names_without_reading_the_key(field: str, value: str,
                                                      problem: str) -> None:
    with pytest.raises(ValueError, match=re.escape(problem)):
        Settings(_env_file=None, **{field: value})  # type: ignore[call-arg]


def test_settings_normalise_what_is_harmless() -> None:
    settings = Settings(_env_file=None, mail_dkim_domain="example.com.",  # type: ignore[call-arg]
                        mail_dkim_selector=" s1.mail ", mail_dkim_key_file="",
                        mail_dkim_headers="from,subject , From,to")
    assert settings.mail_dkim_domain == "example.com"  # as a zone file writes it
    assert settings.mail_dkim_selector == "s1.mail"
    assert settings.mail_dkim_key_file is None
    assert settings.mail_dkim_headers == "from, subject, to"
