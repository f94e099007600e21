"""dkimpy's RSA step through OpenSSL, for the keys mailqueue signs with.

dkimpy makes the RSA signature in pure Python (`pow` on 1024-bit halves): ~6 ms of CPU per
message for a 2048-bit key, ~20 ms on a busy machine, which capped a worker at ~150 signed
messages/s. OpenSSL (the `cryptography` package) takes ~0.3 ms. RSASSA-PKCS1-v1_5 is
deterministic: OpenSSL's signature of a digest is byte for byte the one dkimpy computes, so
handing it the digest changes nothing but the time. dkimpy has no hook for this; its module
looks `RSASSA_PKCS1_v1_5_sign` and `parse_pem_private_key` up at each call, so `register()`
puts in front of them versions that serve the keys registered here (by modulus / by PEM
bytes) and pass any other key to dkimpy's own. tests/mailqueue/mail/test_dkim_rsa.py checks
the signatures are identical, so a dkimpy that changes these functions shows at once.
"""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

_KEYS: dict[int, rsa.RSAPrivateKey] = {}  # modulus -> the key, as OpenSSL holds it
_PARSED: dict[bytes, Any] = {}  # PEM -> dkimpy's parsed form (it parsed it at every message)
_HASHES = {"sha256": hashes.SHA256, "sha1": hashes.SHA1}
_dkimpy_sign: Any = None
_dkimpy_parse: Any = None


def register(pem: bytes) -> None:
    """Sign with this RSA key through OpenSSL from now on (idempotent)."""
    import dkim

    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        return
    _install(dkim)
    _KEYS[key.private_numbers().public_numbers.n] = key
    _PARSED[pem] = _dkimpy_parse(pem)


def _install(dkim: Any) -> None:
    global _dkimpy_sign, _dkimpy_parse
    if _dkimpy_sign is None:
        _dkimpy_sign, _dkimpy_parse = dkim.RSASSA_PKCS1_v1_5_sign, dkim.parse_pem_private_key
        dkim.RSASSA_PKCS1_v1_5_sign = _sign
        dkim.parse_pem_private_key = _parse


def _parse(pem: bytes) -> Any:
    parsed = _PARSED.get(pem)
    return parsed if parsed is not None else _dkimpy_parse(pem)


def _sign(digest: Any, private_key: Any) -> bytes:
    modulus = private_key.get("modulus") if isinstance(private_key, dict) else None
    key = _KEYS.get(modulus) if isinstance(modulus, int) else None
    algorithm = _HASHES.get(str(getattr(digest, "name", "")).lower())
    if key is None or algorithm is None:
        return bytes(_dkimpy_sign(digest, private_key))
    return key.sign(digest.digest(), padding.PKCS1v15(), utils.Prehashed(algorithm()))
