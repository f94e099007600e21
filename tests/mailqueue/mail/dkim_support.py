"""What the DKIM tests share: the test's TXT record as dkimpy's DNS lookup finds it, settings
with DKIM on, the bytes a sink received, and the bad key files an operator could give.

The tests make their own RSA key pair (cryptography; the `dkim_key` fixture, conftest.py) and
answer dkimpy's DNS query for `<selector>._domainkey.<domain>` with the TXT record an operator
would publish.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from mailqueue.mail.sink import MailSink
from mailqueue.settings import Settings

DOMAIN, SELECTOR = "example.com", "mq2026"
DnsFunc = Callable[..., bytes | None]


def private_pem(key: Any, form: serialization.PrivateFormat = serialization.PrivateFormat.PKCS8
                ) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, form, serialization.NoEncryption())


def txt_record(key: rsa.RSAPrivateKey) -> bytes:
    """What the operator publishes: `v=DKIM1; k=rsa; p=<base64 SubjectPublicKeyInfo>`."""
    der = key.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    return b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)


def dns_with(key: rsa.RSAPrivateKey, selector: str = SELECTOR, domain: str = DOMAIN
             ) -> DnsFunc:
    """dkimpy's `dnsfunc`: the TXT record at `<selector>._domainkey.<domain>.`, no other."""
    record = txt_record(key)
    asked: list[bytes] = []

    def dnsfunc(name: bytes, timeout: float = 5) -> bytes | None:
        asked.append(name)
        return record if name == f"{selector}._domainkey.{domain}.".encode() else None

    dnsfunc.asked = asked  # type: ignore[attr-defined]
    return dnsfunc


def dkim_settings(settings: Settings, key_file: Path | str | None, **extra: Any) -> Settings:
    """The suite's settings plus DKIM, through validation as the environment would go."""
    values = {"mail_dkim_domain": DOMAIN, "mail_dkim_selector": SELECTOR,
              "mail_dkim_key_file": key_file, **extra}
    return Settings(_env_file=None,  # type: ignore[call-arg]
                    redis_url=settings.redis_url, queue_prefix=settings.queue_prefix,
                    data_dir=settings.data_dir, mail_from="Zoë Sender <news@example.com>",
                    **{k: v for k, v in values.items() if v is not None})


async def delivered(sink: MailSink) -> list[bytes]:
    """The exact bytes the sink received, oldest first."""
    raws = []
    for summary in reversed(await sink.outbox.list_messages(50)):
        full = await sink.outbox.get_message(summary["id"])
        assert full is not None
        raws.append(full["raw"].encode("utf-8", "surrogateescape"))
    return raws


def _der_integer(n: int) -> bytes:
    body = n.to_bytes(n.bit_length() // 8 + 1, "big")
    return b"\x02" + _der_length(len(body)) + body


def _der_length(n: int) -> bytes:
    return bytes([n]) if n < 0x80 else bytes([0x80 | ((n.bit_length() + 7) // 8)]) + \
        n.to_bytes((n.bit_length() + 7) // 8, "big")


def pkcs1_pem(n: int, e: int, d: int, p: int, q: int, dp: int, dq: int, qi: int) -> bytes:
    """An RSAPrivateKey PEM from its numbers, whatever they are (cryptography refuses both
    keys under 1024 bits and numbers that do not fit together)."""
    body = b"".join(_der_integer(x) for x in (0, n, e, d, p, q, dp, dq, qi))
    der = b"\x30" + _der_length(len(body)) + body
    b64 = base64.encodebytes(der)
    return b"-----BEGIN RSA PRIVATE KEY-----\n" + b64 + b"-----END RSA PRIVATE KEY-----\n"


def small_key_pem() -> bytes:
    p, q, e = 2**255 - 19, 2**256 - 189, 65537  # two primes: a 511-bit modulus
    d = pow(e, -1, (p - 1) * (q - 1))
    return pkcs1_pem(p * q, e, d, p, q, d % (p - 1), d % (q - 1), pow(q, -1, p))


def damaged_key_pem(key: rsa.RSAPrivateKey) -> bytes:
    numbers = key.private_numbers()
    pub = numbers.public_numbers
    return pkcs1_pem(pub.n, pub.e, numbers.d, numbers.p, numbers.q, numbers.dmp1 + 2,
                     numbers.dmq1, numbers.iqmp)


def bad_key_files(key: rsa.RSAPrivateKey) -> dict[str, tuple[bytes | None, str]]:
    """name -> (file contents, None: no file), the problem the line states."""
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    encrypted = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.BestAvailableEncryption(b"secret"))
    edwards = private_pem(ed25519.Ed25519PrivateKey.generate())
    elliptic = private_pem(ec.generate_private_key(ec.SECP256R1()))
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    pem = private_pem(key)
    return {
        "missing": (None, "no such file"),
        "empty": (b"", "not a PEM private key (expected -----BEGIN PRIVATE KEY----- or "
                       "-----BEGIN RSA PRIVATE KEY-----)"),
        "garbage": (b"ssh-rsa AAAAB3Nza... me@laptop\n",
                    "not a PEM private key (expected -----BEGIN PRIVATE KEY----- or "
                    "-----BEGIN RSA PRIVATE KEY-----)"),
        "public": (public, "holds a public key: MAIL_DKIM_KEY_FILE takes the private key "
                           "(the public one goes into DNS)"),
        "encrypted": (encrypted, "the key is encrypted: give an unencrypted one (`openssl "
                                 "pkey -in KEY -out PLAIN`) and protect the file instead"),
        "der": (der, "is DER, not PEM: convert it with "
                     "`openssl pkey -inform DER -in KEY -out KEY.pem`"),
        "truncated": (b"\n".join(pem.splitlines()[:10]) + b"\n-----END PRIVATE KEY-----\n",
                      "not an RSA private key: its ASN.1 does not parse as PKCS#1 or PKCS#8 "
                      "(a damaged file?)"),
        "bad base64": (pem.replace(pem.splitlines()[3], b"!!" + pem.splitlines()[3][2:]),
                       "damaged PEM: its base64 does not decode"),
        "damaged": (damaged_key_pem(key), "the key's numbers do not fit together (a damaged "
                                          "file?): its signatures would not verify"),
        "512 bits": (small_key_pem(), "a 511-bit RSA key: receivers ignore signatures by keys "
                                      "under 1024 bits (RFC 8301): use 2048"),
        "ed25519": (edwards, "an Ed25519 key: mailqueue signs with RSA, which every receiver "
                             "verifies (use a 2048-bit RSA key)"),
        "ec": (elliptic, "an EC key: mailqueue signs with RSA, which every receiver verifies "
                         "(use a 2048-bit RSA key)"),
    }


def write_key(tmp_path: Path, name: str, content: bytes | None) -> Path:
    path = tmp_path / f"{name.replace(' ', '-')}.pem"
    if content is not None:
        path.write_bytes(content)
    return path
