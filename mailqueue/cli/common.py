"""What every `mailqueue` command shares: the Typer app, settings, one-line failures, the loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable, Coroutine, Iterator
from typing import Annotated, Any, NoReturn

import typer
from pydantic import ValidationError

from mailqueue import __version__
from mailqueue.errors import MailQueueError
from mailqueue.settings import Settings

app = typer.Typer(
    help="Asynchronous e-mail over BullMQ queues in Redis, with a live dashboard.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
log = logging.getLogger("mailqueue")

HostOption = Annotated[str | None, typer.Option(help="Address to bind (default 127.0.0.1)")]
# Text, checked by settings.port_number: `--port 70000` or `--port abc` is then our one line.
PortOption = Annotated[str | None, typer.Option(
    metavar="PORT", help="Port to listen on (default 3000)",
)]
ConcurrencyOption = Annotated[
    int | None, typer.Option(min=1, help="Jobs processed at once per queue")
]


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"mailqueue {__version__}")
        raise typer.Exit(0)


@app.callback()
def _main(
    version: Annotated[bool, typer.Option(
        "--version", callback=_print_version, is_eager=True, help="Print the version and exit",
    )] = False,
) -> None:
    """Asynchronous e-mail over BullMQ queues in Redis, with a live dashboard."""


# A usage or configuration mistake (a setting, an option, a port in use): exit code 2, as
# for a bad command line. 1 is for a failure at run time (Redis gone, a job refused).
USAGE_ERROR = 2
# Settings whose values are never shown in an error line.
_SECRET_SETTINGS = ("redis_url", "smtp_url", "dashboard_auth", "dashboard_viewer_auth")


def load_settings() -> Settings:
    """The settings; each bad one becomes one line naming the variable, then exit code 2."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = [_settings_problem(error) for error in exc.errors()]
    except Exception as exc:  # e.g. a .env value pydantic-settings cannot decode
        problems = [f"bad settings: {str(exc).splitlines()[0]}"]
    for problem in problems[:-1]:
        typer.echo(f"mailqueue: {problem}", err=True)
    fail(problems[-1], USAGE_ERROR)


def _settings_problem(error: Any) -> str:
    """`DASHBOARD_PORT: 'abc' is not a port number...`: pydantic's dump, one line."""
    name = ".".join(str(part) for part in error["loc"]) or "settings"
    message = str(error["msg"])
    if error["type"] == "value_error":  # our validators' messages quote the value themselves
        return f"{name.upper()}: {message.removeprefix('Value error, ')}"
    message = message[:1].lower() + message[1:]
    if name.lower() in _SECRET_SETTINGS:
        return f"{name.upper()}: {message}"
    return f"{name.upper()}={error.get('input')!r}: {message}"


def fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"mailqueue: {message}", err=True)
    raise typer.Exit(code)


def setup_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def run_async(main: Callable[[], Coroutine[Any, Any, int | None]]) -> None:
    """Run `main` on a fresh loop; MailQueueError becomes one line and exit code 1."""
    code: int | None
    try:
        code = asyncio.run(main())
    except MailQueueError as exc:
        fail(str(exc))
    except KeyboardInterrupt:  # a second Ctrl-C while shutting down
        code = 130
    raise typer.Exit(code or 0)


@contextlib.contextmanager
def stop_on_signals(stop: asyncio.Event) -> Iterator[None]:
    """Ctrl-C and SIGTERM set `stop`; the caller then shuts down cleanly."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        yield
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
