"""What every `mailqueue` command shares: the Typer app, settings, one-line failures, the loop."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import getpass
import inspect
import logging
import os
import signal
import sys
import typing
from collections.abc import Callable, Coroutine, Iterator
from typing import Annotated, Any, NoReturn

import typer
from pydantic import ValidationError

from mailqueue import __version__
from mailqueue.errors import MailQueueError
from mailqueue.settings import Settings, port_number

_Command = typing.TypeVar("_Command", bound=Callable[..., Any])


class _App(typer.Typer):
    """The Typer app, whose every command also takes the shared options (`--redis-url`,
    `-v`, `-q`): a command added later cannot forget them, and `mailqueue send -q` works as
    `mailqueue queues -q` does."""

    def command(self, *args: Any, **kwargs: Any) -> Callable[[_Command], _Command]:
        kwargs.setdefault("epilog", EXIT_CODES)  # each command's --help says them too
        register = super().command(*args, **kwargs)

        def decorator(func: _Command) -> _Command:
            register(with_shared_options(func))
            return func

        return decorator

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # The name the user types, also under `python -m mailqueue.cli`: usage lines say it,
        # and `--install-completion` writes the script for it (not for "python -m ...").
        kwargs.setdefault("prog_name", "mailqueue")
        return super().__call__(*args, **kwargs)


app = _App(
    help="Asynchronous e-mail over BullMQ queues in Redis, with a live dashboard.",
    no_args_is_help=True,
    # `mailqueue --install-completion` writes the completion script for the user's shell.
    add_completion=True,
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


# At the foot of every `--help`: scripts branch on these.
EXIT_CODES = (
    "Exit codes: 0 done; 1 failed at run time (Redis does not answer, no such queue or job, "
    "unhealthy); 2 usage or configuration error (a bad option, setting, state or duration)."
)


@app.callback(epilog=f"{EXIT_CODES} Every command takes --redis-url (over REDIS_URL), -v "
                     "(debug log) and -q (errors only), after its name: `mailqueue queues "
                     "-q`. Shell completion: `mailqueue --install-completion`.")
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
_SECRET_SETTINGS = ("redis_url", "smtp_url", "dashboard_auth", "dashboard_viewer_auth",
                    "mail_unsubscribe_secret")


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


def service_settings(*, sends_mail: bool = False) -> Settings:
    """The settings of a long-running command (a worker, a server), logging set up; for one
    that sends mail, the DKIM key checked before anything starts."""
    settings = load_settings()
    setup_logging(settings)
    if sends_mail:
        check_mail_signing(settings)
    return settings


def port_option(port: str | None, default: int) -> int:
    """`--port`, or `default` without it; a bad one is one line and exit code 2."""
    if port is None:
        return default
    try:
        return port_number(port)
    except ValueError as exc:
        fail(f"--port: {exc}", USAGE_ERROR)


def check_mail_signing(settings: Settings) -> None:
    """DKIM's key read and checked before a worker starts anything: a missing, unreadable or
    bad key (or half the DKIM settings) is one line and exit code 2, never a failure per job.
    The worker's handlers then reuse the checked key (mailqueue.mail.dkim)."""
    from mailqueue.mail.dkim import DkimSettingsError, message_signer

    try:
        message_signer(settings)
    except DkimSettingsError as exc:
        fail(str(exc), USAGE_ERROR)


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
    _configure_logging(settings.log_level.upper())


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
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


async def until_stopped() -> None:
    """Until Ctrl-C or SIGTERM."""
    stop = asyncio.Event()
    with stop_on_signals(stop):
        await stop.wait()


def url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


# --- options every command takes ------------------------------------------------------------
# Added to each command by `_App.command`. They work through the environment (REDIS_URL,
# LOG_LEVEL) rather than through each command's code: Settings() then sees them wherever it
# is read, and so do the child processes of `worker --processes N`.

_SHARED_PANEL = "Common options"
RedisUrlOption = Annotated[str | None, typer.Option(
    "--redis-url", metavar="URL", rich_help_panel=_SHARED_PANEL,
    help="Redis to use, over REDIS_URL (redis://, rediss://, unix://)",
)]
VerboseOption = Annotated[bool, typer.Option(
    "--verbose", "-v", rich_help_panel=_SHARED_PANEL, help="Log everything (LOG_LEVEL=DEBUG)",
)]
QuietOption = Annotated[bool, typer.Option(
    "--quiet", "-q", rich_help_panel=_SHARED_PANEL,
    help="Log only errors (LOG_LEVEL=ERROR); no confirmation line after a change",
)]
_SHARED = {"redis_url": RedisUrlOption, "verbose": VerboseOption, "quiet": QuietOption}
_quiet = False


def is_quiet() -> bool:
    """Whether this command was given `-q`."""
    return _quiet


def with_shared_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """`func` as a Typer command with `--redis-url`, `-v` and `-q` added to its own options."""
    signature = inspect.signature(func, eval_str=True)
    hints = typing.get_type_hints(func, include_extras=True)
    own = [p.replace(annotation=hints.get(p.name, p.annotation))
           for p in signature.parameters.values()]
    clash = set(_SHARED) & {p.name for p in own}
    assert not clash, f"{func.__name__} defines shared option(s) {clash} itself"
    shared = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation,
                                default=None if name == "redis_url" else False)
              for name, annotation in _SHARED.items()]

    @functools.wraps(func)
    def command(*args: Any, redis_url: str | None = None, verbose: bool = False,
                quiet: bool = False, **kwargs: Any) -> Any:
        with _shared_options(redis_url, verbose, quiet):
            return func(*args, **kwargs)

    # Typer reads the parameters from the signature and the annotations.
    command.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[*own, *shared])
    command.__annotations__ = {p.name: p.annotation for p in [*own, *shared]}
    return command


@contextlib.contextmanager
def _shared_options(redis_url: str | None, verbose: bool, quiet: bool) -> Iterator[None]:
    global _quiet
    if verbose and quiet:
        fail("-v and -q cannot be used together", USAGE_ERROR)
    overrides: dict[str, str] = {}
    if redis_url is not None:
        if not redis_url.strip():
            fail("--redis-url is empty: give a URL like redis://localhost:6379",
                 USAGE_ERROR)
        overrides["REDIS_URL"] = redis_url
    if verbose or quiet:
        overrides["LOG_LEVEL"] = "DEBUG" if verbose else "ERROR"
    # Any spelling of the variable in the environment would compete with ours.
    saved = {k: v for k, v in os.environ.items() if k.upper() in overrides}
    for key in saved:
        del os.environ[key]
    os.environ.update(overrides)
    if verbose or quiet:
        # Now, for the commands that do not call setup_logging (send, status, ...); for the
        # others, their own call then finds logging configured at the same level.
        _configure_logging(overrides["LOG_LEVEL"])
    _quiet = quiet
    try:
        yield
    finally:  # in-process callers (tests with CliRunner) get their environment back
        _quiet = False
        for key in overrides:
            os.environ.pop(key, None)
        os.environ.update(saved)


def actor() -> str:
    """Who an operator command runs as, for the audit log: `cli:<os user>`."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # a container's uid with no passwd entry and no $USER
        user = f"uid{os.getuid()}"
    return f"cli:{user}"
