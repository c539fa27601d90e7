"""SluicewayLiveServerTestCase: the project served on sluiceway on a free port."""

from __future__ import annotations

import json

import httpx
import pytest
from django.contrib.auth.models import User
from django.test import Client, override_settings
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from sluiceway.django.testing import SluicewayLiveServerTestCase


@override_settings(ASGI_APPLICATION="tests.django.live_app.application", DEBUG=True)
class LiveServer(SluicewayLiveServerTestCase):
    def test_django_views_static_files_and_a_logged_in_websocket(self) -> None:
        assert self.live_server_url.startswith("http://localhost:")
        assert self.live_server_ws_url == self.live_server_url.replace("http", "ws", 1)
        with httpx.Client(base_url=self.live_server_url, timeout=10) as client:
            echoed = client.post("/echo/?a=1", content=b"hi")
            assert echoed.status_code == 200 and echoed.json()["body"] == "hi"
            static = client.get("/static/site.css")
            assert static.status_code == 200 and "teal" in static.text

        User.objects.create_user("live", password="pw")
        django_client = Client()
        assert django_client.login(username="live", password="pw")
        cookie = f"sessionid={django_client.cookies['sessionid'].value}"
        origin = self.live_server_url
        url = f"{self.live_server_ws_url}/ws/lobby/"
        with connect(
            url, origin=origin, additional_headers={"Cookie": cookie}, open_timeout=10
        ) as ws:
            assert json.loads(ws.recv(timeout=10)) == {"user": "live", "room": "lobby"}
            ws.send(json.dumps({"n": 1}))
            assert json.loads(ws.recv(timeout=10)) == {"echo": {"n": 1}}

    def test_a_foreign_origin_is_refused(self) -> None:
        url = f"{self.live_server_ws_url}/ws/lobby/"
        with pytest.raises(InvalidStatus) as refused:
            connect(url, origin="http://evil.example", open_timeout=10)
        assert refused.value.response.status_code == 403
