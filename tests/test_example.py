"""examples/embedded_app.py end to end: its page, its REST handler publishing, its authorization."""

from __future__ import annotations

import importlib.util
import json
from types import ModuleType
from typing import Any

import pytest
import tornado.web

from tests.conftest import ROOT
from tornado_ws.client import SessionClosed, connect
from tornado_ws.testing import DEFAULT_SECRET, TEST_BACKOFF, make_token


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("embedded_app", ROOT / "examples" / "embedded_app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def app() -> tornado.web.Application:
    application: tornado.web.Application = load_example().make_app(DEFAULT_SECRET)
    return application


async def test_members_get_invoice_events_published_by_the_apps_rest_handler(
    http_server_client: Any, port: int, app: Any
) -> None:
    page = await http_server_client.fetch("/")
    assert b"<h1>Invoices</h1>" in page.body
    url = f"ws://127.0.0.1:{port}/rt"
    alice = await connect(url, make_token(DEFAULT_SECRET, "alice", "acme"), "project-42", backoff=TEST_BACKOFF)
    try:
        with pytest.raises(SessionClosed) as info:
            await connect(url, make_token(DEFAULT_SECRET, "mallory", "acme"), "project-42", backoff=TEST_BACKOFF)
        assert info.value.code == 4004
        response = await http_server_client.fetch(
            "/orgs/acme/projects/project-42/invoices/INV-7/paid", method="POST", body=b""
        )
        assert json.loads(response.body) == {"seq": 1}
        frame = await alice.recv(timeout=5)
        assert (frame["type"], frame["user_id"], frame["seq"]) == ("message", "billing", 1)
        assert frame["data"] == {"kind": "invoice-paid", "invoice": "INV-7"}
    finally:
        await alice.close()
        app.settings["hub"].stop()
