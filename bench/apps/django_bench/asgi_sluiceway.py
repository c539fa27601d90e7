"""The same project on sluiceway.django: only the imports differ from asgi_channels.py."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.apps.django_bench.settings")
from sluiceway.django.asgi import get_asgi_application

django_asgi_app = get_asgi_application()

from django.urls import path  # noqa: E402

from bench.apps.django_bench.consumers import build  # noqa: E402
from sluiceway.django.consumers import AsyncWebsocketConsumer  # noqa: E402
from sluiceway.django.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": URLRouter([path("ws/echo/", build(AsyncWebsocketConsumer).as_asgi())]),
    }
)
