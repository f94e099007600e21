"""DKIM signing (issue 13, point 6): real messages through the handlers and a real SMTP sink,
each delivered message's signature verified by dkimpy against the public key, as a receiver
would; a message changed after signing fails; a bad key or half the settings stop
`mailqueue worker` and `mailqueue run` at start with one line and exit code 2.

The test makes its own RSA key pair (cryptography) and answers dkimpy's DNS query for
`<selector>._domainkey.<domain>` with the TXT record an operator would publish.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dkim
import pytest
import redis
from bullmq import Queue
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from dkim.util import parse_tag_value

from mailqueue.mail.dkim import DkimSettingsError, message_signer
from mailqueue.mail.handlers import create_email_handlers
from mailqueue.mail.sink import MailSink
from mailqueue.mail.transport import SmtpTransport
from mailqueue.manager import MailManager
from mailqueue.settings import Settings
from tests.cli.test_errors import assert_one_line, cli, cli_env
from tests.faults.system import MailqueueProcess
from tests.waiting import eventually

DOMAIN, SELECTOR = "example.com", "mq2026"
DnsFunc = Callable[..., bytes | None]


# --- keys and the DNS record ---------------------------------------------------------------

@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


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


@pytest.fixture
def key_file(key: rsa.RSAPrivateKey, tmp_path: Path) -> Path:
    path = tmp_path / "dkim.pem"
    path.write_bytes(private_pem(key))
    path.chmod(0o600)
    return path


def dkim_settings(settings: Settings, key_file: Path | str | None, **extra: Any) -> Settings:
    """The suite's settings plus DKIM, through validation as the environment would go."""
    values = {"mail_dkim_domain": DOMAIN, "mail_dkim_selector": SELECTOR,
              "mail_dkim_key_file": key_file, **extra}
    return Settings(_env_file=None,  # type: ignore[call-arg]
                    redis_url=settings.redis_url, queue_prefix=settings.queue_prefix,
                    data_dir=settings.data_dir, mail_from="Zoë Sender <news@example.com>",
                    **{k: v for k, v in values.items() if v is not None})


@pytest.fixture
def signing(settings: Settings, key_file: Path) -> Settings:
    return dkim_settings(settings, key_file)


@pytest.fixture
def handlers(signing: Settings, transport: SmtpTransport) -> Any:
    return create_email_handlers(signing, transport=transport)


async def delivered(sink: MailSink) -> list[bytes]:
    """The exact bytes the sink received, oldest first."""
    raws = []
    for summary in reversed(await sink.outbox.list_messages(50)):
        full = await sink.outbox.get_message(summary["id"])
        assert full is not None
        raws.append(full["raw"].encode("utf-8", "surrogateescape"))
    return raws


def signature_tags(raw: bytes) -> dict[bytes, bytes]:
    first, _, _ = raw.partition(b"\r\n\r\n")
    assert first.startswith(b"DKIM-Signature: "), first[:80]
    header = re.match(rb"DKIM-Signature: (.*?)\r\n(?! )", first + b"\r\n", re.S)
    assert header is not None
    return parse_tag_value(re.sub(rb"\r\n\s+", b" ", header.group(1)))


def signed_headers(raw: bytes) -> set[str]:
    return {h.strip().decode() for h in signature_tags(raw)[b"h"].split(b":")}


# --- real messages, verified as a receiver verifies them -----------------------------------

