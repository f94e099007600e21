"""One-click unsubscribe (RFC 8058): signed links that name the address they unsubscribe.

A newsletter's `List-Unsubscribe` header holds `<MAIL_UNSUBSCRIBE_URL>/<token>`; the public
unsubscribe app (mailqueue.dashboard.unsubscribe) reads the token back and puts the address
on the suppression list. The token is the authority: nothing else says who unsubscribes, so
it cannot be guessed or changed.

Token: `<payload>.<mac>`, both base64url without padding (URL-safe, no escaping needed).
The payload is `1\\n<expires>\\n<list>\\n<address>` in UTF-8: format version 1, the expiry in
seconds since the epoch, an optional list or campaign name (empty by default; it goes into
the suppression's note), and the address lowercased as the suppression list stores it. The
MAC is HMAC-SHA256 over the payload's base64url text, with a key derived from
MAIL_UNSUBSCRIBE_SECRET for this one use (so the same secret used elsewhere by mistake
signs nothing that counts here). It is compared in constant time (hmac.compare_digest).

A token is refused with an `UnsubscribeTokenError` that says why: `MalformedTokenError`
(not a token: truncated, wrong characters, non-canonical base64), `ForgedTokenError` (the
signature does not match: altered, or not signed with this secret — the two cannot be told
apart, by design) or `ExpiredTokenError` (signed by us, past MAIL_UNSUBSCRIBE_TTL_DAYS). The
expiry is read only once the signature holds.

No web imports here: the core layer makes URLs (the workers) and reads tokens (the app).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import logging
import re
import time
from dataclasses import dataclass
from typing import Any

from mailqueue.errors import MailQueueError
from mailqueue.mail.suppressions import normalize_address

log = logging.getLogger(__name__)

VERSION = "1"
# Far more than any real token (a 254-character address makes ~400): longer is not ours.
MAX_TOKEN_LENGTH = 1024
MAX_LIST_NAME = 64
_MAC_BYTES = 32  # SHA-256, untruncated
_KEY_LABEL = b"mailqueue one-click unsubscribe v1"
_B64URL = re.compile(r"^[A-Za-z0-9_-]+$")
_DAMAGED = ("the link is incomplete or damaged: open the whole link from the e-mail (a mail "
            "program may have cut it)")
# Job names whose messages get a signed link without asking (`unsubscribe: true` asks).
NEWSLETTER_JOBS = frozenset({"send-newsletter"})
NEWSLETTER_TEMPLATES = frozenset({"newsletter"})


class UnsubscribeTokenError(MailQueueError, ValueError):
    """A token that does not unsubscribe anyone; `reason` is one line for the person."""

    kind = "invalid"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class MalformedTokenError(UnsubscribeTokenError):
    kind = "malformed"


class ForgedTokenError(UnsubscribeTokenError):
    """The signature does not match: the token was altered, or not signed by us."""

    kind = "forged"


class ExpiredTokenError(UnsubscribeTokenError):
    kind = "expired"


class UnsubscribeSettingsError(MailQueueError):
    """Signed links asked for without MAIL_UNSUBSCRIBE_URL or MAIL_UNSUBSCRIBE_SECRET."""


@dataclass(frozen=True, slots=True)
class UnsubscribeToken:
    """What a valid token says."""

    address: str  # lowercased, as on the suppression list
    expires: int  # seconds since the epoch
    list_name: str = ""


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    """base64url without padding, canonical only: a text that decodes but is not what
    encoding the bytes gives (a changed unused bit in the last character) is refused, so
    no two tokens decode alike."""
    if not _B64URL.match(text) or len(text) % 4 == 1:
        raise MalformedTokenError(_DAMAGED)
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise MalformedTokenError(_DAMAGED) from None
    if _b64(raw) != text:
        raise MalformedTokenError(_DAMAGED)
    return raw


@functools.lru_cache(maxsize=8)
def _key(secret: bytes) -> bytes:
    return hmac.new(secret, _KEY_LABEL, hashlib.sha256).digest()


def _secret_bytes(secret: Any) -> bytes:
    if hasattr(secret, "get_secret_value"):  # pydantic's SecretStr
        secret = secret.get_secret_value()
    if isinstance(secret, str):
        secret = secret.encode("utf-8")
    if not isinstance(secret, bytes) or not secret:
        raise UnsubscribeSettingsError(
            "an unsubscribe secret is required (MAIL_UNSUBSCRIBE_SECRET)")
    return secret


def _mac(secret: bytes, payload: str) -> bytes:
    return hmac.new(_key(secret), payload.encode("ascii"), hashlib.sha256).digest()


def make_token(secret: Any, address: str, *, expires: int, list_name: str = "") -> str:
    """A token for `address` (checked and lowercased), valid until `expires` (epoch s)."""
    email = normalize_address(address)
    list_name = " ".join(list_name.split())[:MAX_LIST_NAME]
    if expires < 0:
        raise ValueError("expires must be a time in seconds since the epoch")
    payload = _b64("\n".join((VERSION, str(int(expires)), list_name, email)).encode("utf-8"))
    return f"{payload}.{_b64(_mac(_secret_bytes(secret), payload))}"


def read_token(secret: Any, token: Any, *, now: float | None = None) -> UnsubscribeToken:
    """What `token` says, or an UnsubscribeTokenError saying why it is refused."""
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH:
        raise MalformedTokenError("the link is not a valid unsubscribe link")
    payload, dot, mac_text = token.partition(".")
    if not dot or not payload or not mac_text or "." in mac_text:
        raise MalformedTokenError(_DAMAGED)
    mac = _unb64(mac_text)
    raw = _unb64(payload)
    if len(mac) != _MAC_BYTES:
        raise MalformedTokenError(_DAMAGED)
    if not hmac.compare_digest(_mac(_secret_bytes(secret), payload), mac):
        raise ForgedTokenError(
            "the link's signature does not match: it was altered, or not made by this sender"
        )
    # Signed by us from here: what follows fails only for a token of another format version.
    try:
        version, expires_text, list_name, address = raw.decode("utf-8").split("\n")
    except (UnicodeDecodeError, ValueError):
        raise MalformedTokenError("the link is not a valid unsubscribe link") from None
    if version != VERSION or not expires_text.isdigit() or not address:
        raise MalformedTokenError("the link is of an unknown format")
    expires = int(expires_text)
    if (time.time() if now is None else now) >= expires:
        raise ExpiredTokenError(
            "the link has expired: use the link of a more recent e-mail, or ask the sender"
        )
    return UnsubscribeToken(address, expires, list_name)


def settings_secret(settings: Any) -> bytes:
    """MAIL_UNSUBSCRIBE_SECRET's bytes; UnsubscribeSettingsError when it is not set."""
    secret = getattr(settings, "mail_unsubscribe_secret", None)
    if secret is None:
        raise UnsubscribeSettingsError(
            "MAIL_UNSUBSCRIBE_SECRET is not set: one-click unsubscribe links cannot be signed "
            "or checked without it"
        )
    return _secret_bytes(secret)


