"""Plain HTTP routes through a real server: health, demo tokens, the page, JSON errors."""

from __future__ import annotations

import json
from typing import Any

import pytest
from tornado.httpclient import HTTPClientError

from tests.conftest import ROOT, Clients, test_config
from tornado_ws.config import Config


async def fetch_json(client: Any, path: str) -> tuple[int, dict[str, Any], Any]:
    try:
        response = await client.fetch(path)
    except HTTPClientError as exc:
        assert exc.response is not None
        response = exc.response
    return response.code, json.loads(response.body), response.headers


async def test_healthz(http_server_client: Any) -> None:
    code, body, _ = await fetch_json(http_server_client, "/healthz")
    assert (code, body) == (200, {"status": "ok"})


async def test_unknown_route_is_a_json_404(http_server_client: Any) -> None:
    code, body, headers = await fetch_json(http_server_client, "/nope?token=abc")
    assert code == 404
    assert body["error"]["code"] == "not_found"
    assert headers["Content-Type"].startswith("application/json")


async def test_demo_token_route_absent_without_demo(http_server_client: Any) -> None:
    code, body, _ = await fetch_json(http_server_client, "/demo/token?user=alice&org=acme")
    assert code == 404 and "error" in body


async def test_page_is_served_with_a_csp_forbidding_inline_script(http_server_client: Any) -> None:
    response = await http_server_client.fetch("/")
    assert response.code == 200
    assert b"<html" in response.body.lower()
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp


class TestDemo:
    @pytest.fixture
    def config(self) -> Config:
        return test_config(jwt_secret=None, demo=True)

    async def test_demo_token_works_on_the_websocket(self, http_server_client: Any, clients: Clients) -> None:
        code, body, headers = await fetch_json(http_server_client, "/demo/token?user=bob&org=acme&name=Bob")
        assert code == 200
        assert headers["Cache-Control"] == "no-store"
        assert body["expires_in"] == 3600
        client = await clients.connect("standup", body["token"])
        welcome = await client.recv()
        assert (welcome["user_id"], welcome["org_id"]) == ("bob", "acme")
        assert welcome["participants"] == [{"user_id": "bob", "name": "Bob"}]

    async def test_org_defaults_and_user_is_required(self, http_server_client: Any) -> None:
        code, body, _ = await fetch_json(http_server_client, "/demo/token")
        assert code == 400 and "user" in body["error"]["message"]
        code, body, _ = await fetch_json(http_server_client, "/demo/token?user=" + "x" * 200)
        assert code == 400
        code, body, _ = await fetch_json(http_server_client, "/demo/token?user=carol")
        assert code == 200


def test_openapi_file_documents_the_api_routes() -> None:
    spec = json.loads((ROOT / "docs" / "openapi.json").read_text())
    assert spec["openapi"].startswith("3.")
    paths = spec["paths"]
    assert "post" in paths["/api/sessions/{session_id}/messages"]
    assert "get" in paths["/api/sessions/{session_id}/presence"]
    assert "delete" in paths["/api/sessions/{session_id}/users/{user_id}"]
    for route in ("/healthz", "/readyz", "/metrics"):
        assert route in paths


def test_openapi_file_documents_bans_and_the_session_cap() -> None:
    paths = json.loads((ROOT / "docs" / "openapi.json").read_text())["paths"]
    kick = paths["/api/sessions/{session_id}/users/{user_id}"]["delete"]
    [ban] = [p for p in kick["parameters"] if p["name"] == "ban_seconds"]
    assert (ban["in"], ban["schema"]["minimum"], ban["schema"]["maximum"]) == ("query", 0, 30 * 24 * 3600)
    assert "ban_seconds" in kick["responses"]["400"]["description"]
    publish = paths["/api/sessions/{session_id}/messages"]["post"]
    assert "too_many_sessions" in publish["responses"]["429"]["description"]
