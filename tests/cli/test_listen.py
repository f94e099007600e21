"""The dashboard's listening socket (mailqueue.cli.serve.listen): the connections it accepts
must have Nagle off. With it on, every answer on a keep-alive connection waited ~40 ms for
the client's delayed ACK (every page, /health and static files: 44 ms instead of 2)."""

from __future__ import annotations

import asyncio
import socket

from mailqueue.cli.serve import listen


async def test_accepted_connections_have_nagle_off() -> None:
    listener = listen("127.0.0.1", 0)
    nodelay: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    class Probe(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            sock = transport.get_extra_info("socket")
            nodelay.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            transport.close()

    server = await asyncio.get_running_loop().create_server(Probe, sock=listener)
    try:
        _, writer = await asyncio.open_connection(*listener.getsockname()[:2])
        assert await asyncio.wait_for(nodelay, 5) != 0
        writer.close()
    finally:
        server.close()
        await server.wait_closed()
