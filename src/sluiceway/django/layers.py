"""Channel layers from Django's ``CHANNEL_LAYERS``, rebuilt when the setting changes.

``sluiceway.layers.get_channel_layer()`` already reads ``settings.CHANNEL_LAYERS``
(Channels' format, Channels' backend paths included) when Django is configured.
This module adds what Channels' ``channels.layers`` does on top: on Django's
``setting_changed`` signal for ``CHANNEL_LAYERS`` (``override_settings`` in
tests) the layers built so far are dropped, so the next lookup builds them from
the new value. The receiver is connected on import; the ``sluiceway.django``
app imports this module in ``ready()``.
"""

from __future__ import annotations

from typing import Any

from django.core.signals import setting_changed

from sluiceway.layers import DEFAULT_CHANNEL_LAYER, channel_layers, get_channel_layer

__all__ = ["DEFAULT_CHANNEL_LAYER", "channel_layers", "get_channel_layer"]


def _rebuild_on_change(setting: str, **kwargs: Any) -> None:
    if setting == "CHANNEL_LAYERS":
        channel_layers.drop_built()


setting_changed.connect(_rebuild_on_change, dispatch_uid="sluiceway.django.layers")
