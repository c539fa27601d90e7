"""A minimal asyncio server around ``H2Connection``, for running h2spec against the engine alone.

Every request gets ``200`` with a short body, sent as the flow-control
windows allow (the rest waits for ``WindowOpened``); request bodies are
acknowledged as they arrive. No ASGI, no HTTP/1.1: what h2spec then checks is
the sans-I/O connection, not the adapter.

    python -m tests.http2.conformance_server PORT     # serve until interrupted
"""

from __future__ import annotations

import asyncio
import sys

from sluiceway.http2 import events as ev
from sluiceway.http2.connection import H2Config, H2Connection

BODY = b"hello from the sluiceway HTTP/2 engine\n"


class ConformanceProtocol(asyncio.Protocol):
    def __init__(self, config: H2Config) -> None:
        self.conn = H2Connection(config)
        self.transport: asyncio.Transport | None = None
        self.pending: dict[int, bytes] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.conn.initiate()
        self.flush()

    def data_received(self, data: bytes) -> None:
        conn = self.conn
        for event in conn.receive_data(data):
            if isinstance(event, ev.RequestReceived):
                conn.send_headers(
                    event.stream_id,
                    [(b":status", b"200"), (b"content-length", b"%d" % len(BODY))],
                )
                self.send(event.stream_id, BODY)
            elif isinstance(event, ev.DataReceived):
                conn.acknowledge_received_data(event.stream_id, event.flow_controlled_length)
            elif isinstance(event, ev.WindowOpened):
                for stream_id in list(self.pending):
                    if event.stream_id in (0, stream_id):
                        self.send(stream_id, self.pending.pop(stream_id))
            elif isinstance(event, ev.StreamReset):
                self.pending.pop(event.stream_id, None)
            elif isinstance(event, ev.ConnectionTerminated):
                self.flush()
                assert self.transport is not None
                self.transport.close()
                return
        self.flush()

    def send(self, stream_id: int, data: bytes) -> None:
        if not self.conn.stream_is_open(stream_id):
            return
        taken = self.conn.send_data(stream_id, data, end_stream=True)
        if taken < len(data):
            self.pending[stream_id] = data[taken:]

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)


async def start(port: int = 0, config: H2Config | None = None) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    cfg = config or H2Config()
    return await loop.create_server(lambda: ConformanceProtocol(cfg), "127.0.0.1", port)


async def _main(port: int) -> None:
    server = await start(port)
    print("serving on", server.sockets[0].getsockname(), flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(_main(int(sys.argv[1]) if len(sys.argv) > 1 else 0))
