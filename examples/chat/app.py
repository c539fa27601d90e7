"""A chat with rooms: one HTML page, one WebSocket consumer, one group per room.

Run one process (the in-memory layer is enough)::

    sluiceway run examples.chat.app:application

or several processes sharing one Redis, so that people connected to
different processes (or machines) chat together::

    export SLUICEWAY_CHANNEL_LAYER=redis://localhost:6379/0
    sluiceway run examples.chat.app:application --port 8000 &
    sluiceway run examples.chat.app:application --port 8001 &

Open http://127.0.0.1:8000/ and http://127.0.0.1:8001/ and pick the same room.

The page talks to ``/ws/chat/<room>/``. Each connection's consumer joins the
group ``chat.<room>``; a message typed by one member is sent to the group with
``group_send`` and each member's consumer writes it to its own socket.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sluiceway.consumers import AsyncHttpConsumer, AsyncJsonWebsocketConsumer
from sluiceway.routing import ProtocolTypeRouter, URLRouter, path

PAGE = (Path(__file__).parent / "index.html").read_bytes()

MAX_NAME_CHARS = 32
MAX_TEXT_CHARS = 2000
MAX_ROOM_CHARS = 40  # "chat." + room stays well under the 100-character group limit


class ChatPage(AsyncHttpConsumer):
    async def handle(self, body: bytes) -> None:
        headers = [(b"content-type", b"text/html; charset=utf-8"), (b"cache-control", b"no-store")]
        await self.send_response(200, PAGE, headers=headers)


class ChatConsumer(AsyncJsonWebsocketConsumer):
    """One per browser tab: joins its room's group, relays what its user types."""

    group = ""

    async def connect(self) -> None:
        room = self.scope["url_route"]["kwargs"]["room"]
        if self.channel_layer is None or len(room) > MAX_ROOM_CHARS:
            await self.close(code=4000)  # no layer, or a room name we refuse
            return
        self.group = f"chat.{room}"
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        if self.group and self.channel_layer is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if not isinstance(content, dict):
            return
        text, name = content.get("text"), content.get("name") or "anonymous"
        if not isinstance(text, str) or not text.strip() or not isinstance(name, str):
            return
        if self.channel_layer is None:  # connect() refused the socket already
            return
        await self.channel_layer.group_send(
            self.group,
            {
                "type": "chat.message",
                "name": name[:MAX_NAME_CHARS],
                "text": text[:MAX_TEXT_CHARS],
            },
        )

    async def chat_message(self, event: dict[str, Any]) -> None:
        await self.send_json({"name": event["name"], "text": event["text"]})


application = ProtocolTypeRouter(
    {
        "http": URLRouter([path("", ChatPage.as_asgi())]),
        "websocket": URLRouter([path("ws/chat/<slug:room>/", ChatConsumer.as_asgi())]),
    }
)
