"""ASGI config: the Channels tutorial's, with sluiceway's imports.

Run with ``manage.py runserver`` (development) or
``sluiceway run mysite.asgi:application`` (production).
"""

import os

from sluiceway.django.asgi import get_asgi_application  # django.core.asgi, leaner; threads reused

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
# Initialize Django's app registry early, before importing code that may import ORM models.
django_asgi_app = get_asgi_application()

from chat.routing import websocket_urlpatterns  # noqa: E402

from sluiceway.django.auth import AuthMiddlewareStack  # noqa: E402  # channels.auth
from sluiceway.django.routing import ProtocolTypeRouter, URLRouter  # noqa: E402  # channels.routing
from sluiceway.django.security import AllowedHostsOriginValidator  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
        ),
    }
)