BASE = {"from", "to", "subject", "date", "message-id", "mime-version", "content-type"}
MESSAGES: dict[str, tuple[str, dict[str, Any], set[str]]] = {
    # The lean writer's text + HTML alternative.
    "text and html": ("send-email", {
        "to": "bob@example.com", "subject": "Your invoice",
        "text": "Hello Bob,\nyour invoice is attached.\n", "html": "<p>Hello <b>Bob</b></p>",
    }, BASE),
    # RFC 2047 words in Subject, To, Cc and Reply-To; a base64 body.
    "non-ascii subject and names": ("send-welcome", {
        "to": "Zoë Ångström <zoe@example.com>", "name": "Zoë",
        "action_url": "https://app.example/start", "subject": "Grüße, Zoë 🌷",
        "cc": ["Çelik Öztürk <c@example.com>"], "reply_to": "Hélène <help@example.com>",
    }, BASE | {"cc", "reply-to"}),
    # The email package's path: multipart/mixed with a base64 attachment.
    "attachment": ("send-notification", {
        "to": "ops@example.com", "title": "Nightly report", "message": "Attached.",
        "attachments": [{"filename": "rapport-été.csv", "content": "a,b\n1,2\n" * 200}],
    }, BASE),
    # RFC 8058: both unsubscribe headers are signed (receivers require it for one-click).
    "newsletter": ("send-newsletter", {
        "to": "reader@example.com", "campaign": "Spring news",
        "articles": [{"title": "New pool", "summary": "Faster", "url": "https://x.example/1"}],
        "unsubscribe_url": "https://x.example/unsubscribe?u=1",
    }, BASE | {"list-unsubscribe", "list-unsubscribe-post"}),
}


@pytest.mark.parametrize("kind", sorted(MESSAGES))
async def test_each_delivered_message_carries_a_signature_that_verifies(
    kind: str, handlers: Any, queue: Queue, sink: MailSink, key: rsa.RSAPrivateKey
) -> None:
    name, data, headers = MESSAGES[kind]
    job = await queue.add(name, data, {})
    result = await handlers[name](data, job)
    assert result["accepted"]
    [raw] = await delivered(sink)
    dns = dns_with(key)
    assert dkim.verify(raw, dnsfunc=dns) is True
    assert dns.asked == [f"{SELECTOR}._domainkey.{DOMAIN}.".encode()]  # type: ignore[attr-defined]
    tags = signature_tags(raw)
    assert tags[b"a"] == b"rsa-sha256" and tags[b"c"] == b"relaxed/relaxed"
    assert (tags[b"d"], tags[b"s"]) == (DOMAIN.encode(), SELECTOR.encode())
    # Only the configured headers the message has: an absent Cc is not in h=.
    assert signed_headers(raw) == headers
    if kind == "attachment":
        assert b"multipart/mixed" in raw and b'filename*=utf-8' in raw


async def test_a_message_changed_after_signing_fails(
    handlers: Any, queue: Queue, sink: MailSink, key: rsa.RSAPrivateKey
) -> None:
    name, data, _ = MESSAGES["text and html"]
    await handlers[name](data, await queue.add(name, data, {}))
    [raw] = await delivered(sink)
    dns = dns_with(key)
    assert dkim.verify(raw, dnsfunc=dns) is True
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"Hello Bob" in body
    changed = {
        "a word of the body": head + b"\r\n\r\n" + body.replace(b"Hello Bob", b"Hello Rob"),
        "a line added to the body": raw + b"P.S. wire the money elsewhere\r\n",
        "the subject": raw.replace(b"Subject: Your invoice", b"Subject: Your invoicE"),
        "the sender": raw.replace(b"news@example.com", b"news@examp1e.com"),
    }
    for what, tampered in changed.items():
        assert tampered != raw, what
        assert dkim.verify(tampered, dnsfunc=dns) is False, what
    # Another key published under the selector: the signature is not its.
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert dkim.verify(raw, dnsfunc=dns_with(other)) is False
    # Nothing published at all.
    assert dkim.verify(raw, dnsfunc=dns_with(key, selector="other")) is False


async def test_relaxed_canonicalization_survives_what_relays_do(
    handlers: Any, queue: Queue, sink: MailSink, key: rsa.RSAPrivateKey
) -> None:
    """relaxed/relaxed: a relay that changes header case, refolds or pads with spaces, or
    adds an unsigned header, does not break the signature."""
    name, data, _ = MESSAGES["non-ascii subject and names"]
    await handlers[name](data, await queue.add(name, data, {}))
    [raw] = await delivered(sink)
    head, _, body = raw.partition(b"\r\n\r\n")
    relayed = (b"Received: from relay.example by mx.example; Thu, 1 Jan 2026 00:00:00 +0000"
               b"\r\n" + head.replace(b"\r\nSubject:", b"\r\nSUBJECT:  ")
               + b"\r\nX-Spam-Score: 0.1\r\n\r\n" + body.replace(b"\r\n", b"  \r\n"))
    assert dkim.verify(relayed, dnsfunc=dns_with(key)) is True


