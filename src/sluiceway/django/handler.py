"""Django's ASGI request cycle, with less asyncio machinery around each request.

``ASGIHandler`` is Django's own handler (``django.core.handlers.asgi``) with
``handle`` written again; everything it calls is Django's: ``read_body``,
``create_request``, ``run_get_response`` (middleware, URL resolution, the
view), ``send_response``, ``listen_for_disconnect``, the signals. What a
request sees is what it sees under Django's handler:

- ``request_started`` is sent with the ASGI scope before the request is
  built, and its sync receivers run on the request's own thread (Django's
  per-request ``ThreadSensitiveContext``), as ``close_old_connections`` must;
- the view is cancelled when the client disconnects before the response is
  sent: it sees ``CancelledError`` at its current ``await``, and
  ``request_finished`` is sent instead of the response being closed;
- otherwise ``response.close()`` runs on the request's thread, which sends
  ``request_finished``.

Where it differs, and why (1.3x the requests per second of Django's handler on
bench/django_load.py's async JSON view; docs/django.md note 13):

- Django runs the view and the disconnect listener as two child tasks and
  waits for the first with ``asyncio.wait``. Here the view runs in the
  request's own task, and one listener task cancels it if the client leaves.
  The listener is cancelled once the response is sent; a view that never
  suspends finishes before the listener has even started, so it never calls
  ``receive()``.
- ``request_started`` goes through ``Signal.send`` on the request's thread,
  the way ``request_finished`` always does (from ``response.close()``), not
  ``Signal.asend``, which gathers a task per request. Async receivers still
  run, after the sync ones, on the server's loop (Django's ``send`` calls
  them through ``async_to_sync``) rather than alongside them.
- The two thread hops are built once, not per request.

Used by ``sluiceway.django.asgi.get_asgi_application()`` on Django 5.0 and
newer (whose handler listens for disconnects as this one does) and Python 3.11
and newer (``Task.uncancel``); with anything older that function returns
Django's handler.

Imports Django and asgiref; never the server.
"""

from __future__ import annotations

import asyncio
import sys
from contextlib import closing
from typing import Any

from asgiref.sync import sync_to_async
from django.core import signals
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler as DjangoASGIHandler
from django.core.handlers.asgi import get_script_prefix
from django.urls import set_script_prefix

from sluiceway.asgi.types import Receive, Scope, Send

__all__ = ["ASGIHandler"]


def _close(response: Any) -> None:
    response.close()  # the response's own close(): a subclass may add to it


# Thread-sensitive hops, made once: asgiref's wrapper keeps no per-call state.
_close_response = sync_to_async(_close)
_send_request_started = sync_to_async(signals.request_started.send)
_send_request_finished = sync_to_async(signals.request_finished.send)


class ASGIHandler(DjangoASGIHandler):  # type: ignore[misc]  # Django ships no type stubs
    """Django's ASGI handler; ``handle`` takes one task and two thread hops per request."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        with closing(body_file):
            set_script_prefix(get_script_prefix(scope))
            await _send_request_started(sender=self.__class__, scope=scope)
            request, error_response = self.create_request(scope, body_file)
            if request is None:
                await self.send_response(error_response, send)
                await _close_response(error_response)
                return
            response = await self._respond(request, receive, send)
            if response is None:
                await _send_request_finished(sender=self.__class__)
            else:
                await _close_response(response)

    async def _respond(self, request: Any, receive: Receive, send: Send) -> Any:
        """Run the view and send its response; None if the client left before there was one.

        Raises:
            AssertionError: the server sent something other than
                ``http.disconnect`` after the body (Django's listener's own error).
        """
        task = asyncio.current_task()
        assert task is not None  # an ASGI app always runs in a task
        listener = asyncio.get_running_loop().create_task(self._cancel_on_disconnect(receive, task))
        response = None
        client_left = False
        try:
            response = await self.run_get_response(request)
            await self.send_response(response, send)
        except asyncio.CancelledError:
            if _ending(listener) is None:
                raise  # not the listener's doing: the server's shutdown, an outer timeout
            client_left = True
            if _uncancel(task) > 0:
                raise  # cancelled by someone else as well
        finally:
            listener.cancel()  # nothing if it has ended; before its first step, it never runs
        ending = _ending(listener)
        if ending is not None:
            if not client_left:
                _uncancel(task)  # the view kept its cancellation to itself and went on
            if not isinstance(ending, RequestAborted):
                raise ending
        return response

    async def _cancel_on_disconnect(self, receive: Receive, task: asyncio.Task[Any]) -> None:
        try:
            await self.listen_for_disconnect(receive)  # raises when the client leaves
        except asyncio.CancelledError:
            raise  # the response is out: nothing to do
        except BaseException:
            task.cancel()
            raise


if sys.version_info >= (3, 11):

    def _uncancel(task: asyncio.Task[Any]) -> int:
        return task.uncancel()

else:  # never called: get_asgi_application() uses this handler on 3.11+ only

    def _uncancel(task: asyncio.Task[Any]) -> int:
        raise RuntimeError("sluiceway.django.handler needs Python 3.11 (Task.uncancel)")


def _ending(listener: asyncio.Task[None]) -> BaseException | None:
    """What ended the disconnect listener (``RequestAborted`` when the client left), if it did.

    Reading the exception also keeps asyncio from logging it as never retrieved.
    """
    if not listener.done() or listener.cancelled():
        return None
    return listener.exception()
