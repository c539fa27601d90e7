"""WsgiToAsgi: the environ, the streamed body both ways, start_response rules, close()."""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from collections.abc import Iterable, Iterator
from typing import Any

import httpx
import pytest

from sluiceway.testing import ApplicationCommunicator, HttpCommunicator, http_scope
from sluiceway.wsgi import WsgiToAsgi
from tests.toolkit.servers import Server, under_sluiceway, under_uvicorn

Environ = dict[str, Any]


def environ_app(environ: Environ, start_response: Any) -> list[bytes]:
    keys = [k for k in environ if k.isupper()]
    body = json.dumps({k: environ[k] for k in keys} | {"scheme": environ["wsgi.url_scheme"]})
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body.encode()]


async def get_environ(scope: dict[str, Any], body: bytes = b"") -> dict[str, Any]:
    comm = ApplicationCommunicator(WsgiToAsgi(environ_app), scope)
    await comm.send_input({"type": "http.request", "body": body, "more_body": False})
    start = await comm.receive_output()
    assert start["status"] == 200
    result: dict[str, Any] = json.loads((await comm.receive_output())["body"])
    await comm.wait()
    return result


async def test_environ_paths_query_server_and_client() -> None:
    scope = http_scope("POST", "/app/caf%C3%A9/x?q=1&r=%20", root_path="/app", scheme="https")
    scope["server"] = ("example.org", 8443)
    scope["client"] = ("10.0.0.7", 5555)
    scope["http_version"] = "2"
    env = await get_environ(scope)
    assert env["REQUEST_METHOD"] == "POST"
    assert env["SCRIPT_NAME"] == "/app"
    # PEP 3333: the UTF-8 bytes of the path, carried as latin-1 text.
    assert env["PATH_INFO"] == "/café/x".encode().decode("latin-1")
    assert env["QUERY_STRING"] == "q=1&r=%20"
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("example.org", "8443")
    assert (env["REMOTE_ADDR"], env["REMOTE_PORT"]) == ("10.0.0.7", "5555")
    assert env["SERVER_PROTOCOL"] == "HTTP/2"
    assert env["scheme"] == "https"


async def test_environ_path_outside_root_path_is_kept_whole() -> None:
    env = await get_environ(http_scope("GET", "/other", root_path="/app/"))
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/app", "/other")


async def test_environ_without_server_uses_the_host_header() -> None:
    scope = http_scope("GET", "/", headers=[("host", "[::1]:9000")])
    scope["server"] = None
    env = await get_environ(scope)
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("[::1]", "9000")


async def test_environ_headers() -> None:
    headers = [
        ("content-type", "text/plain"),
        ("content-length", "3"),
        ("content-length", "3"),
        ("x-multi", "a"),
        ("x-multi", "b"),
        ("cookie", "a=1"),
        ("cookie", "b=2"),
        ("x_forwarded_for", "6.6.6.6"),
        ("x-forwarded-for", "1.2.3.4"),
        ("x-latin", "caf\xe9"),
    ]
    env = await get_environ(http_scope("POST", "/", headers=headers), b"abc")
    assert env["CONTENT_TYPE"] == "text/plain"
    assert env["CONTENT_LENGTH"] == "3"
    assert "HTTP_CONTENT_TYPE" not in env and "HTTP_CONTENT_LENGTH" not in env
    assert env["HTTP_X_MULTI"] == "a,b"
    assert env["HTTP_COOKIE"] == "a=1; b=2"
    # The underscore spelling is dropped, so it cannot override the real header.
    assert env["HTTP_X_FORWARDED_FOR"] == "1.2.3.4"
    assert env["HTTP_X_LATIN"] == "caf\xe9"


async def test_too_many_repeats_of_a_header_is_431() -> None:
    app = WsgiToAsgi(environ_app, max_header_repeats=4)
    headers = [("x-dup", str(i)) for i in range(5)]
    response = await HttpCommunicator(app, "GET", "/", headers=headers).get_response()
    assert response["status"] == 431
    ok = await HttpCommunicator(app, "GET", "/", headers=headers[:4]).get_response()
    assert ok["status"] == 200


