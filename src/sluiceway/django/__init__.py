"""Django integration: a Channels + Daphne project on sluiceway, by changing imports.

Add ``"sluiceway.django"`` to ``INSTALLED_APPS`` (for ``runserver`` and the
``CHANNEL_LAYERS`` signal), then import from here what you imported from
``channels``:

=============================  ==========================================
``channels.db``                ``sluiceway.django.db``
``channels.auth``              ``sluiceway.django.auth``
``channels.sessions``          ``sluiceway.django.sessions``
``channels.routing``           ``sluiceway.django.routing``
``channels.layers``            ``sluiceway.django.layers``
``channels.security.websocket`` ``sluiceway.django.security``
``channels.generic.*``         ``sluiceway.django.consumers``
``channels.testing``           ``sluiceway.django.testing``
=============================  ==========================================

docs/django.md has the whole table and every difference.

Invariant: nothing else in sluiceway imports this package, so sluiceway's
core stays Django-free; importing ``sluiceway.django`` itself imports no
Django module (each submodule imports what it needs).
"""

from __future__ import annotations
