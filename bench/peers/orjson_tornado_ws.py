"""``python -m tornado_ws`` with orjson where it can stand in without changing the protocol.

orjson cannot parse client frames for us: it keeps the last of duplicate keys (tornado-ws refuses
them as ``bad_json``) and refuses integers over 64 bits (tornado-ws accepts them). What it can do
is re-encode the already validated ``data`` of each message, the stdlib's ``encode_data``; this
peer swaps that one function (falling back to the stdlib for what orjson refuses) to measure
whether the optional speedup earns a dependency (docs/performance.md).
"""

from __future__ import annotations

import sys
from typing import Any

import orjson

from tornado_ws.cli import main
from tornado_ws.core import protocol as messages

_stdlib_encode = messages.encode_data


def encode_data(data: Any) -> str:
    try:
        return orjson.dumps(data).decode("utf-8")
    except (orjson.JSONEncodeError, UnicodeDecodeError):  # big ints, lone surrogates: the stdlib decides
        return _stdlib_encode(data)


if __name__ == "__main__":
    messages.encode_data = encode_data
    sys.exit(main())
