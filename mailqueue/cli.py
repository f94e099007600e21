"""The `mailqueue` command: run, worker, dashboard, send, status."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Iterator
from typing import Annotated, Any, NoReturn

import typer

from mailqueue.errors import MailQueueError
from mailqueue.mail.sink import registered_sink_url
from mailqueue.manager import MailManager
from mailqueue.settings import Settings

app = typer.Typer(
    help="Asynchronous e-mail over BullMQ queues in Redis, with a live dashboard.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
log = logging.getLogger("mailqueue")

HostOption = Annotated[str | None, typer.Option(help="Address to bind (default 127.0.0.1)")]
PortOption = Annotated[int | None, typer.Option(help="Port to listen on (default 3000)")]
ConcurrencyOption = Annotated[
    int | None, typer.Option(min=1, help="Jobs processed at once per queue")
]


def _settings() -> Settings:
    try:
        return Settings()
    except Exception as exc:  # pydantic lists every bad variable in one message
        _fail(f"Bad settings: {exc}")


def _fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"mailqueue: {message}", err=True)
    raise typer.Exit(code)


def _setup_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _run(main: Callable[[], Coroutine[Any, Any, int | None]]) -> None:
    """Run `main` on a fresh loop; MailQueueError becomes one line and exit code 1."""
    code: int | None
    try:
        code = asyncio.run(main())
    except MailQueueError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:  # a second Ctrl-C while shutting down
        code = 130
    raise typer.Exit(code or 0)


@contextlib.contextmanager
def _stop_on_signals(stop: asyncio.Event) -> Iterator[None]:
    """Ctrl-C and SIGTERM set `stop`; the caller then shuts down cleanly."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        yield
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def _worker_handlers(settings: Settings) -> dict[str, Any]:
    from mailqueue.workers import WorkerManager

    return WorkerManager.create_email_handlers(settings)


def _worker_options(settings: Settings, queue: str) -> dict[str, Any]:
    """Lock and stall settings for every queue; the e-mail rate limit for the e-mail queue."""
    options: dict[str, Any] = {
        "lockDuration": settings.worker_lock_duration_ms,
        "stalledInterval": settings.worker_stalled_interval_ms,
    }
    if queue == settings.default_queue and settings.mail_rate_limit > 0:
        # BullMQ's limiter lives in Redis: the limit holds across every worker process.
        options["limiter"] = {"max": settings.mail_rate_limit, "duration": 1000}
    return options


class _Server:
    """uvicorn serving the dashboard inside our loop, with our own signal handling."""

    def __init__(self, mail: MailManager, host: str, port: int) -> None:
        import uvicorn

        from dashboard.app import create_app

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


def _dashboard_address(settings: Settings, host: str | None, port: int | None
                       ) -> tuple[str, int]:
    """--host/--port over the settings; refuses a public address without credentials."""
    host = host or settings.dashboard_host
    _check_exposure(settings, host)
    return host, settings.dashboard_port if port is None else port


