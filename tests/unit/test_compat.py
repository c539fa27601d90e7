"""ASGI 2 apps are detected and adapted; ASGI 3 apps pass through untouched."""

from __future__ import annotations

from typing import Any

import pytest

from sluiceway.asgi.compat import guarantee_single_callable, is_double_callable


async def asgi3(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "seen", "scope": scope["type"]})


class ASGI2:
    def __init__(self, scope: Any) -> None:
        self.scope = scope

    async def __call__(self, receive: Any, send: Any) -> None:
        await send({"type": "seen", "scope": self.scope["type"]})


class ASGI3Instance:
    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "seen", "scope": scope["type"]})


def test_detection() -> None:
    assert not is_double_callable(asgi3)
    assert is_double_callable(ASGI2)
    assert not is_double_callable(ASGI3Instance())
    assert is_double_callable(lambda scope: None)


@pytest.mark.parametrize("app", [asgi3, ASGI2, ASGI3Instance()])
async def test_both_styles_run_as_asgi3(app: Any) -> None:
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    async def receive() -> Any:
        return {}

    single = guarantee_single_callable(app)
    await single({"type": "http"}, receive, send)
    assert sent == [{"type": "seen", "scope": "http"}]


def test_an_asgi3_app_is_returned_as_it_is() -> None:
    assert guarantee_single_callable(asgi3) is asgi3
