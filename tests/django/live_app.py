"""The ASGI application the live-server tests serve (ASGI_APPLICATION points here)."""

from __future__ import annotations

from typing import Any

from django.core.asgi import get_asgi_application

from sluiceway.django.auth import AuthMiddlewareStack
from sluiceway.django.consumers import AsyncJsonWebsocketConsumer
from sluiceway.django.routing import ProtocolTypeRouter, URLRouter
from sluiceway.django.security import AllowedHostsOriginValidator


class WhoAmI(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        await self.accept()
        user = self.scope["user"]
        await self.send_json(
            {"user": user.username or None, "room": self.scope["url_route"]["kwargs"]["room"]}
        )

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        await self.send_json({"echo": content})


def make_application() -> Any:
    from django.urls import path

    return ProtocolTypeRouter(
        {
            "http": get_asgi_application(),
            "websocket": AllowedHostsOriginValidator(
                AuthMiddlewareStack(URLRouter([path("ws/<slug:room>/", WhoAmI.as_asgi())]))
            ),
        }
    )


application = make_application()
