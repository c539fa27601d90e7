"""File bodies for HTTP/1.1 and HTTP/2: the pathsend and zerocopysend extensions.

``open_file`` resolves what the app sent (a path for pathsend, a file object
with optional offset/count for zerocopysend) into a ``FileSlice``, raising
``ASGIMessageError`` before anything is written. ``transfer`` copies the
slice to the transport: ``loop.sendfile`` (``os.sendfile`` on the asyncio
loop over plain TCP, asyncio's own fallback under TLS), or, where the loop
has no ``sendfile`` (uvloop), reads of 64 KiB in the default executor, each
write respecting the drain.

Framing (chunk headers, Content-Length accounting) stays with the caller
(``http1/response_writer.py``, which also calls ``transfer``; ``http2/stream.py``
calls ``open_file`` and sends the slice in DATA frames).

Imports ``sluiceway.asgi.http`` (``FileSlice``), ``sluiceway.errors``,
``sluiceway.transport.flow`` and the standard library.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from sluiceway.asgi.http import FileSlice
from sluiceway.errors import ASGIMessageError, ClientDisconnected
from sluiceway.transport.flow import FlowControl

CHUNK_BYTES = 64 * 1024


def open_file(file: Any, offset: int | None, count: int | None) -> FileSlice:
    """A path (pathsend) or a file object (zerocopysend) as a slice to send."""
    if isinstance(file, str):
        try:
            handle = open(file, "rb")  # noqa: SIM115 - FileSlice.close() closes it
            size = os.fstat(handle.fileno()).st_size
        except OSError as exc:
            raise ASGIMessageError(f"pathsend cannot open {file!r}: {exc.strerror}") from exc
        return FileSlice(handle, 0, size, owned=True)
    try:
        start = file.tell() if offset is None else int(offset)
        size = os.fstat(file.fileno()).st_size
    except (AttributeError, OSError, ValueError) as exc:
        raise ASGIMessageError("zerocopysend needs a file object with fileno()") from exc
    available = max(0, size - start)
    n = available if count is None else min(int(count), available)
    return FileSlice(file, start, n, owned=False)


async def transfer(
    loop: asyncio.AbstractEventLoop,
    transport: asyncio.Transport,
    flow: FlowControl,
    file: Any,
    offset: int,
    count: int,
) -> None:
    """Write ``count`` bytes of ``file`` from ``offset``.

    Raises:
        ClientDisconnected: the client went away meanwhile.
        ASGIMessageError: the file shrank under us (the caller closes).
    """
    await flow.drain()
    try:
        await loop.sendfile(transport, file, offset, count)
        return
    except NotImplementedError:
        pass  # uvloop has no loop.sendfile: copy in chunks below
    except (ConnectionError, RuntimeError) as exc:
        raise ClientDisconnected("the client has disconnected") from exc
    fd = file.fileno()
    end = offset + count
    while offset < end:
        chunk = await loop.run_in_executor(
            None, os.pread, fd, min(CHUNK_BYTES, end - offset), offset
        )
        if not chunk:
            raise ASGIMessageError("file shrank while it was being sent")
        if flow.closed:
            raise ClientDisconnected("the client has disconnected")
        transport.write(chunk)
        offset += len(chunk)
        await flow.drain()
