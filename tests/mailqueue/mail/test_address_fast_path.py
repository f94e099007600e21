"""The plain-address fast path (mailqueue.mail.addresses.plain_email) agrees with
email-validator: whatever it accepts, email-validator accepts and normalises the same way;
what it declines still gets email-validator's answer."""

from __future__ import annotations

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import given, settings
from hypothesis import strategies as st

from mailqueue.mail.addresses import _PLAIN, parse_address, plain_email
from mailqueue.mail.errors import InvalidAddressError


def validator(raw: str) -> str | None:
    try:
        checked = validate_email(raw, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError:
        return None
    return checked.ascii_email or checked.normalized


@settings(max_examples=400, derandomize=True, deadline=None)
@given(st.from_regex(_PLAIN, fullmatch=True))
def test_what_the_fast_path_accepts_email_validator_accepts_alike(raw: str) -> None:
    fast = plain_email(raw)
    if fast is not None:
        assert fast == validator(raw), raw


# Near misses: the alphabet of addresses, with the characters that make them invalid.
_NEAR = st.text(alphabet="aZ09.-_@+'\"()<>[]: \\é", min_size=1, max_size=30)


@settings(max_examples=400, derandomize=True, deadline=None)
@given(_NEAR)
def test_on_any_string_the_fast_path_never_accepts_what_email_validator_refuses(
    raw: str,
) -> None:
    fast = plain_email(raw)
    if fast is not None:
        assert fast == validator(raw), raw


@pytest.mark.parametrize(("raw", "normalised"), [
    ("ada@example.com", "ada@example.com"),
    ("Ada.Lovelace+news@Mail.Example.ORG", "Ada.Lovelace+news@mail.example.org"),
    ("o'brien@example.ie", "o'brien@example.ie"),
])
def test_plain_addresses_take_the_fast_path(raw: str, normalised: str) -> None:
    assert plain_email(raw) == normalised
    assert parse_address(raw).email == normalised


@pytest.mark.parametrize("raw", [
    "ada@example.test",  # special-use name: email-validator refuses it
    "ada@localhost",  # no dot
    "a..b@example.com",  # empty atom
    ".ada@example.com",
    "ada@-example.com",
    "ada@123.456",  # a numeric top-level domain
])
def test_what_the_fast_path_declines_email_validator_refuses(raw: str) -> None:
    assert plain_email(raw) is None
    with pytest.raises(InvalidAddressError):
        parse_address(raw)


@pytest.mark.parametrize("raw", [
    "ada@xn--nxasmq6b.com",  # IDNA
    "ada@example.c0m",  # a digit in the top-level domain
    "x" * 65 + "@example.com",  # a local part over 64 characters
])
def test_unusual_addresses_are_left_to_email_validator(raw: str) -> None:
    assert plain_email(raw) is None
    assert parse_address(raw).email == validator(raw)
