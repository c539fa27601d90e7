"""The app the metrics tests serve (``--app-dir tests/server``): one route per thing counted.

* ``/ok``: 200 ``hello``; ``/pid``: 200 with the serving process's pid;
* ``/echo``: 200 with the request body;
* ``/boom``: raises before answering (the server's 500);
* ``/fill``: sends to one channel of the default (in-memory) channel layer
  until ``ChannelFull``, then a ``group_send`` to a group holding that full
  channel; answers with the number of messages queued;
* anything else: 404 ``app: <path>`` (so ``/metrics`` on the app's port is
  visibly the app's own answer);
* a WebSocket: accepted, then closed by the app when the client sends ``bye``;
  on ``/raise``, accepted, then the app raises (the server closes with 1011).
"""

from __future__ import annotations

import os
from typing import Any

from sluiceway.errors import ChannelFull
from sluiceway.layers import get_channel_layer


async def app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        return  # no lifespan (--lifespan auto serves on)
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        if scope["path"] == "/raise":
            raise RuntimeError("boom (the metrics test's WebSocket app exception)")
        while (await receive()).get("text") != "bye":
            pass
        await send({"type": "websocket.close", "code": 1000})
        return
    path = scope["path"]
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    status = 200
    if path == "/ok":
        out = b"hello"
    elif path == "/pid":
        out = str(os.getpid()).encode()
    elif path == "/echo":
        out = body
    elif path == "/boom":
        raise RuntimeError("boom (the metrics test's app exception)")
    elif path == "/fill":
        out = str(await fill()).encode()
    else:
        status, out = 404, b"app: " + path.encode()
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": out})


async def fill() -> int:
    layer = get_channel_layer()
    assert layer is not None
    queued = 0
    try:
        while True:
            await layer.send("full-channel", {"type": "test.message"})
            queued += 1
    except ChannelFull:
        pass
    await layer.group_add("metrics-group", "full-channel")
    await layer.group_send("metrics-group", {"type": "test.message"})
    return queued
