"""Node BullMQ for the interop tests: install it once per session and drive tests/node/harness.mjs.

The `node_harness` session fixture runs `npm ci` in tests/node (`npm install` when there is no
lock file) and returns a `NodeHarness`. Without npm it skips, loudly; under CI (the `CI`
environment variable set) it fails instead, so CI can never pass with the interop tests
silently skipped.

The install is guarded by an inter-process file lock and a stamp (hash of the lock file and
the Node version) inside node_modules, so parallel pytest sessions in one checkout neither
reinstall under each other's running Node processes nor pay for `npm ci` every time.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

from tests.required_tools import tool_missing

NODE_DIR = Path(__file__).resolve().parent / "node"
HARNESS = NODE_DIR / "harness.mjs"
INSTALL_TIMEOUT_S = 300
_STAMP = NODE_DIR / "node_modules" / ".mailqueue-install-stamp"


class NodeHarnessError(RuntimeError):
    pass


def _unavailable(reason: str) -> NoReturn:
    tool_missing("NODE BULLMQ INTEROP TESTS", reason,
                 "Install Node.js and npm (e.g. `apt-get install nodejs npm`) to run them.")


def _install(npm: str, node: str) -> None:
    lock = NODE_DIR / "package-lock.json"
    node_version = subprocess.run([node, "--version"], capture_output=True, text=True,
                                  check=True, timeout=30).stdout.strip()
    manifest = lock if lock.exists() else NODE_DIR / "package.json"
    stamp = hashlib.sha256(manifest.read_bytes() + node_version.encode()).hexdigest()
    lock_path = Path(tempfile.gettempdir()) / (
        "mailqueue-node-install-" + hashlib.sha256(str(NODE_DIR).encode()).hexdigest()[:12]
        + ".lock"
    )
    with open(lock_path, "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            if _STAMP.exists() and _STAMP.read_text() == stamp:
                return
            command = [npm, "ci" if lock.exists() else "install", "--no-audit", "--no-fund"]
            try:
                done = subprocess.run(command, cwd=NODE_DIR, capture_output=True, text=True,
                                      timeout=INSTALL_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                pytest.fail(f"`{' '.join(command)}` in {NODE_DIR} took over "
                            f"{INSTALL_TIMEOUT_S} s", pytrace=False)
            if done.returncode != 0:
                pytest.fail(f"`{' '.join(command)}` in {NODE_DIR} failed "
                            f"(exit {done.returncode}):\n{done.stdout[-2000:]}\n"
                            f"{done.stderr[-4000:]}", pytrace=False)
            _STAMP.write_text(stamp)
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


class NodeProcess:
    """A running harness command (e.g. a worker): its JSON lines as they arrive."""

    def __init__(self, proc: asyncio.subprocess.Process, command: dict[str, Any]) -> None:
        self.proc = proc
        self.command = command
        self.events: list[dict[str, Any]] = []

    async def next_event(self, timeout: float = 15) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not line:
            stderr = await self._stderr()
            raise NodeHarnessError(
                f"harness {self.command['op']} ended (exit {await self.proc.wait()}) "
                f"without more output; stderr:\n{stderr}"
            )
        event: dict[str, Any] = json.loads(line)
        self.events.append(event)
        if event.get("event") == "error":
            raise NodeHarnessError(f"harness {self.command['op']}: {event.get('message')}")
        return event

    async def wait_for(self, name: str, timeout: float = 15) -> dict[str, Any]:
        """Read events until one called `name` arrives; returns it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            event = await self.next_event(max(deadline - loop.time(), 0.01))
            if event.get("event") == name:
                return event

    async def finish(self, timeout: float = 15) -> list[dict[str, Any]]:
        """Read to the `done` event and wait for exit; returns every event read."""
        await self.wait_for("done", timeout)
        code = await asyncio.wait_for(self.proc.wait(), timeout)
        if code != 0:
            raise NodeHarnessError(f"harness exited {code}; stderr:\n{await self._stderr()}")
        return self.events

    async def stop(self, timeout: float = 15) -> list[dict[str, Any]]:
        """SIGTERM (the harness closes its worker gracefully), then read to the end."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.terminate()
        return await self.finish(timeout)

    async def kill(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()

    async def _stderr(self) -> str:
        if self.proc.stderr is None:
            return ""
        with contextlib.suppress(asyncio.TimeoutError):
            return (await asyncio.wait_for(self.proc.stderr.read(), 5)).decode(errors="replace")
        return ""


class NodeHarness:
    """The installed harness (session-wide); `bind` gives a per-test runner."""

    def __init__(self, node: str) -> None:
        self.node = node

    def bind(self, redis_url: str, prefix: str) -> NodeRunner:
        return NodeRunner(self.node, redis_url, prefix)


class NodeRunner:
    """Runs tests/node/harness.mjs commands against one Redis URL and key prefix.

    Processes belong to the running test's event loop: call `kill_all` before it ends.
    """

    def __init__(self, node: str, redis_url: str, prefix: str) -> None:
        self.node = node
        self.redis_url = redis_url
        self.prefix = prefix
        self._running: list[NodeProcess] = []

    async def start(self, op: str, **command: Any) -> NodeProcess:
        full = {"op": op, "redis": self.redis_url, "prefix": self.prefix, **command}
        proc = await asyncio.create_subprocess_exec(
            self.node, str(HARNESS), json.dumps(full), cwd=NODE_DIR,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        running = NodeProcess(proc, full)
        self._running.append(running)
        return running

    async def run(self, op: str, timeout: float = 30, **command: Any) -> list[dict[str, Any]]:
        """Run a command to its end; returns its events (raises on an error event)."""
        running = await self.start(op, **command)
        try:
            return await running.finish(timeout)
        finally:
            await running.kill()

    async def kill_all(self) -> None:
        for running in self._running:
            await running.kill()
        self._running.clear()


@pytest.fixture(scope="session")
def node_harness() -> Iterator[NodeHarness]:
    npm, node = shutil.which("npm"), shutil.which("node")
    if npm is None or node is None:
        _unavailable(f"{'npm' if npm is None else 'node'} is not on PATH")
    _install(npm, node)
    yield NodeHarness(node)


@pytest.fixture
async def node(node_harness: NodeHarness, redis_url: str, prefix: str
               ) -> AsyncIterator[NodeRunner]:
    """A harness runner on this test's Redis and key prefix (the same as `mail`'s)."""
    runner = node_harness.bind(redis_url, prefix)
    try:
        yield runner
    finally:
        await runner.kill_all()
