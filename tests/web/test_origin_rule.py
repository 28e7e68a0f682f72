"""The origin rule of the WebSocket upgrade, the same on every Tornado version setup.py allows.

Tornado 6.6 no longer calls ``check_origin`` for requests that look same-origin (Host equals
the Origin's host, or ``Sec-Fetch-Site: same-origin``), so an allow-list kept there never saw
them; the handler applies the rule itself (``origin_allowed``), on both the CLI's fast path
and Tornado's own HTTP/1 path (an app serving ``hub.routes()`` on a plain HTTPServer).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from tornado.httputil import HTTPHeaders
from tornado.ioloop import IOLoop

from tests.conftest import SECRET, TIMEOUT, make_token, test_config
from tests.rawws import upgrade_request
from tornado_ws.config import Config
from tornado_ws.testing import HubServer, test_hub
from tornado_ws.web.handler import origin_allowed

LISTED = "https://app.example"
HOST = "127.0.0.1:8888"


def headers(**fields: str) -> HTTPHeaders:
    return HTTPHeaders({"Host": HOST, **{name.replace("_", "-"): value for name, value in fields.items()}})


@pytest.mark.parametrize(
    ("fields", "allowed", "expected"),
    [
        ({}, None, True),  # a service: no Origin
        ({"Sec_Fetch_Site": "same-origin"}, None, True),
        ({"Sec_Fetch_Site": "none"}, None, True),
        ({"Sec_Fetch_Site": "cross-site"}, None, False),  # a browser always sends Origin on a WebSocket
        ({"Sec_Fetch_Site": "same-site"}, frozenset({"*"}), False),
        ({"Origin": f"http://{HOST}"}, None, True),
        ({"Origin": "http://127.0.0.1:8888".upper()}, None, True),
        ({"Origin": "https://attacker.example"}, None, False),
        ({"Origin": "https://attacker.example", "Sec_Fetch_Site": "same-origin"}, None, False),
        ({"Origin": f"http://{HOST}"}, frozenset({LISTED}), False),  # the allow-list is the whole rule
        ({"Origin": "https://APP.example"}, frozenset({LISTED}), True),
        ({"Origin": "https://attacker.example", "Sec_Fetch_Site": "same-origin"}, frozenset({LISTED}), False),
        ({"Origin": "null"}, frozenset({"*"}), True),
    ],
)
def test_origin_rule(fields: dict[str, str], allowed: frozenset[str] | None, expected: bool) -> None:
    assert origin_allowed(headers(**fields), allowed) is expected


def test_tornados_trusted_origins_setting_counts_without_an_allow_list() -> None:
    trusted = ["https://partner.example"]
    assert origin_allowed(headers(Origin="https://partner.example"), None, trusted)
    assert not origin_allowed(headers(Origin="https://partner.example"), frozenset({LISTED}), trusted)


# -- through real sockets, on both paths ---------------------------------------------------------


@pytest.fixture(params=[None, (LISTED,)], ids=["same-host-rule", "allow-list"])
def allowed(request: pytest.FixtureRequest) -> tuple[str, ...] | None:
    value: tuple[str, ...] | None = request.param
    return value


@pytest.fixture
def config(allowed: tuple[str, ...] | None) -> Config:
    return test_config(allowed_origins=allowed)


@pytest.fixture(params=["fast-path", "tornado-path"])
def served(request: pytest.FixtureRequest, allowed: tuple[str, ...] | None, io_loop: IOLoop) -> Iterator[int]:
    if request.param == "fast-path":
        yield request.getfixturevalue("port")  # the CLI's server (tests/conftest.py)
        return
    server = HubServer(test_hub(jwt_secret=SECRET, allowed_origins=allowed)).start()
    yield server.port
    io_loop.run_sync(server.stop)


async def status(port: int, extra: str) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(upgrade_request(port, f"/ws/room?token={make_token('alice')}", extra=extra))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        return int(head.split(b" ", 2)[1])
    finally:
        writer.close()


async def test_the_origin_rule_holds_on_both_paths(served: int, allowed: tuple[str, ...] | None) -> None:
    same_host = f"Origin: http://127.0.0.1:{served}\r\n"
    cases = {
        "no origin (a service)": ("", 101),
        "same host": (same_host, 403 if allowed else 101),  # Tornado 6.6 let this past an allow-list
        "same host, fetch metadata": (same_host + "Sec-Fetch-Site: same-origin\r\n", 403 if allowed else 101),
        "other site": ("Origin: https://attacker.example\r\n", 403),
        "other site claiming same-origin": ("Origin: https://attacker.example\r\nSec-Fetch-Site: same-origin\r\n", 403),
        "cross-site without origin": ("Sec-Fetch-Site: cross-site\r\n", 403),
        "listed": (f"Origin: {LISTED}\r\n", 101 if allowed else 403),
    }
    got = {name: await status(served, extra) for name, (extra, _) in cases.items()}
    assert got == {name: expected for name, (_, expected) in cases.items()}


@pytest.mark.parametrize("allowed", [None], ids=["same-host-rule"])
async def test_an_upgrade_without_a_key_gets_tornados_400(served: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", served)
    try:
        request = upgrade_request(served, f"/ws/room?token={make_token('alice')}")
        writer.write(b"".join(line for line in request.splitlines(True) if not line.startswith(b"Sec-WebSocket-Key")))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        assert head.startswith(b"HTTP/1.1 400 "), head
        length = int(HTTPHeaders.parse(head.split(b"\r\n", 1)[1].decode())["Content-Length"])
        assert await asyncio.wait_for(reader.readexactly(length), TIMEOUT) == b"Missing/Invalid WebSocket headers"
    finally:
        writer.close()
