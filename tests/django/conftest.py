"""Django for tests/django: one settings object for the whole pytest process.

Django's settings are process-wide, and tests/server/test_frameworks.py serves
a Django app in the same process when the whole suite runs: it configures
Django only if nobody did, so the base settings here are its settings
(ROOT_URLCONF, ALLOWED_HOSTS, no MIDDLEWARE) plus the apps these tests need.
Tests change what they need with ``override_settings``. Conftests are
imported at collection, before any test runs, so these settings win whatever
order the tests run in.

The test database (SQLite in memory, shared between threads) is created once
per session.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import django
import pytest
from django.conf import settings

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="sluiceway-test-only",
        ROOT_URLCONF="tests.server.django_urls",
        ALLOWED_HOSTS=["127.0.0.1", "localhost"],
        INSTALLED_APPS=[
            "sluiceway.django",
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "django.contrib.sessions",
            "django.contrib.staticfiles",
        ],
        STATIC_URL="/static/",
        STATICFILES_DIRS=[str(Path(__file__).parent / "static")],
        MIDDLEWARE=[],
        USE_TZ=True,
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"],
    )
    django.setup()
elif "sluiceway.django" not in settings.INSTALLED_APPS:
    raise RuntimeError("tests/django: Django was configured elsewhere without sluiceway.django")


@pytest.fixture(scope="session", autouse=True)
def django_test_database() -> Iterator[None]:
    from django.db import connection
    from django.test.utils import setup_test_environment, teardown_test_environment

    setup_test_environment()
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True)
    yield
    connection.creation.destroy_test_db(old_name, verbosity=0)
    teardown_test_environment()
