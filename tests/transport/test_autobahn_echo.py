"""tests/autobahn_echo.py, the agent ../shared/autobahn/ runs Autobahn|Testsuite against, still echoes
through the hub's code on both servers (it fails here, not in a conformance run, when names move)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator

import pytest
import websockets

from tests.conftest import _LISTENING, ROOT, TIMEOUT

AGENT = ROOT / "tests" / "autobahn_echo.py"


@pytest.fixture(params=["cli", "embedded"])
def echo_url(request: pytest.FixtureRequest) -> Iterator[str]:
    args = [sys.executable, str(AGENT), "0", *(["--embedded"] if request.param == "embedded" else [])]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT)
    assert proc.stdout is not None
    output = b""
    try:
        for line in proc.stdout:  # each line as it is logged: no polling
            output += line
            match = _LISTENING.search(line)
            if match:
                yield f"ws://127.0.0.1:{int(match.group(1))}/ws/autobahn"
                break
        else:
            raise AssertionError(f"the echo agent exited ({proc.wait()}): {output.decode(errors='replace')}")
    finally:
        proc.terminate()
        proc.wait(15)
        proc.stdout.close()


async def test_text_comes_back_as_text_and_binary_as_binary(echo_url: str) -> None:
    async with asyncio.timeout(TIMEOUT), websockets.connect(echo_url, compression=None) as ws:
        # recv() returns str for a text frame and bytes for a binary one.
        await ws.send("héllo")
        assert await ws.recv() == "héllo"
        await ws.send(b"\x00\xff" * 100)
        assert await ws.recv() == b"\x00\xff" * 100
        await ws.send(["frag", "mented"])
        assert await ws.recv() == "fragmented"
