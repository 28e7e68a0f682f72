"""The wheel users install: built from this checkout, installed into a fresh virtualenv, run
from another directory. It must serve the demo page, its script and the browser SDK (with its
declarations in the wheel), and welcome a WebSocket."""

from __future__ import annotations

import json
import site
import subprocess
import sys
import sysconfig
import urllib.request
import venv
from pathlib import Path
from typing import Any

import websockets

from tests.conftest import ROOT, TIMEOUT, ServerProcess


def _build_and_install(tmp: Path) -> Path:
    wheels = tmp / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(wheels), "."],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=120,
    )
    (wheel,) = wheels.glob("tornado_ws-*.whl")
    env_dir = tmp / "venv"
    # The runtime dependencies come from this interpreter's site-packages, the package itself only
    # from the wheel (--no-deps). Those directories are plain entries of a .pth file, not site
    # directories: the .pth files inside them do not run, so an editable install of some checkout
    # (its import hook lives in such a file, and would win over the wheel) cannot leak in.
    venv.create(env_dir, system_site_packages=False, with_pip=False)
    python = env_dir / "bin" / "python"
    target = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps", str(wheel)],
        cwd=tmp,  # not the checkout: a PYTHONPATH=. there would show pip its egg-info as installed
        check=True,
        capture_output=True,
        timeout=120,
    )
    # After the install: pip would take the other tornado-ws it sees there for this one.
    deps = {sysconfig.get_paths()[kind] for kind in ("purelib", "platlib")} | set(site.getsitepackages())
    Path(target, "runtime-deps.pth").write_text("".join(f"{path}\n" for path in sorted(deps)))
    return python


def _get(port: int, path: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=TIMEOUT) as response:
        return response.status, response.read()


async def test_the_installed_wheel_serves_the_demo_and_welcomes(tmp_path: Path) -> None:
    python = _build_and_install(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = (
        "import tornado_ws, tornado_ws.config as c, tornado_ws.brokers.redis_scripts as r\n"
        "assert 'HSET' in r.JOIN and 'PUBLISH' in r.PUBLISH  # the Lua scripts shipped as package data\n"
        "print(tornado_ws.__file__, c.DEFAULT_STATIC_DIR, r.__file__)"
    )
    located = subprocess.run(
        [str(python), "-c", where],
        cwd=elsewhere,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert all(path.startswith(str(tmp_path / "venv")) for path in located), located
    server = ServerProcess(["--demo"], python=str(python), cwd=elsewhere)
    try:
        status, page = _get(server.port, "/")
        assert status == 200 and b"<html" in page.lower()
        status, script = _get(server.port, "/static/app.js")
        assert status == 200 and len(script) > 1000
        # The browser SDK, served where pages import it from, with its declarations in the wheel.
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/static/tornado-ws.js", timeout=TIMEOUT) as sdk:
            assert "javascript" in sdk.headers["Content-Type"]
            assert b"export function connect(" in sdk.read()
        shipped = Path(located[1])
        assert (shipped / "tornado-ws.d.ts").read_text().count("export declare function connect(") == 1
        _, body = _get(server.port, "/demo/token?user=alice&org=acme")
        token: Any = json.loads(body)["token"]
        async with websockets.connect(f"ws://127.0.0.1:{server.port}/ws/standup?token={token}") as ws:
            welcome = json.loads(await ws.recv())
        assert (welcome["type"], welcome["session_id"]) == ("welcome", "standup")
    finally:
        server.stop()
