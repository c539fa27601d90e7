"""Settings for the benchmark project: no database, no middleware."""

SECRET_KEY = "bench-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS: list[str] = []
# No middleware: under an async view, Django runs each of its (sync-capable) default
# middleware through sync_to_async, a thread hop per hook per request, the same cost on
# every server; with them the view measures asgiref's thread pool, not the server.
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "bench.apps.django_bench.urls"
DATABASES: dict[str, object] = {}
USE_TZ = True
# The same string for every server: Channels builds its in-memory layer from it,
# sluiceway.django maps it to sluiceway's (docs/django.md).
CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
