"""`mailqueue run` (everything in one process) and `mailqueue dashboard`."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import typer

from mailqueue.cli.common import (
    ConcurrencyOption,
    HostOption,
    PortOption,
    app,
    fail,
    load_settings,
    run_async,
    setup_logging,
    stop_on_signals,
    url_host,
)
from mailqueue.cli.worker import worker_handlers
from mailqueue.errors import MailQueueError
from mailqueue.manager import MailManager
from mailqueue.settings import Settings


class DashboardServer:
    """uvicorn serving the dashboard inside our loop, with our own signal handling."""

    def __init__(self, mail: MailManager, host: str, port: int) -> None:
        import uvicorn

        from mailqueue.dashboard.app import create_app

        class EmbeddedServer(uvicorn.Server):
            # uvicorn re-raises captured signals after serving, which would kill the process
            # before the workers and Redis are shut down: we handle signals ourselves.
            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:
                yield

        config = uvicorn.Config(
            create_app(mail.settings, mail), host=host, port=port, log_level="warning",
            lifespan="on", access_log=False,
        )
        self.server = EmbeddedServer(config)
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.task = asyncio.create_task(self.server.serve())
        while not self.server.started:
            if self.task.done():
                self.task.result()  # re-raise a bind error
                raise MailQueueError("the dashboard stopped at start")
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        self.server.should_exit = True
        if self.task is not None:
            await self.task


def dashboard_address(settings: Settings, host: str | None, port: int | None
                       ) -> tuple[str, int]:
    """--host/--port over the settings; refuses a public address without credentials."""
    host = host or settings.dashboard_host
    _check_exposure(settings, host)
    return host, settings.dashboard_port if port is None else port


def _check_exposure(settings: Settings, host: str) -> None:
    from mailqueue.dashboard.security import parse_credentials

    loopback = host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")
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
    settings = load_settings()
    setup_logging(settings)
    host, port = dashboard_address(settings, host, port)

    async def main() -> int:
        stop = asyncio.Event()
        async with MailManager(settings) as mail:
            sink = None if settings.smtp_url else await mail.start_dev_sink()
            server = DashboardServer(mail, host, port)
            try:
                await mail.create_queue(settings.default_queue)
                # Job lifecycle in the audit log, and failure alerts, for every queue.
                await mail.setup_audit_listeners()
                mail.start_worker(
                    settings.default_queue, worker_handlers(mail.settings),
                    concurrency=concurrency,
                )
                await server.start()
                assert mail.redis is not None
                typer.echo(f"{mail.redis.describe()}")
                if sink is not None:
                    typer.echo(f"SMTP: development sink on {sink.url} (outbox kept in Redis)")
                else:
                    typer.echo("SMTP: SMTP_URL")
                typer.echo(f"Worker: queue {settings.default_queue!r}")
                typer.echo(f"Dashboard: http://{url_host(host)}:{port}")
                typer.echo("Ctrl-C to stop.")
                with stop_on_signals(stop):
                    await stop.wait()
                typer.echo("Stopping: waiting for active jobs...")
            finally:
                await server.stop()
                await mail.close()
        typer.echo("Stopped.")
        return 0

    run_async(main)




@app.command()
def dashboard(host: HostOption = None, port: PortOption = None) -> None:
    """Serve the dashboard (http://127.0.0.1:3000 by default)."""
    settings = load_settings()
    setup_logging(settings)
    host, port = dashboard_address(settings, host, port)

    async def main() -> int:
        stop = asyncio.Event()
        async with MailManager(settings) as mail:
            server = DashboardServer(mail, host, port)
            await server.start()
            assert mail.redis is not None
            typer.echo(mail.redis.describe())
            typer.echo(f"Dashboard: http://{url_host(host)}:{port}. Ctrl-C to stop.")
            try:
                with stop_on_signals(stop):
                    await stop.wait()
            finally:
                await server.stop()
        return 0

    run_async(main)

