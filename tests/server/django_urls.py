"""A tiny Django URLconf for the end-to-end test (ROOT_URLCONF points here)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.urls import path


def echo(request: HttpRequest) -> JsonResponse:
    return JsonResponse(
        {
            "method": request.method,
            "path": request.path,
            "script_name": request.META.get("SCRIPT_NAME", ""),
            "query": request.GET.dict(),
            "body": request.body.decode(),
            "secure": request.is_secure(),
            "agent": request.headers.get("User-Agent"),
            # get_host() checks ALLOWED_HOSTS: a foreign Host is a 400.
            "host": request.get_host(),
        }
    )


async def async_view(request: HttpRequest) -> HttpResponse:
    return HttpResponse(json.dumps({"async": True}), content_type="application/json")


async def stream(request: HttpRequest) -> StreamingHttpResponse:
    async def lines() -> AsyncIterator[str]:
        for i in range(5):
            yield f"line {i}\n"

    return StreamingHttpResponse(lines())


def missing(request: HttpRequest) -> HttpResponse:
    return HttpResponse("nope", status=404)


urlpatterns = [
    path("echo/", echo),
    path("async/", async_view),
    path("stream/", stream),
    path("missing/", missing),
]