async def test_the_key_is_read_once_when_the_handlers_are_made(
    signing: Settings, key_file: Path, transport: SmtpTransport, queue: Queue, sink: MailSink,
    key: rsa.RSAPrivateKey
) -> None:
    handlers = create_email_handlers(signing, transport=transport)
    os.remove(key_file)  # jobs never read it: it was read and checked at start
    name, data, _ = MESSAGES["text and html"]
    for _ in range(3):
        await handlers[name](data, await queue.add(name, data, {}))
    raws = await delivered(sink)
    assert len(raws) == 3
    assert all(dkim.verify(raw, dnsfunc=dns_with(key)) for raw in raws)


def test_without_dkim_settings_messages_are_left_alone(settings: Settings) -> None:
    from mailqueue.mail.addresses import parse_address, parse_sender
    from mailqueue.mail.message import build_message

    message = build_message(sender=parse_sender("a@example.com"),
                            to=[parse_address("b@example.com")], subject="s", text="t",
                            html=None)
    assert message_signer(settings)(message) is message


def test_a_pkcs1_key_with_crlf_lines_signs_too(settings: Settings, tmp_path: Path,
                                                key: rsa.RSAPrivateKey) -> None:
    """`openssl genrsa` of OpenSSL 1.x and dknewkey write PKCS#1; Windows editors CRLF."""
    from mailqueue.mail.addresses import parse_address, parse_sender
    from mailqueue.mail.message import build_message

    path = tmp_path / "pkcs1.pem"
    pem = private_pem(key, serialization.PrivateFormat.TraditionalOpenSSL)
    assert pem.startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    path.write_bytes(pem.replace(b"\n", b"\r\n"))
    sign = message_signer(dkim_settings(settings, path, mail_dkim_headers="from subject"))
    message = sign(build_message(sender=parse_sender("a@example.com"),
                                 to=[parse_address("b@example.com")], subject="s", text="t",
                                 html=None))
    assert dkim.verify(message.data, dnsfunc=dns_with(key)) is True
    assert signed_headers(message.data) == {"from", "subject"}


# --- bad keys and settings: one line, at start ---------------------------------------------

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


def _bad_key_files(key: rsa.RSAPrivateKey) -> dict[str, tuple[bytes | None, str]]:
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


def _write(tmp_path: Path, name: str, content: bytes | None) -> Path:
    path = tmp_path / f"{name.replace(' ', '-')}.pem"
    if content is not None:
        path.write_bytes(content)
    return path


def test_every_bad_key_is_one_line_naming_the_file(settings: Settings, tmp_path: Path,
                                                   key: rsa.RSAPrivateKey) -> None:
    for name, (content, problem) in _bad_key_files(key).items():
        path = _write(tmp_path, name, content)
        with pytest.raises(DkimSettingsError) as caught:
            message_signer(dkim_settings(settings, path))
        assert str(caught.value) == f"MAIL_DKIM_KEY_FILE: {path}: {problem}", name
    with pytest.raises(DkimSettingsError, match=r": is a folder, not a key file$"):
        message_signer(dkim_settings(settings, tmp_path))


def test_half_the_settings_is_an_error_not_silence(settings: Settings, key_file: Path) -> None:
    with pytest.raises(DkimSettingsError) as caught:
        message_signer(dkim_settings(settings, None))
    assert str(caught.value) == ("DKIM signing needs MAIL_DKIM_DOMAIN, MAIL_DKIM_SELECTOR and "
                                 "MAIL_DKIM_KEY_FILE together: MAIL_DKIM_KEY_FILE is not set")
    only_the_file = Settings(_env_file=None, mail_dkim_key_file=key_file)  # type: ignore[call-arg]
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


def _dkim_env(tmp_path: Path, key_file: Path | None = None, **extra: str) -> dict[str, str]:
    env = cli_env(tmp_path, **{"MAIL_DKIM_DOMAIN": DOMAIN, "MAIL_DKIM_SELECTOR": SELECTOR,
                               **extra})
    if key_file is not None:
        env["MAIL_DKIM_KEY_FILE"] = str(key_file)
    return env


