"""The Django project of bench/django_load.py: one async JSON view, one group-echo consumer.

Served two ways from the same settings, views and consumer code: ``asgi_channels``
with Channels' router and consumer base (for Daphne and uvicorn), and
``asgi_sluiceway`` with sluiceway.django's (imports changed, nothing else).
"""
