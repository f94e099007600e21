"""DKIM signing of outgoing messages (issue 13, point 6), with dkimpy.

`message_signer(settings)` returns the function MailService applies to every message it
builds. Without DKIM settings it returns the message unchanged. With MAIL_DKIM_DOMAIN,
MAIL_DKIM_SELECTOR and MAIL_DKIM_KEY_FILE it reads the key file, checks the key (an RSA
private key in PEM, at least 1024 bits, whose parts sign and verify) and returns a signer
that prepends a `DKIM-Signature` (rsa-sha256, relaxed/relaxed) to `message.data`, covering
those of MAIL_DKIM_HEADERS the message has. Whatever is wrong with the settings or the key
is a `DkimSettingsError`, one line, raised where the signer is made: `mailqueue worker` and
`mailqueue run` make it before they start anything (exit code 2), so a bad key is never a
failure per job. Signing costs one RSA-2048 private-key operation per message, made by
OpenSSL (mailqueue/mail/dkim_rsa.py; docs/performance.md has the figures).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import logging
import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from mailqueue.dkim_names import signed_header_names
from mailqueue.errors import MailQueueError
from mailqueue.mail import dkim_rsa
from mailqueue.mail.errors import InvalidMailDataError
from mailqueue.mail.message import OutgoingMessage
from mailqueue.settings import Settings

log = logging.getLogger(__name__)

Signer = Callable[[OutgoingMessage], OutgoingMessage]

# RFC 8301 3.2: verifiers must refuse signatures by RSA keys shorter than 1024 bits.
MIN_RSA_BITS = 1024
_MAX_KEY_FILE_BYTES = 64 * 1024  # a PEM RSA key of 16,384 bits is ~12 KB

_PEM_BLOCK = re.compile(
    rb"-----BEGIN ([A-Z0-9 ]+)-----\s*(.*?)\s*-----END \1-----", re.DOTALL
)
_ED25519_OID = b"\x06\x03\x2b\x65\x70"  # 1.3.101.112
_EC_OID = b"\x06\x07\x2a\x86\x48\xce\x3d\x02\x01"  # 1.2.840.10045.2.1


class DkimSettingsError(MailQueueError, ValueError):
    """DKIM settings or a key file that cannot sign: one line naming the setting."""


# --- the key ---------------------------------------------------------------------------------

def _key_problem(path: Path, problem: str) -> DkimSettingsError:
    return DkimSettingsError(f"MAIL_DKIM_KEY_FILE: {path}: {problem}")


def _read_key_file(path: Path) -> bytes:
    try:
        with path.open("rb") as file:
            data = file.read(_MAX_KEY_FILE_BYTES + 1)
    except FileNotFoundError:
        raise _key_problem(path, "no such file") from None
    except IsADirectoryError:
        raise _key_problem(path, "is a folder, not a key file") from None
    except PermissionError:
        raise _key_problem(path, "cannot be read by this process (permission denied)") from None
    except OSError as exc:
        raise _key_problem(path, f"cannot be read: {exc.strerror or exc}") from None
    if len(data) > _MAX_KEY_FILE_BYTES:
        raise _key_problem(path, "is too large for a key file (over 64 KB)")
    return data


def _is_raw_ed25519(data: bytes) -> bool:
    """dkimpy's own Ed25519 key file: the base64 of a 32-byte seed, no PEM."""
    try:
        return len(base64.b64decode(b"".join(data.split()), validate=True)) == 32
    except (binascii.Error, ValueError):
        return False