def _check_exposure(settings: Settings, host: str) -> None:
    from dashboard.security import parse_credentials

    loopback = host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")
    try:
        credentials = parse_credentials(settings.dashboard_auth, can_write=True)
        parse_credentials(settings.dashboard_viewer_auth, can_write=False)
    except ValueError as exc:
        _fail(f"DASHBOARD_AUTH / DASHBOARD_VIEWER_AUTH: {exc}")
    # What the dashboard enforces, not the raw text: DASHBOARD_AUTH=" " or "," holds no
    # credential, and the dashboard would serve every visitor with full rights.
    if not loopback and not credentials:
        _fail(
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
    settings = _settings()
    _setup_logging(settings)
    host, port = _dashboard_address(settings, host, port)

    async def main() -> int:
        stop = asyncio.Event()
        async with MailManager(settings) as mail:
            sink = None if settings.smtp_url else await mail.start_dev_sink()
            server = _Server(mail, host, port)
            try:
                await mail.create_queue(settings.default_queue)
                # Job lifecycle in the audit log, and failure alerts, for every queue.
                await mail.setup_audit_listeners()
                mail.start_worker(
                    settings.default_queue, _worker_handlers(mail.settings),
                    concurrency=concurrency,
                    **_worker_options(mail.settings, settings.default_queue),
                )
                await server.start()
                assert mail.redis is not None
                typer.echo(f"{mail.redis.describe()}")
                if sink is not None:
                    typer.echo(f"SMTP: development sink on {sink.url} (outbox kept in Redis)")
                else:
                    typer.echo("SMTP: SMTP_URL")
                typer.echo(f"Worker: queue {settings.default_queue!r}")
                typer.echo(f"Dashboard: http://{_url_host(host)}:{port}")
                typer.echo("Ctrl-C to stop.")
                with _stop_on_signals(stop):
                    await stop.wait()
                typer.echo("Stopping: waiting for active jobs...")
            finally:
                await server.stop()
                await mail.close()
        typer.echo("Stopped.")
        return 0

    _run(main)


@app.command()
def worker(
    queues: Annotated[
        list[str] | None, typer.Argument(help="Queues to serve (default: the e-mail queue)")
    ] = None,
    concurrency: ConcurrencyOption = None,
    processes: Annotated[int, typer.Option(
        min=1, help="Worker processes to run (each with every queue's handlers); "
                    "default 1, this process",
    )] = 1,
) -> None:
    """Process jobs of the given queues with the built-in e-mail handlers."""
    settings = _settings()
    _setup_logging(settings)
    names = queues or [settings.default_queue]
    if processes > 1:
        child_args = [*names] + (["--concurrency", str(concurrency)] if concurrency else [])
        _run(lambda: _supervise_workers(child_args, processes))
        return

    async def main() -> int:
        stop = asyncio.Event()
        async with MailManager(settings) as mail:
            handlers = _worker_handlers(settings)
            await mail.setup_audit_listeners()
            for name in names:
                await mail.create_queue(name)
                mail.start_worker(name, handlers, concurrency=concurrency,
                                  **_worker_options(settings, name))
            assert mail.redis is not None
            typer.echo(mail.redis.describe())
            if not settings.smtp_url and not await registered_sink_url(
                mail.client, settings.queue_prefix
            ):
                typer.echo("Warning: no SMTP_URL and no development sink running: e-mail jobs "
                           "will be retried until one of them is there.", err=True)
            typer.echo(f"Worker: queues {', '.join(names)}. Ctrl-C to stop.")
            with _stop_on_signals(stop):
                await stop.wait()
            typer.echo("Stopping: waiting for active jobs...")
        typer.echo("Stopped.")
        return 0

    _run(main)


# --- `worker --processes N` ------------------------------------------------------------------
# One Python process uses one core (BULLMQ-NOTES item 8), so N processes each run the whole
# `mailqueue worker` for the same queues; BullMQ shares the jobs out through Redis. This
# process only supervises: children run in their own session (a terminal's Ctrl-C reaches
# only this process, which then sends each child one SIGTERM: a graceful close), die with
# it (PR_SET_PDEATHSIG), have their output relayed with a `[worker i]` prefix, and are
# restarted when they exit on their own, unless they keep failing at start.

_READY_LINE = "Ctrl-C to stop"
_QUICK_EXIT_S = 10.0  # a child that exits sooner than this after starting "failed at start"
_MAX_QUICK_EXITS = 3


class _WorkerChild:
    def __init__(self, index: int, args: list[str]) -> None:
        self.index = index
        self.args = args
        self.process: asyncio.subprocess.Process | None = None
        self.ready = asyncio.Event()
        self.started = 0.0
        self.quick_exits = 0
        self._relay: asyncio.Task[None] | None = None

    async def start(self) -> None:
        from mailqueue.redis_server import _die_with_parent

        self.ready.clear()
        self.started = asyncio.get_running_loop().time()
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "mailqueue.cli", "worker", *self.args,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, start_new_session=True,
            preexec_fn=_die_with_parent(os.getpid()),
        )
        self._relay = asyncio.ensure_future(self._relay_output(self.process))

    async def _relay_output(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        async for raw in process.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            if _READY_LINE in line:
                self.ready.set()
            typer.echo(f"[worker {self.index}] {line}")

    def terminate(self) -> None:
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.terminate()

    async def wait(self) -> int:
        assert self.process is not None
        code = await self.process.wait()
        if self._relay is not None:
            await asyncio.gather(self._relay, return_exceptions=True)
        return code


async def _supervise_workers(args: list[str], count: int) -> int:
    stop = asyncio.Event()
    children = [_WorkerChild(i + 1, args) for i in range(count)]
    failed = False
    with _stop_on_signals(stop):
        for child in children:
            await child.start()
        exits = {asyncio.ensure_future(c.wait()): c for c in children}
        stopping = asyncio.ensure_future(stop.wait())
        all_ready = asyncio.ensure_future(
            asyncio.gather(*(c.ready.wait() for c in children)))
        pids = ", ".join(str(c.process.pid) for c in children if c.process)
        while not stop.is_set():
            waiters: set[asyncio.Future[Any]] = {stopping, *exits}
            if not all_ready.done():
                waiters.add(all_ready)
            done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            if all_ready in done:
                typer.echo(f"Worker: {count} processes (pids {pids}). {_READY_LINE}.")
            for task in [t for t in done if t in exits]:
                child = exits.pop(task)
                if stop.is_set():
                    continue
                code = task.result()
                now = asyncio.get_running_loop().time()
                child.quick_exits = (child.quick_exits + 1
                                     if now - child.started < _QUICK_EXIT_S else 0)
                if child.quick_exits >= _MAX_QUICK_EXITS:
                    typer.echo(f"Worker process {child.index} keeps exiting at start "
                               f"(code {code}): stopping all.", err=True)
                    failed = True
                    stop.set()
                    continue
                typer.echo(f"Worker process {child.index} exited (code {code}); restarting.",
                           err=True)
                await asyncio.sleep(1.0 * child.quick_exits)
                await child.start()
                exits[asyncio.ensure_future(child.wait())] = child
        all_ready.cancel()
        stopping.cancel()
        typer.echo(f"Stopping {len(exits)} worker processes: waiting for active jobs...")
        for child in children:
            child.terminate()
        codes = await asyncio.gather(*exits)
    if any(codes):
        failed = True
    typer.echo("Stopped.")
    return 1 if failed else 0


@app.command()
def dashboard(host: HostOption = None, port: PortOption = None) -> None:
    """Serve the dashboard (http://127.0.0.1:3000 by default)."""
    settings = _settings()
    _setup_logging(settings)
    host, port = _dashboard_address(settings, host, port)

    async def main() -> int:
        stop = asyncio.Event()
        async with MailManager(settings) as mail:
            server = _Server(mail, host, port)
            await server.start()
            assert mail.redis is not None
            typer.echo(mail.redis.describe())
            typer.echo(f"Dashboard: http://{_url_host(host)}:{port}. Ctrl-C to stop.")
            try:
                with _stop_on_signals(stop):
                    await stop.wait()
            finally:
                await server.stop()
        return 0

    _run(main)


def _parse_vars(pairs: list[str]) -> dict[str, Any]:
    variables: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            _fail(f"--var takes key=value, not {pair!r}")
        variables[key.strip()] = value
    return variables


@app.command()
def send(
    to: Annotated[str, typer.Option(help="Recipient address")],
    template: Annotated[
        str, typer.Option(help="welcome, newsletter, reset-password or notification")
    ] = "welcome",
    var: Annotated[
        list[str] | None, typer.Option(help="Template variable key=value (repeatable)")
    ] = None,
    data: Annotated[
        str | None, typer.Option(help="Template variables as a JSON object")
    ] = None,
    queue: Annotated[str | None, typer.Option(help="Queue (default: the e-mail queue)")] = None,
) -> None:
    """Enqueue one e-mail; a worker renders and sends it."""
    settings = _settings()
    variables: dict[str, Any] = {}
    if data:
        try:
            loaded = json.loads(data)
        except json.JSONDecodeError as exc:
            _fail(f"--data is not JSON: {exc}")
        if not isinstance(loaded, dict):
            _fail("--data must be a JSON object")
        variables.update(loaded)
    variables.update(_parse_vars(var or []))
    variables["to"] = to

    async def main() -> int:
        async with MailManager(settings) as mail:
            name = queue or settings.default_queue
            job = await mail.add_job(name, f"send-{template}", variables)
            typer.echo(f"Queued job {job.id} (send-{template}) on queue {name!r} for {to}")
        return 0

    _run(main)


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON")] = False,
) -> None:
    """Health check: Redis, and counts and workers per queue. Exit 1 when unhealthy."""
    settings = _settings()

    async def main() -> int:
        async with MailManager(settings) as mail:
            report = await mail.health_check()
        if as_json:
            typer.echo(json.dumps(report, indent=2))
        else:
            typer.echo(_status_table(report))
        return 0 if report["healthy"] else 1

    _run(main)


def _status_table(report: dict[str, Any]) -> str:
    r = report.get("redis", {})
    lines = [
        f"Status: {'healthy' if report['healthy'] else 'UNHEALTHY'}",
        f"Redis:  {r.get('url')} ({r.get('source')}), version {r.get('version')}, "
        f"ping {r.get('ping_ms')} ms",
    ]
    if report.get("error"):
        lines.append(f"Error:  {report['error']}")
    columns = ("waiting", "active", "delayed", "completed", "failed", "paused")
    header = f"{'queue':<24}" + "".join(f"{c:>11}" for c in columns) + f"{'workers':>9}"
    lines += ["", header, "-" * len(header)]
    for name, q in sorted(report.get("queues", {}).items()):
        counts = q["counts"]
        lines.append(
            f"{name[:24]:<24}" + "".join(f"{counts.get(c, 0):>11}" for c in columns)
            + f"{q['workers']:>9}"
        )
    if not report.get("queues"):
        lines.append("(no queues yet)")
    return "\n".join(lines)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


if __name__ == "__main__":  # pragma: no cover
    app()
