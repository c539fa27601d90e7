"""The Django app ``sluiceway.django``: ``runserver`` and the channel layer signal.

With ``"sluiceway.django"`` in ``INSTALLED_APPS``, ``manage.py runserver``
serves the project's ASGI application on sluiceway (the command in
``management/commands/runserver.py`` overrides Django's, as Daphne's does:
list it before ``django.contrib.staticfiles``), and a change of the
``CHANNEL_LAYERS`` setting rebuilds the channel layers.
"""

from __future__ import annotations

from django.apps import AppConfig


class SluicewayConfig(AppConfig):  # type: ignore[misc]  # Django ships no type stubs
    name = "sluiceway.django"
    label = "sluiceway"
    verbose_name = "sluiceway"

    def ready(self) -> None:
        # Connects the setting_changed receiver.
        import sluiceway.django.layers  # noqa: F401