def load_private_key(path: Path) -> tuple[bytes, int]:
    """The PEM dkimpy signs with, and the key's size in bits; a DkimSettingsError otherwise.

    Any PEM RSA private key: PKCS#1 (`BEGIN RSA PRIVATE KEY`, `openssl genrsa` and dkimpy's
    `dknewkey`) or PKCS#8 (`BEGIN PRIVATE KEY`, OpenSSL 3's `genpkey`), LF or CRLF lines.
    The key signs and verifies a test digest here, so a damaged key stops the start.
    """
    from dkim.crypto import (
        RSASSA_PKCS1_v1_5_sign,
        RSASSA_PKCS1_v1_5_verify,
        parse_pem_private_key,
    )

    data = _read_key_file(path)
    blocks = _PEM_BLOCK.findall(data)
    labels = [label.decode() for label, _ in blocks]
    keys = [(label, body) for label, body in blocks if label.endswith(b"PRIVATE KEY")]
    if not keys:
        if any("PUBLIC KEY" in label for label in labels):
            raise _key_problem(path, "holds a public key: MAIL_DKIM_KEY_FILE takes the private "
                                     "key (the public one goes into DNS)")
        if _is_raw_ed25519(data):
            raise _key_problem(path, "an Ed25519 key (dknewkey --ktype ed25519): mailqueue signs "
                                     "with RSA, which every receiver verifies (use a 2048-bit "
                                     "RSA key)")
        if data.lstrip()[:1] == b"\x30":
            raise _key_problem(path, "is DER, not PEM: convert it with "
                                     "`openssl pkey -inform DER -in KEY -out KEY.pem`")
        raise _key_problem(path, "not a PEM private key (expected -----BEGIN PRIVATE KEY----- "
                                 "or -----BEGIN RSA PRIVATE KEY-----)")
    label, body = keys[0]
    if b"ENCRYPTED" in label or b"Proc-Type: 4,ENCRYPTED" in body:
        raise _key_problem(path, "the key is encrypted: give an unencrypted one "
                                 "(`openssl pkey -in KEY -out PLAIN`) and protect the file instead")
    try:
        der = base64.b64decode(b"".join(body.split()), validate=True)
    except (binascii.Error, ValueError):
        raise _key_problem(path, "damaged PEM: its base64 does not decode") from None
    kind = label.decode().removesuffix("PRIVATE KEY").strip()
    if kind == "EC" or _EC_OID in der[:32]:
        raise _key_problem(path, "an EC key: mailqueue signs with RSA, which every receiver "
                                 "verifies (use a 2048-bit RSA key)")
    if kind not in ("", "RSA") or _ED25519_OID in der[:16]:
        what = "an Ed25519 key" if _ED25519_OID in der[:16] else f"a {kind or 'non-RSA'} key"
        raise _key_problem(path, f"{what}: mailqueue signs with RSA, which every receiver "
                                 "verifies (use a 2048-bit RSA key)")
    # dkimpy reads PEM with LF lines only: rewrap the body as it expects.
    lines = base64.encodebytes(der).rstrip(b"\n")
    pem = b"-----BEGIN %s-----\n%s\n-----END %s-----\n" % (label, lines, label)
    try:
        key = parse_pem_private_key(pem)
    except Exception:  # UnparsableKeyError, or whatever a damaged DER makes it trip on
        raise _key_problem(path, "not an RSA private key: its ASN.1 does not parse as PKCS#1 "
                                 "or PKCS#8 (a damaged file?)") from None
    bits = int(key["modulus"]).bit_length()
    if bits < MIN_RSA_BITS:
        raise _key_problem(path, f"a {bits}-bit RSA key: receivers ignore signatures by keys "
                                 f"under {MIN_RSA_BITS} bits (RFC 8301): use 2048")
    digest = hashlib.sha256(b"mailqueue DKIM key check")
    try:
        signature = RSASSA_PKCS1_v1_5_sign(digest, key)
        good = RSASSA_PKCS1_v1_5_verify(digest, signature, key)
    except Exception:
        good = False
    if not good:
        raise _key_problem(path, "the key's numbers do not fit together (a damaged file?): "
                                 "its signatures would not verify")
    return pem, bits


# --- the signer ------------------------------------------------------------------------------

class DkimSigner:
    """Signs a message: prepends its DKIM-Signature to the message bytes."""

    def __init__(self, domain: str, selector: str, pem: bytes, headers: tuple[str, ...]
                 ) -> None:
        import dkim

        self._dkim: Any = dkim
        self.domain, self.selector = domain, selector
        self._domain, self._selector = domain.encode(), selector.encode()
        self._pem = pem
        self._headers = tuple(h.lower().encode() for h in headers)
        dkim_rsa.register(pem)  # the RSA step through OpenSSL: ~20x faster, same bytes

    def __call__(self, message: OutgoingMessage) -> OutgoingMessage:
        dkim = self._dkim
        try:
            signing = dkim.DKIM(message.data, signature_algorithm=b"rsa-sha256",
                                linesep=b"\r\n", logger=log)
            present = {name.lower() for name, _ in signing.headers}
            header: bytes = signing.sign(
                self._selector, self._domain, self._pem,
                canonicalize=(b"relaxed", b"relaxed"),
                include_headers=[h for h in self._headers if h in present],
            )
        except dkim.DKIMException as exc:
            # The key was checked at start: what is left is the message itself, which
            # would fail the same way on every attempt.
            raise InvalidMailDataError(f"DKIM: cannot sign this message: {exc}") from exc
        return replace(message, data=header + message.data)


def _unsigned(message: OutgoingMessage) -> OutgoingMessage:
    return message


def message_signer(settings: Settings) -> Signer:
    """The signer for `settings`: messages unchanged while DKIM is not configured.

    Reads and checks the key file once per process and key (a second call for the same,
    unchanged file, as `mailqueue worker` makes after its start check, reuses the first's
    work); a DkimSettingsError says what is wrong, in one line.
    """
    values = {
        "MAIL_DKIM_DOMAIN": settings.mail_dkim_domain,
        "MAIL_DKIM_SELECTOR": settings.mail_dkim_selector,
        "MAIL_DKIM_KEY_FILE": settings.mail_dkim_key_file,
    }
    missing = [name for name, value in values.items() if value is None]
    if len(missing) == len(values):
        return _unsigned
    if missing:
        raise DkimSettingsError(
            f"DKIM signing needs MAIL_DKIM_DOMAIN, MAIL_DKIM_SELECTOR and MAIL_DKIM_KEY_FILE "
            f"together: {' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set"
        )
    assert settings.mail_dkim_domain and settings.mail_dkim_selector
    assert settings.mail_dkim_key_file is not None
    path = Path(settings.mail_dkim_key_file).expanduser()
    try:
        stat = path.stat()
        version: tuple[int, ...] = (stat.st_dev, stat.st_ino, stat.st_mtime_ns, stat.st_size)
    except OSError:
        version = ()  # reading it says why, once
    return _make_signer(settings.mail_dkim_domain, settings.mail_dkim_selector, str(path),
                        signed_header_names(settings.mail_dkim_headers), version)


@functools.lru_cache(maxsize=8)
def _make_signer(domain: str, selector: str, path: str, headers: tuple[str, ...],
                 version: tuple[int, ...]) -> DkimSigner:
    pem, bits = load_private_key(Path(path))
    log.info("DKIM signing on: d=%s, s=%s, %d-bit RSA key from %s", domain, selector, bits, path)
    return DkimSigner(domain, selector, pem, headers)
