"""The DKIM signature's RSA step through OpenSSL (mailqueue/mail/dkim_rsa.py) gives the
bytes dkimpy's own pure-Python RSA gives: RSASSA-PKCS1-v1_5 is deterministic. If a dkimpy
release changes the functions it replaces, these fail."""

from __future__ import annotations

import hashlib

import dkim
import dkim.crypto
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mailqueue.mail import dkim_rsa


def pem_key(bits: int = 2048) -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return key.private_bytes(serialization.Encoding.PEM,
                             serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


@pytest.mark.parametrize("algorithm", ["sha256", "sha1"])
def test_openssl_signs_the_digest_exactly_as_dkimpy_does(algorithm: str) -> None:
    pem = pem_key()
    dkim_rsa.register(pem)
    parsed = dkim.crypto.parse_pem_private_key(pem)
    for data in (b"", b"From: a@example.com\r\n", bytes(range(256)) * 40):
        digest = hashlib.new(algorithm, data)
        ours = dkim.RSASSA_PKCS1_v1_5_sign(digest, parsed)  # the name dkimpy calls
        theirs = dkim.crypto.RSASSA_PKCS1_v1_5_sign(hashlib.new(algorithm, data), parsed)
        assert ours == theirs


def test_a_key_not_registered_still_goes_to_dkimpy() -> None:
    dkim_rsa.register(pem_key())
    other = dkim.crypto.parse_pem_private_key(pem_key(1024))
    digest = hashlib.sha256(b"x")
    assert dkim.RSASSA_PKCS1_v1_5_sign(digest, other) == \
        dkim.crypto.RSASSA_PKCS1_v1_5_sign(hashlib.sha256(b"x"), other)


def test_a_message_signed_through_openssl_verifies() -> None:
    pem = pem_key()
    dkim_rsa.register(pem)
    public = serialization.load_pem_private_key(pem, None).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    record = b"v=DKIM1; k=rsa; p=" + __import__("base64").b64encode(public)
    message = (b"From: a@example.com\r\nTo: b@example.com\r\nSubject: Hi\r\n"
               b"Message-ID: <m1@example.com>\r\n\r\nHello\r\n")
    signature = dkim.sign(message, b"s1", b"example.com", pem,
                          canonicalize=(b"relaxed", b"relaxed"),
                          include_headers=[b"from", b"to", b"subject"])
    assert dkim.verify(signature + message, dnsfunc=lambda name, timeout=5: record)
    assert not dkim.verify(signature + message.replace(b"Hello", b"Hullo"),
                           dnsfunc=lambda name, timeout=5: record)
