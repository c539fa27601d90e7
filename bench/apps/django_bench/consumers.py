"""The tutorial chat consumer's shape, as an echo: each socket is alone in its own room.

A message received goes to the room's group through the channel layer and comes back
to the socket from the group, as in the tutorial's ``AsyncChatConsumer``; with one member
per room, a load tool that waits for its echo measures the consumer and the layer, not
the fan-out. ``build`` takes the consumer base class, so the Channels and the sluiceway
variants run the same code.
"""

from __future__ import annotations

from typing import Any


def build(base: type[Any]) -> type[Any]:
    class EchoChatConsumer(base):  # type: ignore[misc, valid-type]
        async def connect(self) -> None:
            self.room_group_name = "room_" + self.channel_name.rsplit("!", 1)[-1][-20:]
            await self.channel_layer.group_add(self.room_group_name, self.channel_name)
            await self.accept()

        async def disconnect(self, close_code: int) -> None:
            await self.channel_layer.group_discard(self.room_group_name, self.channel_name)

        async def receive(
            self, text_data: str | None = None, bytes_data: bytes | None = None
        ) -> None:
            await self.channel_layer.group_send(
                self.room_group_name, {"type": "chat.message", "message": text_data}
            )

        async def chat_message(self, event: dict[str, Any]) -> None:
            await self.send(text_data=event["message"])

    return EchoChatConsumer
