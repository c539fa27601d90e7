"""The project on Channels (served by Daphne and by uvicorn in bench/django_load.py)."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.apps.django_bench.settings")
from django.core.asgi import get_asgi_application

django_asgi_app = get_asgi_application()

from channels.generic.websocket import AsyncWebsocketConsumer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

from bench.apps.django_bench.consumers import build  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": URLRouter([path("ws/echo/", build(AsyncWebsocketConsumer).as_asgi())]),
    }
)
