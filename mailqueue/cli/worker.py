"""`mailqueue worker`: one process, or N supervised worker processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from typing import Annotated, Any

import typer

from mailqueue.cli.common import (
    USAGE_ERROR,
    ConcurrencyOption,
    app,
    fail,
    run_async,
    service_settings,
    stop_on_signals,
    until_stopped,
)
from mailqueue.mail.sink import registered_sink_url
from mailqueue.manager import MailManager
from mailqueue.settings import Settings


def worker_handlers(settings: Settings) -> dict[str, Any]:
    from mailqueue.workers import WorkerManager

    return WorkerManager.create_email_handlers(settings)


async def close_handlers(mail: MailManager, handlers: Any) -> None:
    """Close the workers (their active jobs finish), then the SMTP pool the handlers share:
    its connections QUIT instead of being left open (ResourceWarning: unclosed transport)."""
    await mail.stop_serving_campaigns()  # it would start workers for new campaigns
    await mail.workers.close()
    close = getattr(handlers, "close", None)
    if close is not None:
        await close()


@app.command()
def worker(
    queues: Annotated[
        list[str] | None, typer.Argument(help="Queues to serve (default: the e-mail queue)")
    ] = None,
    concurrency: ConcurrencyOption = None,
    processes_option: Annotated[str, typer.Option(
        "--processes", metavar="N|auto",
        help="Worker processes to run (each with every queue's handlers); auto: one per "
             "core this process may use; default 1, this process",
    )] = "1",
) -> None:
    """Process jobs of the given queues with the built-in e-mail handlers."""
    processes = _process_count(processes_option)
    settings = service_settings(sends_mail=True)
    names = queues or [settings.default_queue]
    if processes > 1:
        child_args = [*names] + (["--concurrency", str(concurrency)] if concurrency else [])
        run_async(lambda: _supervise_workers(child_args, processes))
        return

    async def main() -> int:
        async with MailManager(settings) as mail:
            handlers = worker_handlers(settings)
            try:
                # Competes for the audit lease: one process per prefix writes the audit log
                # and reads the events for it; the rest of the workers read no events at all.
                await mail.setup_audit_listeners()
                for name in names:
                    await mail.create_queue(name)
                    # Lock, stall and rate-limit settings come with start_worker itself.
                    mail.start_worker(name, handlers, concurrency=concurrency)
                # And the queue of each campaign, while it lasts (mailqueue.campaigns).
                mail.serve_campaigns(handlers, concurrency)
                assert mail.redis is not None
                typer.echo(mail.redis.describe())
                if not settings.smtp_url and not await registered_sink_url(
                    mail.client, settings.queue_prefix
                ):
                    typer.echo("Warning: no SMTP_URL and no development sink running: e-mail "
                               "jobs will be retried until one of them is there.", err=True)
                typer.echo(f"Worker: queues {', '.join(names)}. Ctrl-C to stop.")
                await until_stopped()
                typer.echo("Stopping: waiting for active jobs...")
            finally:
                await close_handlers(mail, handlers)
        typer.echo("Stopped.")
        return 0

    run_async(main)


def _process_count(value: str) -> int:
    """`--processes`: a number >= 1, or `auto` for the cores this process may run on (a
    container's CPU set, not the machine's count)."""
    if value.strip().lower() == "auto":
        return max(len(os.sched_getaffinity(0)), 1)
    if not value.strip().isdigit() or int(value) < 1:
        fail(f"--processes: {value!r} is not a number of processes: use 1, 2, ... or auto",
             USAGE_ERROR)
    return int(value)


# --- `worker --processes N` ------------------------------------------------------------------
# One Python process uses one core (docs/bullmq-notes.md #8), so N processes each run the whole
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
    with stop_on_signals(stop):
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