async def test_conflicting_content_length_is_400() -> None:
    headers = [("content-length", "3"), ("content-length", "4")]
    app = WsgiToAsgi(environ_app)
    response = await HttpCommunicator(app, "POST", "/", body=b"abc", headers=headers).get_response()
    assert response["status"] == 400


async def wait_event(event: threading.Event, timeout: float = 5) -> None:
    loop = asyncio.get_running_loop()
    assert await loop.run_in_executor(None, event.wait, timeout), "event not set in time"


async def test_request_body_streams_as_it_arrives() -> None:
    got_first = threading.Event()
    seen: list[bytes] = []

    def app(environ: Environ, start_response: Any) -> list[bytes]:
        stream = environ["wsgi.input"]
        seen.append(stream.read(4))
        got_first.set()
        seen.append(stream.readline())
        seen.append(stream.read())
        start_response("200 OK", [])
        return [b"|".join(seen)]

    comm = ApplicationCommunicator(WsgiToAsgi(app), http_scope("POST", "/"))
    await comm.send_input({"type": "http.request", "body": b"abcd", "more_body": True})
    # The app has the first bytes before the rest of the body exists.
    await wait_event(got_first)
    await comm.send_input({"type": "http.request", "body": b"ef\ngh", "more_body": True})
    await comm.send_input({"type": "http.request", "body": b"ij", "more_body": False})
    assert (await comm.receive_output(5))["status"] == 200
    assert (await comm.receive_output(5))["body"] == b"abcd|ef\n|ghij"
    await comm.wait()


async def test_body_read_ahead_is_bounded() -> None:
    release = threading.Event()
    started = threading.Event()
    calls = 0
    chunk = b"x" * 1024

    async def receive() -> dict[str, Any]:
        # Never suspends: a reader with no bound would take all 1000 chunks in
        # the one loop step it gets before the app can even start.
        nonlocal calls
        calls += 1
        return {"type": "http.request", "body": chunk, "more_body": calls < 1000}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    def app(environ: Environ, start_response: Any) -> list[bytes]:
        started.set()
        release.wait(10)
        total = len(environ["wsgi.input"].read())
        start_response("200 OK", [])
        return [str(total).encode()]

    wsgi = WsgiToAsgi(app, body_buffer_bytes=8 * 1024)
    task = asyncio.ensure_future(wsgi(http_scope("POST", "/"), receive, send))
    try:
        # The reader task was scheduled before the app was submitted, so its
        # step has run by the time the app's start reaches the loop.
        await wait_event(started)
        assert calls <= 9
    finally:
        release.set()
    await asyncio.wait_for(task, 10)
    assert sent[-1]["body"] == b"1024000"


async def test_client_disconnect_mid_body_raises_in_read() -> None:
    outcome: list[str] = []

    def app(environ: Environ, start_response: Any) -> list[bytes]:
        try:
            environ["wsgi.input"].read()
        except OSError as exc:
            outcome.append(type(exc).__name__)
            raise
        return []

    comm = ApplicationCommunicator(WsgiToAsgi(app), http_scope("POST", "/"))
    await comm.send_input({"type": "http.request", "body": b"ab", "more_body": True})
    await comm.send_input({"type": "http.disconnect"})
    await comm.wait(5)
    # The client is gone: no 500 is attempted and nothing is logged as an error.
    assert await comm.receive_nothing(0.01)
    assert outcome == ["ClientDisconnected"]


class Closing:
    """A response iterable that records close()."""

    def __init__(self, chunks: Iterable[bytes], fail_at: int | None = None) -> None:
        self.chunks = list(chunks)
        self.fail_at = fail_at
        self.closed = threading.Event()

    def __iter__(self) -> Iterator[bytes]:
        for i, chunk in enumerate(self.chunks):
            if i == self.fail_at:
                raise RuntimeError("secret detail")
            yield chunk

    def close(self) -> None:
        self.closed.set()


