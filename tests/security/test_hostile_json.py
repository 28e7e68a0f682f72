"""C. Hostile JSON and frame contents: the connection stays; the sender alone gets an error."""

from __future__ import annotations

import json

import pytest

from tests.canary import Canary, attacker_and_witness
from tests.conftest import QUIET_PINGS, Clients, test_config
from tornado_ws.config import Config

DEEP = 100_000
HOSTILE_FRAMES: dict[str, tuple[str | bytes, str]] = {
    # name: (raw frame, expected error code or "delivered")
    "array-nested-100k-deep": ('{"type":"message","data":' + "[" * DEEP + "]" * DEEP + "}", "bad_json"),
    "object-nested-100k-deep": ('{"type":"message","data":' + '{"a":' * DEEP + "1" + "}" * DEEP + "}", "bad_json"),
    "unclosed-100k-deep": ("[" * DEEP, "bad_json"),
    "integer-5000-digits": ('{"type":"message","data":' + "9" * 5000 + "}", "bad_json"),
    "integer-4300-digits-is-fine": ('{"type":"message","data":' + "9" * 4300 + "}", "delivered"),
    "float-overflow-1e999": ('{"type":"message","data":1e999}', "bad_json"),
    "negative-float-overflow": ('{"type":"message","data":[-1e999]}', "bad_json"),
    "NaN": ('{"type":"message","data":NaN}', "bad_json"),
    "Infinity": ('{"type":"message","data":{"x":Infinity}}', "bad_json"),
    "-Infinity": ('{"type":"message","data":-Infinity}', "bad_json"),
    "NaN-outside-data": ('{"type":"ping","x":NaN}', "bad_json"),
    "lone-high-surrogate": ('{"type":"message","data":"\\ud800"}', "bad_json"),
    "lone-low-surrogate": ('{"type":"message","data":"a\\udfffb"}', "bad_json"),
    "lone-surrogate-in-key": ('{"type":"message","data":{"\\udbff":1}}', "bad_json"),
    "surrogate-pair-is-fine": ('{"type":"message","data":"\\ud83d\\ude00"}', "delivered"),
    "duplicate-keys": ('{"type":"message","data":1,"data":2}', "bad_json"),
    "duplicate-keys-nested": ('{"type":"message","data":{"a":1,"b":{"c":1,"c":1}}}', "bad_json"),
    "duplicate-type-smuggling": ('{"type":"ping","type":"message","data":1}', "bad_json"),
    "raw-NUL-in-string": ('{"type":"message","data":"a\x00b"}', "bad_json"),
    "raw-NUL-between-tokens": ('{"type":"message",\x00"data":1}', "bad_json"),
    "escaped-NUL-is-data": ('{"type":"message","data":"a\\u0000b"}', "delivered"),
    "escaped-NUL-key-is-data": ('{"type":"message","data":{"\\u0000":0}}', "delivered"),
    "BOM-prefix": ('\ufeff{"type":"ping"}', "bad_json"),
    "trailing-garbage": ('{"type":"ping"} x', "bad_json"),
    "two-documents": ('{"type":"ping"}{"type":"ping"}', "bad_json"),
    "empty-text": ("", "bad_json"),
    "whitespace-only": (" \t\r\n", "bad_json"),
    "javascript-comment": ('{"type":"ping"/*x*/}', "bad_json"),
    "single-quotes": ("{'type':'ping'}", "bad_json"),
    "top-level-array": ('[{"type":"message","data":1}]', "bad_frame"),
    "type-not-a-string": ('{"type":["message"],"data":1}', "bad_frame"),
    "message-without-data": ('{"type":"message"}', "bad_frame"),
    "unknown-type": ('{"type":"admin","data":1}', "unknown_type"),
    "prototype-pollution-is-opaque-data": ('{"type":"message","data":{"__proto__":{"admin":true}}}', "delivered"),
    "spoofed-identity-fields-ignored": (
        '{"type":"message","user_id":"ceo","name":"CEO","org":"globex","session_id":"other","seq":1,"data":1}',
        "delivered",
    ),
    "binary-frame": (b"\x00\x01\x02binary", "binary_not_supported"),
    "binary-json": (b'{"type":"message","data":1}', "binary_not_supported"),
}


class TestHostileJson:
    @pytest.fixture
    def config(self) -> Config:
        # Big enough for the 100k-deep documents to reach the parser (the default 64 KiB would close 1009).
        return test_config(max_message_size=1 << 20, **QUIET_PINGS)

    @pytest.mark.parametrize("attack", sorted(HOSTILE_FRAMES))
    async def test_hostile_frame_gets_its_answer_and_the_connection_stays(self, clients: Clients, attack: str) -> None:
        raw, expected = HOSTILE_FRAMES[attack]
        canary = await Canary.open(clients)
        mallory, bob = await attacker_and_witness(clients)
        async with canary.throughout():
            await mallory.send(raw)
            answer = await mallory.recv()
        if expected == "delivered":
            assert answer["type"] == "message", answer
            assert (answer["user_id"], answer["session_id"], answer["seq"]) == ("mallory", "standup", 1)
            assert "name" not in answer
            assert (await bob.recv()) == answer
            assert answer["data"] == json.loads(raw)["data"]
        else:
            assert (answer["type"], answer["code"]) == ("error", expected), answer
            message = answer["message"]
            assert isinstance(message, str) and 0 < len(message) <= 200  # fixed text, never the input
            await bob.assert_silent()
        await mallory.publish("still here")  # the connection stays, the stream continues
        seq = 2 if expected == "delivered" else 1
        assert (await mallory.recv())["seq"] == seq
        assert (await bob.recv())["data"] == "still here"
