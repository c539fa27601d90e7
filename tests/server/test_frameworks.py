"""Real frameworks served end to end over httpx: Starlette, FastAPI and Django."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

from tests.server.serving import TIMEOUT_S, running


async def test_starlette() -> None:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
    from starlette.routing import Route

    events: list[str] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        events.append("startup")
        yield {"greeting": "hello from lifespan"}
        events.append("shutdown")

    async def home(request: Request) -> JSONResponse:
        return JSONResponse(
            {
                "greeting": request.state.greeting,
                "q": request.query_params.get("q"),
                "path": request.url.path,
                "client": request.client.host if request.client else None,
            }
        )

    async def upload(request: Request) -> PlainTextResponse:
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
        return PlainTextResponse(str(size))

    async def numbers(request: Request) -> StreamingResponse:
        async def gen() -> AsyncIterator[bytes]:
            for i in range(3):
                yield f"{i};".encode()

        return StreamingResponse(gen(), media_type="text/plain")

    app = Starlette(
        routes=[
            Route("/", home),
            Route("/upload", upload, methods=["POST"]),
            Route("/numbers", numbers),
        ],
        lifespan=lifespan,
    )
    async with running(app, lifespan="on") as server:
        base = f"http://127.0.0.1:{server.port}"
        async with httpx.AsyncClient(base_url=base, timeout=TIMEOUT_S) as client:
            home_response = await client.get("/", params={"q": "a b&c"})
            assert home_response.json() == {
                "greeting": "hello from lifespan",
                "q": "a b&c",
                "path": "/",
                "client": "127.0.0.1",
            }
            upload_response = await client.post("/upload", content=b"x" * 300_000)
            assert upload_response.text == "300000"
            assert (await client.get("/numbers")).text == "0;1;2;"
            assert (await client.get("/nowhere")).status_code == 404
        assert events == ["startup"]
    assert events == ["startup", "shutdown"]


class Item(BaseModel):
    name: str
    price: float


async def test_fastapi() -> None:
    from fastapi import FastAPI

    app = FastAPI()

    @app.post("/items/{item_id}")
    async def create(item_id: int, item: Item) -> dict[str, Any]:
        return {"id": item_id, "name": item.name, "total": item.price * 2}

    async with running(app) as server, httpx.AsyncClient(timeout=TIMEOUT_S) as client:
        url = f"http://127.0.0.1:{server.port}/items/7"
        ok = await client.post(url, json={"name": "lamp", "price": 2.5})
        assert ok.json() == {"id": 7, "name": "lamp", "total": 5.0}
        invalid = await client.post(url, json={"name": "lamp"})
        assert invalid.status_code == 422


@pytest.fixture(scope="module")
def django_app() -> Any:
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            DEBUG=False,
            SECRET_KEY="sluiceway-test-only",
            ROOT_URLCONF="tests.server.django_urls",
            ALLOWED_HOSTS=["127.0.0.1", "localhost"],
            INSTALLED_APPS=[],
            MIDDLEWARE=[],
            USE_TZ=True,
        )
        django.setup()
    from django.core.asgi import get_asgi_application

    return get_asgi_application()


async def test_django(django_app: Any, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, "sluiceway.error"):
        # root_path as behind a proxy that strips "/site": the client asks for
        # /echo/, the app sees path /site/echo/ with SCRIPT_NAME /site.
        async with running(django_app, root_path="/site") as server:
            base = f"http://127.0.0.1:{server.port}"
            async with httpx.AsyncClient(base_url=base, timeout=TIMEOUT_S) as client:
                echoed = await client.post(
                    "/echo/?a=1&b=two", content=b"payload", headers={"User-Agent": "t/1"}
                )
                assert echoed.status_code == 200
                assert echoed.json() == {
                    "method": "POST",
                    "path": "/site/echo/",
                    "script_name": "/site",
                    "query": {"a": "1", "b": "two"},
                    "body": "payload",
                    "secure": False,
                    "agent": "t/1",
                    "host": f"127.0.0.1:{server.port}",
                }
                assert (await client.get("/async/")).json() == {"async": True}
                assert (await client.get("/stream/")).text == "".join(
                    f"line {i}\n" for i in range(5)
                )
                assert (await client.get("/missing/")).status_code == 404
                # Django checks Host against ALLOWED_HOSTS: 400, and the server lives on.
                bad = await client.get("/echo/", headers={"Host": "evil.example"})
                assert bad.status_code == 400
                assert (await client.get("/async/")).status_code == 200
    # Django raises on the lifespan scope; under auto that is one info line.
    notes = [r.getMessage() for r in caplog.records if "lifespan" in r.getMessage().lower()]
    assert len(notes) == 1 and "does not support the ASGI lifespan protocol" in notes[0]
