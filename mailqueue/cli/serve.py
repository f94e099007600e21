"""`mailqueue run` (everything in one process) and `mailqueue dashboard`."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
from collections.abc import Iterator
from typing import Any

import typer

from mailqueue.cli.common import (
    USAGE_ERROR,
    ConcurrencyOption,
    HostOption,
    PortOption,
    app,
    fail,
    port_option,
    run_async,
    service_settings,
    until_stopped,
    url_host,
)
from mailqueue.cli.worker import close_handlers, worker_handlers
from mailqueue.errors import MailQueueError
from mailqueue.manager import MailManager
from mailqueue.settings import Settings


class DashboardServer:
    """uvicorn serving the dashboard on an already bound socket, inside our loop, with our own
    signal handling."""

    def __init__(self, mail: MailManager, listener: socket.socket) -> None:
        import uvicorn

        from mailqueue.dashboard.app import create_app

        class EmbeddedServer(uvicorn.Server):
            # uvicorn re-raises captured signals after serving, which would kill the process
            # before the workers and Redis are shut down: we handle signals ourselves.
            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:
                yield

        self.listener = listener
        self.host, self.port = listener.getsockname()[:2]
        config = uvicorn.Config(
            # The address actually bound is one of the host names the app answers to.
            create_app(mail.settings.model_copy(update={"dashboard_host": self.host}), mail),
            host=self.host, port=self.port,
            log_level="warning", lifespan="on", access_log=False,
        )
        self.server = EmbeddedServer(config)
        self.task: asyncio.Task[None] | None = None

    async def _serve(self) -> None:
        try:
            await self.server.serve(sockets=[self.listener])
        except SystemExit:
            # uvicorn calls sys.exit() when the app's startup fails (it logged why); in a task
            # that would escape the loop as a traceback and skip our shutdown.
            raise MailQueueError("the dashboard failed to start (see the log above)") from None

    async def start(self) -> None:
        self.task = asyncio.create_task(self._serve())
        while not self.server.started:
            if self.task.done():
                self.task.result()  # re-raise a start failure
                raise MailQueueError("the dashboard stopped at start")
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        self.server.should_exit = True
        if self.task is not None:
            await asyncio.gather(self.task, return_exceptions=True)
        self.listener.close()  # uvicorn closes it too once started; twice is harmless


def dashboard_address(settings: Settings, host: str | None, port: str | None
                       ) -> tuple[str, int]:
    """--host/--port over the settings; refuses a public address without credentials."""
    host = host or settings.dashboard_host
    _check_exposure(settings, host)
    return host, port_option(port, settings.dashboard_port)


def listen(host: str, port: int) -> socket.socket:
    """Bind the dashboard's address now, before Redis, the sink or a worker start: a port in
    use is then one line, exit code 2, with nothing half-started or registered in Redis.

    uvicorn then serves on this very socket, so no other program can take the port between
    this check and the start.
    """
    try:
        return tcp_listener(host, port)
    except OSError as exc:
        fail(_bind_problem(host, port, exc), USAGE_ERROR)


def tcp_listener(host: str, port: int) -> socket.socket:
    """A TCP socket bound to (host, port), for uvicorn to serve on; OSError if it cannot."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP said outright: asyncio turns Nagle off (TCP_NODELAY) only on sockets whose
    # proto is IPPROTO_TCP, and accepted sockets inherit the listener's. With proto 0, every
    # answer on a keep-alive connection waited ~40 ms for the client's delayed ACK.
    listener = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    # As uvicorn does: a restart right after a stop may rebind despite TIME_WAIT connections.
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError:
        listener.close()
        raise
    return listener


def _bind_problem(host: str, port: int, exc: OSError) -> str:
    fix_port, fix_host = "pass --port or set DASHBOARD_PORT", "pass --host or set DASHBOARD_HOST"
    if isinstance(exc, socket.gaierror):
        return f"cannot listen on {host}: no such host name: {fix_host}"
    if exc.errno == errno.EADDRINUSE:
        return f"port {port} on {host} is in use (by another program): {fix_port}"
    if exc.errno == errno.EACCES:
        return (f"port {port} on {host} needs root (ports below 1024 are privileged): "
                f"{fix_port}")
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen on {host}: not an address of this machine: {fix_host}"
    return f"cannot listen on {url_host(host)}:{port}: {exc.strerror or exc}"


def _is_loopback(host: str) -> bool:
    return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")


