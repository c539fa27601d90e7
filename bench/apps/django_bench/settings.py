"""Settings for the benchmark project: no database, Django's default middleware that needs none."""

SECRET_KEY = "bench-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS: list[str] = []
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
ROOT_URLCONF = "bench.apps.django_bench.urls"
DATABASES: dict[str, object] = {}
USE_TZ = True
# The same string for every server: Channels builds its in-memory layer from it,
# sluiceway.django maps it to sluiceway's (docs/django.md).
CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
