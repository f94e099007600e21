"""`mailqueue unsubscribe-server`: the public one-click unsubscribe app (RFC 8058) alone.

Its own process and port, so it can face the internet (behind an https proxy, at
MAIL_UNSUBSCRIBE_URL) while the dashboard stays on 127.0.0.1: it serves only
mailqueue.dashboard.unsubscribe's routes, never the dashboard's.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from typing import Annotated

import typer

from mailqueue.cli.common import (
    USAGE_ERROR,
    HostOption,
    app,
    fail,
    port_option,
    run_async,
    service_settings,
    stop_on_signals,
    url_host,
)
from mailqueue.cli.serve import tcp_listener
from mailqueue.errors import MailQueueError
from mailqueue.manager import MailManager

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 3001

UnsubscribePortOption = Annotated[str | None, typer.Option(
    metavar="PORT", help=f"Port to listen on (default {DEFAULT_PORT})",
)]


def _listen(host: str, port: int) -> socket.socket:
    """Bound before Redis is opened: a port in use is one line and exit code 2."""
    try:
        return tcp_listener(host, port)
    except OSError as exc:
        why = "no such host name" if isinstance(exc, socket.gaierror) else (exc.strerror or exc)
        fail(f"cannot listen on {url_host(host)}:{port}: {why}: pass --host or --port",
             USAGE_ERROR)


@app.command("unsubscribe-server")
def unsubscribe_server(host: HostOption = None, port: UnsubscribePortOption = None) -> None:
    """Serve the one-click unsubscribe app (http://127.0.0.1:3001 by default).

    Put it behind your https proxy at MAIL_UNSUBSCRIBE_URL; it needs
    MAIL_UNSUBSCRIBE_SECRET. It serves only its own routes, never the dashboard.
    """
    settings = service_settings()
    if settings.mail_unsubscribe_secret is None:
        fail("MAIL_UNSUBSCRIBE_SECRET is not set: the unsubscribe app cannot check links "
             "without the secret that signs them (docs/mail.md, Unsubscribe)", USAGE_ERROR)
    host = host or DEFAULT_HOST
    listener = _listen(host, port_option(port, DEFAULT_PORT))

    async def main() -> int:
        import uvicorn

        from mailqueue.dashboard.unsubscribe import create_unsubscribe_app

        class Server(uvicorn.Server):
            # Our signal handling, so that SIGTERM ends in a clean exit code 0.
            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:
                yield

        stop = asyncio.Event()
        try:
            async with MailManager(settings) as mail:
                bound_host, bound_port = listener.getsockname()[:2]
                server = Server(uvicorn.Config(
                    create_unsubscribe_app(settings, mail), host=bound_host, port=bound_port,
                    # No access log: every request line holds a token.
                    log_level="warning", lifespan="on", access_log=False,
                ))

                async def serve() -> None:
                    try:
                        await server.serve(sockets=[listener])
                    except SystemExit:  # uvicorn's way to say the start failed (it logged why)
                        pass

                task = asyncio.create_task(serve())
                try:
                    while not server.started:
                        if task.done():
                            raise MailQueueError("the unsubscribe app failed to start "
                                                 "(see the log above)")
                        await asyncio.sleep(0.05)
                    assert mail.redis is not None
                    typer.echo(mail.redis.describe())
                    links = settings.mail_unsubscribe_url or "MAIL_UNSUBSCRIBE_URL is not set"
                    typer.echo(f"Unsubscribe app: http://{url_host(bound_host)}:{bound_port} "
                               f"(links: {links}). Ctrl-C to stop.")
                    waiter = asyncio.ensure_future(stop.wait())
                    with stop_on_signals(stop):
                        await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
                    waiter.cancel()
                    if task.done() and not stop.is_set():
                        raise MailQueueError("the unsubscribe app stopped (see the log above)")
                finally:
                    server.should_exit = True
                    await asyncio.gather(task, return_exceptions=True)
        finally:
            listener.close()
        return 0

    run_async(main)