def warn_if_plain_http(listener: socket.socket) -> None:
    """Once listening off loopback: Basic credentials are only base64, and on plain http
    anyone on the path can read them."""
    host = listener.getsockname()[0]
    if not _is_loopback(host):
        typer.echo(
            f"Warning: the dashboard on {host} is plain http: passwords and tokens cross the "
            "network in clear. Put a TLS proxy in front of it (and list the names it serves "
            "in DASHBOARD_ALLOWED_HOSTS).", err=True)


def _check_exposure(settings: Settings, host: str) -> None:
    from mailqueue.dashboard.security import parse_credentials

    loopback = _is_loopback(host)
    try:
        credentials = parse_credentials(settings.dashboard_auth, can_write=True)
        parse_credentials(settings.dashboard_viewer_auth, can_write=False)
    except ValueError as exc:
        fail(f"DASHBOARD_AUTH / DASHBOARD_VIEWER_AUTH: {exc}")
    # What the dashboard enforces, not the raw text: DASHBOARD_AUTH=" " or "," holds no
    # credential, and the dashboard would serve every visitor with full rights.
    if not loopback and not credentials:
        fail(
            f"refusing to serve the dashboard on {host} without DASHBOARD_AUTH: set "
            "DASHBOARD_AUTH=user:password (or a token), or bind 127.0.0.1"
        )


@app.command()
def run(
    host: HostOption = None,
    port: PortOption = None,
    concurrency: ConcurrencyOption = None,
) -> None:
    """Everything in one process: Redis if needed, the SMTP sink, a worker, the dashboard."""
    settings = service_settings(sends_mail=True)
    listener = listen(*dashboard_address(settings, host, port))
    warn_if_plain_http(listener)

    async def main() -> int:
        handlers: Any = None
        try:
            async with MailManager(settings) as mail:
                sink = None if settings.smtp_url else await mail.start_dev_sink()
                server = DashboardServer(mail, listener)
                try:
                    await mail.create_queue(settings.default_queue)
                    # Job lifecycle in the audit log, and failure alerts, for every queue: this
                    # process competes with the workers for the audit lease (one writer).
                    await mail.setup_audit_listeners()
                    # This process's worker sends to this process's sink, not to whichever
                    # sink is registered in Redis: another `run` stopping cannot take it away.
                    handlers = worker_handlers(
                        settings if sink is None
                        else settings.model_copy(update={"smtp_url": sink.url})
                    )
                    mail.start_worker(settings.default_queue, handlers, concurrency=concurrency)
                    mail.serve_campaigns(handlers, concurrency)
                    await server.start()
                    assert mail.redis is not None
                    typer.echo(f"{mail.redis.describe()}")
                    if sink is not None:
                        typer.echo(f"SMTP: development sink on {sink.url} "
                                   "(outbox kept in Redis)")
                    else:
                        typer.echo("SMTP: SMTP_URL")
                    typer.echo(f"Worker: queue {settings.default_queue!r}")
                    typer.echo(f"Dashboard: http://{url_host(server.host)}:{server.port}")
                    typer.echo("Ctrl-C to stop.")
                    await until_stopped()
                    typer.echo("Stopping: waiting for active jobs...")
                finally:
                    await server.stop()
                    # Workers first (their jobs finish), then the SMTP pool while the sink
                    # still answers its QUIT, then the sink and the rest (mail.close()).
                    await close_handlers(mail, handlers)
                    await mail.close()
        finally:
            listener.close()
        typer.echo("Stopped.")
        return 0

    run_async(main)


@app.command()
def dashboard(host: HostOption = None, port: PortOption = None) -> None:
    """Serve the dashboard (http://127.0.0.1:3000 by default)."""
    settings = service_settings()
    listener = listen(*dashboard_address(settings, host, port))
    warn_if_plain_http(listener)

    async def main() -> int:
        try:
            async with MailManager(settings) as mail:
                server = DashboardServer(mail, listener)
                try:
                    # The dashboard competes for the audit writer's lease too: queues worked
                    # by Node workers alone still get their job lifecycle audited.
                    await mail.setup_audit_listeners()
                    await server.start()
                    assert mail.redis is not None
                    typer.echo(mail.redis.describe())
                    typer.echo(f"Dashboard: http://{url_host(server.host)}:{server.port}. "
                               "Ctrl-C to stop.")
                    await until_stopped()
                finally:
                    await server.stop()
        finally:
            listener.close()
        return 0

    run_async(main)