@pytest.mark.parametrize("name", ["missing", "garbage", "public", "encrypted", "damaged"])
def test_a_bad_key_stops_the_worker_with_one_line_and_exit_2(
    name: str, tmp_path: Path, key: rsa.RSAPrivateKey, redis_url: str, prefix: str
) -> None:
    content, problem = _bad_key_files(key)[name]
    path = _write(tmp_path, name, content)
    env = _dkim_env(tmp_path, path, REDIS_URL=redis_url, QUEUE_PREFIX=prefix)
    assert_one_line(cli(["worker"], env, tmp_path),
                    f"mailqueue: MAIL_DKIM_KEY_FILE: {path}: {problem}")
    # Checked before anything started: no queue made, no worker registered, no key written.
    with redis.Redis.from_url(redis_url) as client:
        assert list(client.scan_iter(f"{prefix}:*")) == []


@pytest.mark.parametrize("args", [["run", "--port", "0"], ["worker", "--processes", "2"]])
def test_run_and_a_worker_pool_check_the_key_before_starting(
    args: list[str], tmp_path: Path, key: rsa.RSAPrivateKey
) -> None:
    content, problem = _bad_key_files(key)["ed25519"]
    path = _write(tmp_path, "ed25519", content)
    assert_one_line(cli(args, _dkim_env(tmp_path, path), tmp_path),
                    f"mailqueue: MAIL_DKIM_KEY_FILE: {path}: {problem}")


@pytest.mark.parametrize(("env", "line"), [
    ({"MAIL_DKIM_KEY_FILE": ""},
     "mailqueue: DKIM signing needs MAIL_DKIM_DOMAIN, MAIL_DKIM_SELECTOR and "
     "MAIL_DKIM_KEY_FILE together: MAIL_DKIM_KEY_FILE is not set"),
    ({"MAIL_DKIM_SELECTOR": "mail_2026", "MAIL_DKIM_KEY_FILE": "/nonexistent/key.pem"},
     "mailqueue: MAIL_DKIM_SELECTOR: 'mail_2026' is not a selector: 'mail_2026' is not a DNS "
     "label (letters, digits and inner hyphens, at most 63)"),
])
def test_bad_dkim_settings_stop_the_worker_with_one_line(env: dict[str, str], line: str,
                                                         tmp_path: Path) -> None:
    assert_one_line(cli(["worker"], _dkim_env(tmp_path, **env), tmp_path), line)


async def test_mailqueue_worker_signs_what_it_sends(
    mail: MailManager, tmp_path: Path, key_file: Path, key: rsa.RSAPrivateKey,
    redis_url: str, prefix: str
) -> None:
    """End to end: the CLI's start check passes, and the worker's messages verify."""
    async with MailSink(mail.client, prefix, register=False) as sink:
        worker = MailqueueProcess(
            tmp_path, ["worker"], redis_url=redis_url, prefix=prefix, SMTP_URL=sink.url,
            LOG_LEVEL="INFO", MAIL_DKIM_DOMAIN=DOMAIN, MAIL_DKIM_SELECTOR=SELECTOR,
            MAIL_DKIM_KEY_FILE=str(key_file),
        )
        try:
            await asyncio.to_thread(worker.wait_for_output, "Ctrl-C to stop")
            await mail.send("welcome", to="Zoë <zoe@example.com>", name="Zoë")

            async def sent() -> bool:
                return await sink.outbox.count() == 1

            await eventually(sent, 30)
        finally:
            code = await asyncio.to_thread(worker.stop)
        [raw] = await delivered(sink)
    assert code == 0, worker.output()
    assert dkim.verify(raw, dnsfunc=dns_with(key)) is True
    output = worker.output()
    # Read once: the start check's line, not one more for the handlers.
    assert output.count("DKIM signing on: d=example.com, s=mq2026, 2048-bit RSA key") == 1, output


def test_send_enqueues_without_the_key(tmp_path: Path, redis_url: str, prefix: str) -> None:
    """Only workers sign: a producer's host with the shared settings needs no key file."""
    env = _dkim_env(tmp_path, tmp_path / "only-on-the-workers.pem", REDIS_URL=redis_url,
                    QUEUE_PREFIX=prefix)
    result = cli(["send", "--to", "ada@example.com", "--var", "name=Ada"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Queued job" in result.stdout
