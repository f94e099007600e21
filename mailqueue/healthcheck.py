"""`mailqueue-healthcheck [dashboard|worker]`: is this process healthy? Exit 0 or 1, one line.

The Docker image's HEALTHCHECK and docker-compose.yml's `test:` lines run it, and so can
anything else that probes a process by running a command (a Kubernetes exec probe, a systemd
timer, a monitoring agent), on the machine or in the container the process runs in:

- `dashboard` (and `mailqueue run`): GET /health on DASHBOARD_PORT (3000), with the first
  credential of DASHBOARD_AUTH (else DASHBOARD_VIEWER_AUTH; the dashboard asks for one on
  every path), `user:password` as Basic, a token as Bearer; healthy on 200;
- `worker`: a worker of this host (BullMQ names them `<hostname>-<pid>-<n>`) is connected to
  Redis (CLIENT LIST), so a worker that lost Redis or hangs at start is unhealthy;
- no argument: the dashboard check when something listens on its port, else the worker check.

It never waits for Redis (REDIS_CONNECT_TIMEOUT_S is for the long-running processes), and
it stays light, as it runs every 30 s: the standard library, the settings, and (for the
worker check only) the manager; never Starlette, uvicorn or the dashboard.
Exit 1 (not 2, which Docker reserves) for unhealthy, a bad role, or unusable settings.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence

from mailqueue.settings import Settings

ROLES = ("auto", "dashboard", "worker")
USAGE = "usage: mailqueue-healthcheck [dashboard|worker]"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _credential(settings: Settings) -> str | None:
    """The first credential of DASHBOARD_AUTH, else of DASHBOARD_VIEWER_AUTH, or None."""
    credentials = [item.strip() for item in (settings.dashboard_auth or "").split(",")]
    credentials += [item.strip() for item in (settings.dashboard_viewer_auth or "").split(",")]
    return next((item for item in credentials if item), None)


def check_dashboard(settings: Settings) -> tuple[bool | None, str]:
    """(True/False, why), or (None, why) when nothing listens on the port."""
    url = f"http://127.0.0.1:{settings.dashboard_port}/health"
    request = urllib.request.Request(url)
    credential = _credential(settings)
    if credential is not None and ":" in credential:
        token = base64.b64encode(credential.encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    elif credential is not None:
        request.add_header("Authorization", f"Bearer {credential}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return True, f"dashboard: {url} answered {response.status}"
    except urllib.error.HTTPError as exc:
        body = _one_line(exc.read(300).decode(errors="replace"))
        return False, f"dashboard: {url} answered {exc.code}: {body}"
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ConnectionRefusedError):
            return None, f"dashboard: nothing listens on port {settings.dashboard_port}"
        return False, f"dashboard: {url}: {exc.reason}"
    except OSError as exc:
        return False, f"dashboard: {url}: {exc}"


async def check_worker(settings: Settings) -> tuple[bool, str]:
    """(True/False, why): is a worker of this host connected to Redis?"""
    from mailqueue.manager import MailManager  # only the worker check needs bullmq

    host = socket.gethostname().replace(" ", "_") or "host"
    at_once = settings.model_copy(update={"redis_connect_timeout_s": 0.0})
    try:
        async with MailManager(at_once) as mail:
            workers = await mail.workers.list_workers()
    except Exception as exc:
        return False, f"worker: cannot list workers in Redis: {_one_line(str(exc))}"
    ours = [w for w in workers if (w.get("name") or "").startswith(f"{host}-")]
    mine = sorted({f"{w['queue']}:{w['name']}" for w in ours})
    if not mine:
        return False, f"worker: no worker of this host ({host}) is connected to Redis"
    return True, f"worker: {len(mine)} connected ({', '.join(mine)})"


def main(argv: Sequence[str] | None = None) -> int:
    """The console script: the arguments after the program name (sys.argv's by default)."""
    args = list(sys.argv[1:] if argv is None else argv)
    role = args[0] if args else "auto"
    if role not in ROLES or len(args) > 1:
        print(USAGE)
        return 1  # Docker reserves 2
    try:
        settings = Settings()
    except Exception as exc:
        print(f"settings: {_one_line(str(exc))}")
        return 1
    notes: list[str] = []
    if role in ("auto", "dashboard"):
        healthy, why = check_dashboard(settings)
        notes.append(why)
        if healthy is not None or role == "dashboard":
            print(why)
            return 0 if healthy else 1
    worker_healthy, why = asyncio.run(check_worker(settings))
    print("; ".join([*notes, why]))
    return 0 if worker_healthy else 1


if __name__ == "__main__":
    sys.exit(main())
