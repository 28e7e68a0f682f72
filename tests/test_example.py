"""examples/embedded_app.py end to end: its page, its REST handler publishing, its authorization."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
import tornado.web

from tests.conftest import ROOT
from tornado_ws.client import SessionClient, SessionClosed, connect
from tornado_ws.testing import DEFAULT_SECRET, TEST_BACKOFF, make_token

pytestmark = pytest.mark.usefixtures("no_errors_logged")


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("embedded_app", ROOT / "examples" / "embedded_app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def app() -> Iterator[tornado.web.Application]:
    application: tornado.web.Application = load_example().make_app(DEFAULT_SECRET)
    yield application
    application.settings["hub"].stop()


async def paid(client: Any, path: str, token: str | None = None) -> tuple[int, Any]:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    response = await client.fetch(path, method="POST", body=b"", headers=headers, raise_error=False)
    assert response.headers["Content-Type"].startswith("application/json")
    return response.code, json.loads(response.body)


async def member(port: int, user: str, org: str, project: str) -> SessionClient:
    return await connect(
        f"ws://127.0.0.1:{port}/rt", make_token(DEFAULT_SECRET, user, org), project, backoff=TEST_BACKOFF
    )


async def test_members_get_invoice_events_published_by_the_apps_rest_handler(
    http_server_client: Any, port: int
) -> None:
    page = await http_server_client.fetch("/")
    assert b"<h1>Invoices</h1>" in page.body
    alice = await member(port, "alice", "acme", "project-42")
    try:
        with pytest.raises(SessionClosed) as info:
            await member(port, "mallory", "acme", "project-42")
        assert info.value.code == 4004
        billing = make_token(DEFAULT_SECRET, "billing", "acme", name="Billing", roles=["service"])
        assert await paid(http_server_client, "/projects/project-42/invoices/INV-7/paid", billing) == (200, {"seq": 1})
        frame = await alice.recv(timeout=5)
        assert (frame["type"], frame["user_id"], frame["name"], frame["seq"]) == ("message", "billing", "Billing", 1)
        assert frame["data"] == {"kind": "invoice-paid", "invoice": "INV-7"}
    finally:
        await alice.close()


REFUSALS = {
    "no token": (None, "/projects/project-42/invoices/INV-1/paid", 401, "unauthorized"),
    "a forged token": (
        make_token("another-secret-" + "0" * 50, "billing", "acme", roles=["service"]),
        "/projects/project-42/invoices/INV-1/paid",
        401,
        "unauthorized",
    ),
    "a member without the role": (
        make_token(DEFAULT_SECRET, "alice", "acme"),
        "/projects/project-42/invoices/INV-1/paid",
        403,
        "forbidden",
    ),
    "a bad session id": (
        make_token(DEFAULT_SECRET, "billing", "acme", roles=["service"]),
        "/projects/" + "p" * 129 + "/invoices/INV-1/paid",
        400,
        "invalid_session_id",
    ),
    "a space in the session id": (
        make_token(DEFAULT_SECRET, "billing", "acme", roles=["service"]),
        "/projects/project%2042/invoices/INV-1/paid",
        400,
        "invalid_session_id",
    ),
    "a bad invoice id": (
        make_token(DEFAULT_SECRET, "billing", "acme", roles=["service"]),
        "/projects/project-42/invoices/%3Cscript%3E/paid",
        400,
        "invalid_invoice_id",
    ),
    "another org's project": (
        make_token(DEFAULT_SECRET, "billing", "globex", roles=["service"]),
        "/projects/project-7/invoices/INV-1/paid",
        404,
        "not_found",
    ),
}


async def test_the_invoice_route_refuses_with_json_errors_and_publishes_nothing(
    http_server_client: Any, port: int
) -> None:
    alice = await member(port, "alice", "acme", "project-42")
    try:
        for name, (token, path, status, code) in REFUSALS.items():
            got_status, body = await paid(http_server_client, path, token)
            assert (got_status, body["error"]["code"]) == (status, code), name
            assert isinstance(body["error"]["message"], str) and "Traceback" not in body["error"]["message"]
        # Nothing reached the session: the first event alice gets is the next legitimate one, seq 1.
        billing = make_token(DEFAULT_SECRET, "billing", "acme", roles=["service"])
        assert await paid(http_server_client, "/projects/project-42/invoices/INV-2/paid", billing) == (200, {"seq": 1})
        frame = await alice.recv(timeout=5)
        assert (frame["type"], frame["seq"], frame["data"]["invoice"]) == ("message", 1, "INV-2")
    finally:
        await alice.close()


async def test_an_other_orgs_token_publishes_into_its_own_session_never_into_acmes(
    http_server_client: Any, port: int
) -> None:
    alice = await member(port, "alice", "acme", "project-42")
    gina = await member(port, "gina", "globex", "project-42")  # the same project id in globex
    try:
        globex = make_token(DEFAULT_SECRET, "billing", "globex", roles=["service"])
        assert await paid(http_server_client, "/projects/project-42/invoices/G-1/paid", globex) == (200, {"seq": 1})
        frame = await gina.recv(timeout=5)
        assert (frame["type"], frame["seq"], frame["data"]["invoice"]) == ("message", 1, "G-1")
        # acme's session never saw it: its first message is acme's own, also seq 1.
        acme = make_token(DEFAULT_SECRET, "billing", "acme", roles=["service"])
        assert await paid(http_server_client, "/projects/project-42/invoices/A-1/paid", acme) == (200, {"seq": 1})
        frame = await alice.recv(timeout=5)
        assert (frame["type"], frame["seq"], frame["data"]["invoice"]) == ("message", 1, "A-1")
    finally:
        await alice.close()
        await gina.close()
