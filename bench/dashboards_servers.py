"""The processes the dashboards bench compares and fills with: Node BullMQ's fill and helper
scripts (bench/node), Bull Board, and our `mailqueue dashboard`.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from mailqueue.redis_server import free_port

ROOT = Path(__file__).resolve().parent.parent
NODE_DIR = ROOT / "bench" / "node"
LIVE_QUEUE = "live-bench"
SMALL_QUEUES = [f"small-{i:02d}" for i in range(20)]
QUEUES = ["emails", *SMALL_QUEUES, "flow-parents", "flow-children", "reports", LIVE_QUEUE]


def npm_install() -> None:
    if not (NODE_DIR / "node_modules" / "@bull-board" / "express").exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--silent"], cwd=NODE_DIR,
                       check=True, timeout=600)


def node_json(script: str, command: dict[str, Any], timeout: float = 1800) -> list[dict[str, Any]]:
    """Run a bench/node script to its end; its JSON lines (echoed as they come)."""
    process = subprocess.Popen(["node", script, json.dumps(command)], cwd=NODE_DIR,
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    lines: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    for line in process.stdout:
        event = json.loads(line)
        lines.append(event)
        if event.get("event") == "step":
            print(f"  fill: {event['step']}: {event['jobs']:,} jobs in {event['seconds']:.1f} s",
                  flush=True)
        if time.monotonic() > deadline:
            process.kill()
            break
    if process.wait(60) != 0 or lines[-1].get("event") != "done":
        raise SystemExit(f"node {script} failed: {lines[-1:]}")
    return lines


@contextlib.contextmanager
def node_server(script: str, command: dict[str, Any]) -> Iterator[str]:
    process = subprocess.Popen(["node", script, json.dumps(command)], cwd=NODE_DIR,
                               stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        event = json.loads(process.stdout.readline() or "{}")
        if event.get("event") != "ready":
            raise SystemExit(f"node {script} did not start: {event}")
        yield event["url"]
    finally:
        process.terminate()
        process.wait(10)


@contextlib.contextmanager
def our_dashboard(redis_url: str) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "REDIS_URL": redis_url, "QUEUE_PREFIX": "bull", "LOG_LEVEL": "WARNING"}
    for name in ("DASHBOARD_AUTH", "DASHBOARD_VIEWER_AUTH", "DASHBOARD_READ_ONLY"):
        env.pop(name, None)
    process = subprocess.Popen(
        [sys.executable, "-m", "mailqueue.cli", "dashboard", "--host", "127.0.0.1",
         "--port", str(port)], env=env, stdout=subprocess.DEVNULL, cwd=tempfile.gettempdir())
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/health", timeout=2).status_code < 500:
                    break
            time.sleep(0.2)
        else:
            raise SystemExit("our dashboard did not start")
        yield url
    finally:
        process.terminate()
        process.wait(30)


@contextlib.contextmanager
def bull_board(redis_url: str) -> Iterator[str]:
    with node_server("bullboard.mjs", {"redis": redis_url, "queues": QUEUES}) as url:
        yield url + "/ui"


def fill(redis_url: str, scale: float) -> dict[str, Any]:
    lines = node_json("fill.mjs", {"redis": redis_url, "scale": scale})
    done = lines[-1]
    print(f"  fill: done in {done['seconds']:.0f} s: emails {done['emails']}", flush=True)
    return done
