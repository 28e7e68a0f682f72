"""G. Token leakage: no token in logs, frames, close reasons, the CLI's output or metric labels."""

from __future__ import annotations

import asyncio
import json
import re
import struct
from typing import Any

import pytest
import websockets

from tests.canary import Canary
from tests.conftest import SECRET, Clients, ServerProcess, call, http_get, make_token
from tests.rawws import http_answer, raw_upgrade, ws_frame
from tornado_ws.errors import CloseCode


def token_parts(*tokens: str) -> list[str]:
    parts = [SECRET]
    for token in tokens:
        parts.append(token)
        parts.extend(p for p in token.split(".")[1:] if len(p) > 8)  # payload and signature
    return parts


async def test_tokens_never_reach_logs_frames_close_reasons_or_metrics(
    clients: Clients, http_server_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """In-process, without the CLI's redacting log filter: what is redacted at the source."""
    canary = await Canary.open(clients)
    good = make_token("alice")
    expired = make_token("alice", ttl=-5)
    other = make_token("alice", "globex")
    async with canary.throughout():
        refused = await clients.connect("standup", expired)
        _, reason1 = await refused.closed_with()
        header_refused = await clients.connect("standup", headers={"Authorization": f"Bearer {expired}"})
        _, reason2 = await header_refused.closed_with()
        alice = await clients.connect("standup", good, query={"since": 0, "epoch": "x"})
        assert (await alice.recv())["type"] == "welcome"
        await alice.send({"type": "refresh", "token": expired})
        error1 = await alice.recv()
        await alice.send({"type": "refresh", "token": other})
        error2 = await alice.recv()
        _, reason3 = await alice.closed_with()
        _, api = await call(http_server_client, "POST", "/api/sessions/standup/messages", expired, {"data": 1})
        metrics = await http_server_client.fetch(f"/metrics?token={good}")
    visible = "\n".join(
        [reason1, reason2, reason3, json.dumps([error1, error2, api]), metrics.body.decode()]
        + [record.getMessage() for record in caplog.records]
    )
    assert "[redacted]" in visible  # the access log line of each ?token= request
    for secret in token_parts(good, expired, other):
        assert secret not in visible
    labels = re.findall(r'(\w+)="([^"]*)"', metrics.body.decode())
    assert labels and all(re.fullmatch(r"[A-Za-z0-9_.+-]{1,40}", value) for _, value in labels), labels


async def test_cli_output_never_contains_a_token_whatever_the_attacker_puts_where(io_loop: Any) -> None:
    """The CLI as deployed (DEBUG logging): tokens in the query, the header, the path, the Origin,
    refresh frames, HTTP versions and 70 KB request lines; and a log-injection attempt."""
    server = ServerProcess(["--jwt-secret", SECRET, "--log-level", "DEBUG"])
    clients = Clients(server.port)
    good, expired = make_token("alice"), make_token("alice", ttl=-5)
    try:
        canary = await Canary.open(clients)
        async with canary.throughout():
            for attempt in (
                clients.connect("standup", expired),
                clients.connect("standup", headers={"Authorization": f"Bearer {expired}"}),
                clients.connect(good, good),  # the token as the session id
                clients.connect("room%0D%0AERROR%20injected", good),  # CRLF in the path
            ):
                await (await attempt).closed_with()
            with pytest.raises(websockets.InvalidStatus):
                await clients.connect("standup", good, origin=f"https://{good}.example")
            alice = await clients.connect("standup", good)
            assert (await alice.recv())["type"] == "welcome"
            await alice.send({"type": "refresh", "token": expired})
            assert good not in json.dumps(await alice.recv())
            for junk in (
                f"GET /ws/standup?token={good} HTTP/{good}\r\n\r\n".encode(),
                b"GET /?token=" + good.encode() * 600 + b" HTTP/1.1\r\n\r\n",
                f"GET /nope?token={good}&access_token={good} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode(),
            ):
                reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
                try:
                    writer.write(junk)
                    await http_answer(reader, timeout=5)
                finally:
                    writer.close()
            code, _ = await asyncio.to_thread(
                http_get, server.port, f"/metrics?token={good}", {"Authorization": f"Bearer {good}"}
            )
            assert code == 200
        await clients.close_all()
    finally:
        assert server.stop() == 0
    output = server.output()
    server.log_path.unlink(missing_ok=True)
    assert "refused session=" in output and "[redacted]" in output
    for secret in token_parts(good, expired):
        assert secret not in output and secret[:24] not in output
    assert not any(line.startswith("ERROR injected") for line in output.splitlines())
    assert "Traceback" not in output


async def test_clients_cannot_choose_metric_label_values(clients: Clients, port: int, app: Any) -> None:
    canary = await Canary.open(clients)
    watcher, _ = await clients.join("standup", "watcher")
    async with canary.throughout():
        for code in range(3000, 3040):
            client, _ = await clients.join("standup", f"labeller-{code}")
            await client.ws.close(code=code)
        _, writer, _ = await raw_upgrade(port, "standup", make_token("raw-labeller"))
        writer.write(ws_frame(0x8, struct.pack("!H", 64999)))  # not even a legal close code
        # Its user_left goes out after its disconnect was counted.
        while (await watcher.recv_type("user_left"))["user_id"] != "raw-labeller":
            pass
        writer.close()
    text = app.settings["state"].metrics.render().decode()
    codes = set(re.findall(r'tornado_ws_disconnects_total\{code="([^"]*)"\}', text))
    fixed = {str(int(c)) for c in CloseCode} | {"1005", "1006", "other"}
    assert codes <= fixed, f"client-chosen label values: {sorted(codes - fixed)[:5]} ... ({len(codes - fixed)})"
