# syntax=docker/dockerfile:1
# The mailqueue image: one image, the command picks the role (worker, dashboard, run).
# Needs BuildKit (the default builder since Docker 23): a bind mount below.
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

USER 10001:10001
WORKDIR /home/mailqueue
EXPOSE 3000
# The health check, right for the role the container runs (one image, several roles):
# `mailqueue-healthcheck`, a console script of the wheel (mailqueue/healthcheck.py).
#   dashboard (and `run`): GET /health on DASHBOARD_PORT (3000), with DASHBOARD_AUTH's first
#     credential (the dashboard asks for it on every path), healthy on 200;
#   worker: a worker of this container (BullMQ names them <hostname>-<pid>-<n>) is connected
#     to Redis (CLIENT LIST), so a worker that lost Redis or hangs at start is unhealthy;
#   no argument (the image's HEALTHCHECK): the dashboard when something listens on its port,
#     else the worker check. docker-compose.yml names the role of each service.
# Never waits for Redis (REDIS_CONNECT_TIMEOUT_S is for the long-running processes).
# Exit 0 healthy, 1 unhealthy, with one line saying why (`docker inspect` shows it).
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["mailqueue-healthcheck"]
ENTRYPOINT ["mailqueue"]
CMD ["--help"]