def unsubscribe_url(settings: Any, address: str, *, list_name: str = "",
                    now: float | None = None) -> str:
    """`<MAIL_UNSUBSCRIBE_URL>/<token>` for `address`, valid MAIL_UNSUBSCRIBE_TTL_DAYS."""
    base = getattr(settings, "mail_unsubscribe_url", None)
    if not base:
        raise UnsubscribeSettingsError("MAIL_UNSUBSCRIBE_URL is not set")
    days = int(getattr(settings, "mail_unsubscribe_ttl_days", 365))
    expires = int(time.time() if now is None else now) + days * 86_400
    token = make_token(settings_secret(settings), address, expires=expires,
                       list_name=list_name)
    return f"{str(base).rstrip('/')}/{token}"


def read_settings_token(settings: Any, token: Any, *, now: float | None = None
                        ) -> UnsubscribeToken:
    """`read_token` with MAIL_UNSUBSCRIBE_SECRET."""
    return read_token(settings_secret(settings), token, now=now)


def url_for_job(settings: Any, job: Any, fields: Any, to: list[Any]) -> str | None:
    """The signed List-Unsubscribe URL a message gets when its job gave none, or None.

    Only with MAIL_UNSUBSCRIBE_URL set, and only for a newsletter: a `send-newsletter` job,
    a job whose `template` is `newsletter`, or any job whose data says `unsubscribe: true`
    (a custom marketing template sent with `send-email`, a newsletter campaign). Transactional
    mail (a password reset, a notification) gets no unsubscribe link unless it asks.

    One message, one recipient: the token names the address it unsubscribes. A message with
    several recipients (more than one `to`, or any `cc`/`bcc`) gets no signed link — one
    token for all would let any of them unsubscribe the others — and a warning is logged:
    send one job per reader (a campaign does), or give the job its own `unsubscribe_url`.
    `fields` is the job's normalized data (mailqueue.mail.jobdata), `to` its parsed `to`.
    """
    if not getattr(settings, "mail_unsubscribe_url", None):
        return None
    options, variables = fields.options, fields.variables
    asked = variables.get("unsubscribe")
    if asked is False:
        return None
    if not (asked is True or getattr(job, "name", None) in NEWSLETTER_JOBS
            or options.get("template") in NEWSLETTER_TEMPLATES):
        return None
    if len(to) != 1 or options.get("cc") or options.get("bcc"):
        log.warning(
            "job %s:%s: no signed List-Unsubscribe link: the message has several recipients "
            "(one token would unsubscribe all of them); send one job per recipient",
            getattr(getattr(job, "queue", None), "name", "?"), getattr(job, "id", "?"))
        return None
    return unsubscribe_url(settings, to[0].email)
