# syntax=docker/dockerfile:1
# The mailqueue image: one image, the command picks the role (worker, dashboard, run).
# Needs BuildKit (the default builder since Docker 23): a heredoc and a bind mount below.
#
# Two stages: `build` makes the wheel exactly as tests/packaging/test_wheel.py does (the sdist,
# then the wheel from the sdist) and the wheels of its dependencies; the final stage installs
# from those wheels alone. No source tree, no editable install, no build tools in the image.

FROM python:3.11.13-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
# What the build reads (pyproject maps dashboard/, templates/ and static/ into the package).
COPY pyproject.toml README.md LICENSE ./
COPY mailqueue ./mailqueue
COPY dashboard ./dashboard
COPY templates ./templates
COPY static ./static
RUN pip install "build>=1.2" \
 && python -m build --outdir /dist . \
 && pip wheel --wheel-dir /wheels /dist/mailqueue-*.whl

FROM python:3.11.13-slim-bookworm
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# The wheels are mounted for this one step, never copied into a layer. Only wheels, no index:
# nothing is compiled here. setuptools and wheel (in the base image) go: nothing needs them.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links /wheels mailqueue \
 && pip uninstall --yes setuptools wheel \
 && useradd --uid 10001 --user-group --create-home --home-dir /home/mailqueue \
        --shell /usr/sbin/nologin mailqueue

# The health check, right for the role the container runs (one image, several roles):
#   dashboard (and `run`): GET /health on DASHBOARD_PORT (3000), with DASHBOARD_AUTH's first
#     credential (the dashboard asks for it on every path), healthy on 200;
#   worker: a worker of this container (BullMQ names them <hostname>-<pid>-<n>) is connected
#     to Redis (CLIENT LIST), so a worker that lost Redis or hangs at start is unhealthy;
#   no argument (the image's HEALTHCHECK): the dashboard when something listens on its port,
#     else the worker check. docker-compose.yml names the role of each service.
# Never waits for Redis (REDIS_CONNECT_TIMEOUT_S is for the long-running processes).
# Exit 0 healthy, 1 unhealthy, with one line saying why (`docker inspect` shows it).
COPY --chmod=0755 <<'EOF' /usr/local/bin/mailqueue-healthcheck
#!/usr/local/bin/python
import asyncio
import base64
import socket
import sys
import urllib.error
import urllib.request

from mailqueue.settings import Settings


def check_dashboard(settings):
    """(True/False, why), or (None, why) when nothing listens on the port."""
    url = f"http://127.0.0.1:{settings.dashboard_port}/health"
    request = urllib.request.Request(url)
    credentials = [item.strip() for item in (settings.dashboard_auth or "").split(",")]
    credentials += [item.strip() for item in (settings.dashboard_viewer_auth or "").split(",")]
    credential = next((item for item in credentials if item), None)
    if credential is not None and ":" in credential:
        token = base64.b64encode(credential.encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    elif credential is not None:
        request.add_header("Authorization", f"Bearer {credential}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return True, f"dashboard: {url} answered {response.status}"
    except urllib.error.HTTPError as exc:
        body = " ".join(exc.read(300).decode(errors="replace").split())
        return False, f"dashboard: {url} answered {exc.code}: {body}"
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ConnectionRefusedError):
            return None, f"dashboard: nothing listens on port {settings.dashboard_port}"
        return False, f"dashboard: {url}: {exc.reason}"
    except OSError as exc:
        return False, f"dashboard: {url}: {exc}"


async def check_worker(settings):
    from mailqueue.manager import MailManager

    host = socket.gethostname().replace(" ", "_") or "host"
    at_once = settings.model_copy(update={"redis_connect_timeout_s": 0.0})
    try:
        async with MailManager(at_once) as mail:
            workers = await mail.workers.list_workers()
    except Exception as exc:
        return False, f"worker: cannot list workers in Redis: {' '.join(str(exc).split())}"
    mine = sorted({f"{w['queue']}:{w['name']}" for w in workers
                   if (w.get("name") or "").startswith(f"{host}-")})
    if not mine:
        return False, f"worker: no worker of this host ({host}) is connected to Redis"
    return True, f"worker: {len(mine)} connected ({', '.join(mine)})"


def main(argv):
    role = argv[1] if len(argv) > 1 else "auto"
    if role not in ("auto", "dashboard", "worker") or len(argv) > 2:
        print("usage: mailqueue-healthcheck [dashboard|worker]")
        return 1  # Docker reserves 2
    try:
        settings = Settings()
    except Exception as exc:
        print(f"settings: {' '.join(str(exc).split())}")
        return 1
    notes = []
    if role in ("auto", "dashboard"):
        healthy, why = check_dashboard(settings)
        notes.append(why)
        if healthy is not None or role == "dashboard":
            print(why)
            return 0 if healthy else 1
    healthy, why = asyncio.run(check_worker(settings))
    print("; ".join([*notes, why]))
    return 0 if healthy else 1


sys.exit(main(sys.argv))
EOF

USER 10001:10001
WORKDIR /home/mailqueue
EXPOSE 3000
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["mailqueue-healthcheck"]
ENTRYPOINT ["mailqueue"]
CMD ["--help"]