async def test_response_streams_and_close_is_called() -> None:
    gate = threading.Event()
    closed = threading.Event()

    class Stream:
        def __iter__(self) -> Iterator[bytes]:
            yield b"first"
            gate.wait(10)
            yield b""
            yield b"second"

        def close(self) -> None:
            closed.set()

    def app(environ: Environ, start_response: Any) -> Stream:
        start_response("200 OK", [("X-Kind", "stream")])
        return Stream()

    comm = ApplicationCommunicator(WsgiToAsgi(app), http_scope("GET", "/"))
    await comm.send_input({"type": "http.request", "body": b"", "more_body": False})
    start = await comm.receive_output(5)
    assert (start["status"], start["headers"]) == (200, [(b"x-kind", b"stream")])
    first = await comm.receive_output(5)
    assert (first["body"], first["more_body"]) == (b"first", True)
    gate.set()  # only now can the second chunk exist: the first was not held back
    second = await comm.receive_output(5)
    assert (second["body"], second["more_body"]) == (b"second", True)
    last = await comm.receive_output(5)
    assert (last["body"], last["more_body"]) == (b"", False)
    await comm.wait(5)
    assert closed.is_set()


async def test_content_length_response_ends_in_one_message() -> None:
    def app(environ: Environ, start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Length", "5")])
        yield b"hello"

    comm = ApplicationCommunicator(WsgiToAsgi(app), http_scope("GET", "/"))
    await comm.send_input({"type": "http.request", "body": b"", "more_body": False})
    assert (await comm.receive_output())["type"] == "http.response.start"
    body = await comm.receive_output()
    assert (body["body"], body["more_body"]) == (b"hello", False)
    await comm.wait()
    assert await comm.receive_nothing(0.01)


class Endless:
    """An endless response iterable that counts how often it is advanced and closed."""

    def __init__(self, chunk: bytes) -> None:
        self.chunk = chunk
        self.advanced = 0
        self.advanced_after_close = 0
        self.closes = 0
        self.closed = threading.Event()

    def __iter__(self) -> Endless:
        return self

    def __next__(self) -> bytes:
        self.advanced += 1
        if self.closes:
            self.advanced_after_close += 1
        return self.chunk

    def close(self) -> None:
        self.closes += 1
        self.closed.set()


@pytest.mark.parametrize(
    "length, chunk, written, advanced, body",
    [
        ("4", b"abcd", b"", 1, [b"abcd"]),
        # The length is complete after the second chunk: no third next().
        ("4", b"ab", b"", 2, [b"ab", b"ab"]),
        # write() sent it all: the iterable is not advanced at all.
        ("4", b"ab", b"abcd", 0, [b"abcd"]),
        # Nothing to send: the headers leave with an empty body, unasked.
        ("0", b"", b"", 0, [b""]),
    ],
)
async def test_iteration_stops_once_content_length_is_out(
    length: str, chunk: bytes, written: bytes, advanced: int, body: list[bytes]
) -> None:
    # PEP 3333 "Handling the Content-Length Header": stop iterating, then close().
    result = Endless(chunk)

    def app(environ: Environ, start_response: Any) -> Endless:
        write = start_response("200 OK", [("Content-Length", length)])
        if written:
            write(written)
        return result

    comm = ApplicationCommunicator(WsgiToAsgi(app), http_scope("GET", "/"))
    await comm.send_input({"type": "http.request", "body": b"", "more_body": False})
    assert (await comm.receive_output(5))["type"] == "http.response.start"
    bodies = [await comm.receive_output(5) for _ in body]
    assert [m["body"] for m in bodies] == body
    assert [m["more_body"] for m in bodies] == [True] * (len(body) - 1) + [False]
    await comm.wait(5)  # the worker stopped: the app returned
    assert (result.advanced, result.closes) == (advanced, 1)


async def test_error_before_headers_is_a_plain_500_and_close_is_called() -> None:
    result = Closing([b"a", b"b"], fail_at=0)

    def app(environ: Environ, start_response: Any) -> Closing:
        start_response("200 OK", [])
        return result

    comm = HttpCommunicator(WsgiToAsgi(app), "GET", "/")
    response = await comm.get_response()
    assert response["status"] == 500
    assert b"secret" not in response["body"]
    await comm.wait()
    assert result.closed.is_set()


async def test_error_after_headers_propagates_and_close_is_called() -> None:
    result = Closing([b"a", b"b"], fail_at=1)

    def app(environ: Environ, start_response: Any) -> Closing:
        start_response("200 OK", [])
        return result

    comm = ApplicationCommunicator(WsgiToAsgi(app), http_scope("GET", "/"))
    await comm.send_input({"type": "http.request", "body": b"", "more_body": False})
    assert (await comm.receive_output())["status"] == 200
    assert (await comm.receive_output())["body"] == b"a"
    with pytest.raises(RuntimeError, match="secret detail"):
        await comm.wait()
    assert result.closed.is_set()


async def test_start_response_exc_info_replaces_an_unsent_response() -> None:
    def app(environ: Environ, start_response: Any) -> list[bytes]:
        start_response("200 OK", [("X-A", "1")])
        try:
            raise ValueError("oops")
        except ValueError:
            start_response("503 Service Unavailable", [("X-B", "2")], sys.exc_info())
        return [b"sorry"]

    response = await HttpCommunicator(WsgiToAsgi(app), "GET", "/").get_response()
    assert response["status"] == 503
    assert response["headers"] == [(b"x-b", b"2")]


async def test_start_response_exc_info_after_headers_reraises() -> None:
    def app(environ: Environ, start_response: Any) -> list[bytes]:
        write = start_response("200 OK", [])
        write(b"partial")
        try:
            raise ValueError("too late")
        except ValueError:
            start_response("500 Error", [], sys.exc_info())
        return []

    comm = ApplicationCommunicator(WsgiToAsgi(app), http_scope("GET", "/"))
    await comm.send_input({"type": "http.request", "body": b"", "more_body": False})
    assert (await comm.receive_output())["status"] == 200
    assert (await comm.receive_output())["body"] == b"partial"
    with pytest.raises(ValueError, match="too late"):
        await comm.wait()


async def test_second_start_response_without_exc_info_is_an_error() -> None:
    def app(environ: Environ, start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        start_response("201 Created", [])
        return [b""]

    response = await HttpCommunicator(WsgiToAsgi(app), "GET", "/").get_response()
    assert response["status"] == 500


@pytest.mark.parametrize(
    "status, headers",
    [
        ("OK", []),
        ("200OK", []),
        ("200 OK", [("X", "a\r\nb")]),
        ("200 OK", [("X", "\u2603")]),
        ("200 OK", [("X Y", "a")]),
        ("200 OK", [("X:Y", "a")]),
    ],
)
async def test_bad_status_or_headers_are_500(status: str, headers: list[tuple[str, str]]) -> None:
    def app(environ: Environ, start_response: Any) -> list[bytes]:
        start_response(status, headers)
        return [b"x"]

    response = await HttpCommunicator(WsgiToAsgi(app), "GET", "/").get_response()
    assert response["status"] == 500


async def test_write_callable_then_iterable() -> None:
    def app(environ: Environ, start_response: Any) -> list[bytes]:
        write = start_response("200 OK", [])
        write(b"one,")
        return [b"two"]

    response = await HttpCommunicator(WsgiToAsgi(app), "GET", "/").get_response()
    assert response["body"] == b"one,two"


async def test_websocket_is_refused_and_lifespan_completes() -> None:
    app = WsgiToAsgi(environ_app)
    ws = ApplicationCommunicator(app, {"type": "websocket", "path": "/"})
    await ws.send_input({"type": "websocket.connect"})
    assert (await ws.receive_output())["type"] == "websocket.close"
    await ws.wait()

    life = ApplicationCommunicator(app, {"type": "lifespan", "asgi": {"version": "3.0"}})
    await life.send_input({"type": "lifespan.startup"})
    assert (await life.receive_output())["type"] == "lifespan.startup.complete"
    await life.send_input({"type": "lifespan.shutdown"})
    assert (await life.receive_output())["type"] == "lifespan.shutdown.complete"
    await life.wait()


async def test_websocket_gone_before_connect_gets_no_close() -> None:
    ws = ApplicationCommunicator(WsgiToAsgi(environ_app), {"type": "websocket", "path": "/"})
    await ws.send_input({"type": "websocket.disconnect", "code": 1001})
    await ws.wait()
    assert await ws.receive_nothing(0)  # nothing to refuse: the client is gone


# -- over a real socket: under sluiceway, and under uvicorn (any server works) --

SERVERS: dict[str, Server] = {"uvicorn": under_uvicorn, "sluiceway": under_sluiceway}


def plain_app(environ: Environ, start_response: Any) -> Iterator[bytes]:
    size = int(environ.get("CONTENT_LENGTH") or 0)
    data = environ["wsgi.input"].read(size)
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b"len=" + str(len(data)).encode()
    yield b";path=" + environ["PATH_INFO"].encode("latin-1")


@pytest.mark.parametrize("server", sorted(SERVERS))
async def test_plain_wsgi_app_over_a_real_socket(server: str) -> None:
    async with SERVERS[server](WsgiToAsgi(plain_app)) as host, httpx.AsyncClient() as client:
        response = await client.post(
            f"http://{host}/some/where", content=b"z" * 100_000, timeout=10
        )
    assert response.status_code == 200
    assert response.text == "len=100000;path=/some/where"


@pytest.mark.parametrize("server", sorted(SERVERS))
async def test_flask_app_over_a_real_socket(server: str) -> None:
    flask = pytest.importorskip("flask")
    app = flask.Flask("sluiceway_test")

    @app.post("/items/<int:item_id>")
    def update(item_id: int) -> Any:
        payload = flask.request.get_json()
        return {"id": item_id, "name": payload["name"], "q": flask.request.args.get("q")}

    @app.get("/boom")
    def boom() -> Any:
        raise RuntimeError("hidden")

    async with SERVERS[server](WsgiToAsgi(app.wsgi_app)) as host, httpx.AsyncClient() as client:
        url = f"http://{host}"
        ok = await client.post(url + "/items/7?q=x", json={"name": "kettle"}, timeout=10)
        missing = await client.get(url + "/nope", timeout=10)
        failed = await client.get(url + "/boom", timeout=10)
    assert ok.status_code == 200
    assert ok.json() == {"id": 7, "name": "kettle", "q": "x"}
    assert missing.status_code == 404
    assert failed.status_code == 500
    assert "hidden" not in failed.text


@pytest.mark.parametrize("server", sorted(SERVERS))
async def test_client_gone_mid_stream_stops_iteration_and_closes_once(server: str) -> None:
    # uvicorn (www spec 2.3) drops send() after a disconnect silently: only
    # http.disconnect tells the adapter to stop; sluiceway's send() raises.
    result = Endless(b"x" * 4096)

    def app(environ: Environ, start_response: Any) -> Endless:
        start_response("200 OK", [])
        return result

    async with SERVERS[server](WsgiToAsgi(app)) as host:
        name, port = host.split(":")
        reader, writer = await asyncio.open_connection(name, int(port))
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200")
        assert await asyncio.wait_for(reader.read(1), 5)  # the body is streaming
        writer.close()
        await wait_event(result.closed)
    assert (result.closes, result.advanced_after_close) == (1, 0)


async def test_half_closed_client_still_gets_the_whole_response() -> None:
    # sluiceway answers http.disconnect to a client that half-closed, yet its
    # send() still reaches it (RFC 9112 §9.6): with www spec 2.4 the adapter
    # trusts send(), so the response is not cut short.
    def app(environ: Environ, start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [])
        for i in range(50):
            yield b"%d," % i

    async with under_sluiceway(WsgiToAsgi(app)) as host:
        name, port = host.split(":")
        reader, writer = await asyncio.open_connection(name, int(port))
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        writer.write_eof()
        response = await asyncio.wait_for(reader.read(), 5)
        writer.close()
    body = response.partition(b"\r\n\r\n")[2]
    assert b"49," in body and b"0\r\n\r\n" in body  # the last chunk and the end
