"""The command line as users run it: `python -m tornado_ws ...` in a subprocess."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import websockets
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

import tornado_ws
from tests.conftest import ROOT, SECRET, ServerProcess, make_token
from tornado_ws.cli import config_from_args
from tornado_ws.config import DECLARED, CliOptions, Config
from tornado_ws.settings import declared, flag, shown_default


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "TORNADO_WS_JWT_SECRET"}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "tornado_ws", *args], capture_output=True, text=True, timeout=20, env=full_env, cwd=ROOT
    )


def get(port: int, path: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_version() -> None:
    result = run_cli("--version")
    assert (result.returncode, result.stdout.strip()) == (0, f"tornado-ws {tornado_ws.__version__}")


def test_a_mistyped_flag_is_one_line_with_a_hint() -> None:
    result = run_cli("--jwt-secret", "s" * 32, "--max-conections", "5")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--max-conections" in lines[0] and "--help" in lines[0], lines


def test_help_shows_every_flag_with_its_declared_help_and_default() -> None:
    result = run_cli("--help", env={"COLUMNS": "1000"})  # no wrapping in the middle of a default
    assert result.returncode == 0
    for cls in DECLARED:
        for field, spec in declared(cls):
            text = f"{spec.help} (default: {shown_default(field, spec)})"
            assert re.search(rf"^  {flag(field.name)}(?: \S+)?\s+{re.escape(text)}$", result.stdout, re.M), text


def test_an_absent_flag_is_the_declared_default() -> None:
    config, level = config_from_args(["--jwt-secret", SECRET], env={})
    assert (config, level) == (Config(jwt_secret=SECRET), CliOptions().log_level)


def test_every_setting_has_a_flag_that_sets_it(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    pem = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    (tmp_path / "key.pem").write_text(pem)
    values: dict[str, Any] = {
        "host": "0.0.0.0",
        "port": 8889,
        "jwt_secret": SECRET,
        "jwt_public_key": pem,
        "jwt_algorithms": ("HS256", "RS256"),
        "jwt_audience": "aud",
        "jwt_issuer": "iss",
        "jwt_leeway": 1.5,
        "max_message_size": 1000,
        "ping_interval": 4.0,
        "ping_timeout": 1.0,
        "history_size": 5,
        "history_ttl": 60.0,
        "idempotency_window": 30.0,
        "shutdown_timeout": 1.0,
        "static_dir": str(tmp_path),
        "rate_limit": 5.0,
        "rate_burst": 7,
        "max_connections_per_user": 2,
        "max_sessions_per_connection": 12,
        "signal_rate": 30.0,
        "signal_burst": 9,
        "max_presence_state_size": 512,
        "presence_roster_limit": 50,
        "max_outbound_buffer": 4096,
        "max_connections": 10,
        "max_connections_per_org": 3,
        "max_session_id_length": 64,
        "max_sessions_per_org": 9,
        "allowed_origins": ("https://app.example.com", "*"),
        "log_format": "json",
        "broker": "redis://127.0.0.1:1/0",
        "workers": 2,
        "metrics_token": "m" * 16,
    }
    # --demo refuses to run beside a key: test_demo_mode_serves_tokens_and_health runs it.
    assert {f.name for cls in DECLARED for f, _ in declared(cls)} - set(values) == {"demo", "log_level"}
    argv = ["--log-level", "DEBUG"]
    for name, value in values.items():
        text = str(tmp_path / "key.pem") if name == "jwt_public_key" else value
        argv += [flag(name), ",".join(text) if isinstance(text, tuple) else str(text)]
    # A flag beats the environment variable its setting also reads.
    env = {"TORNADO_WS_JWT_SECRET": "e" * 64, "TORNADO_WS_METRICS_TOKEN": "e" * 64}
    assert config_from_args(argv, env=env) == (Config(**values), "DEBUG")


def test_no_key_exits_2_with_one_clear_line() -> None:
    result = run_cli()
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "--jwt-secret" in lines[0] and "TORNADO_WS_JWT_SECRET" in lines[0]


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["--demo", "--jwt-secret", SECRET], {}),
        (["--demo"], {"TORNADO_WS_JWT_SECRET": SECRET}),
        (["--demo", "--jwt-public-key", "PEM"], {}),
    ],
    ids=["secret-flag", "secret-env", "public-key"],
)
def test_demo_beside_a_configured_key_refuses_to_start(tmp_path: Path, args: list[str], env: dict[str, str]) -> None:
    """Demo tokens are minted for anyone: beside a production key they would open every tenant."""
    if "PEM" in args:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
        path = tmp_path / "key.pem"
        path.write_bytes(key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        args = [str(path) if a == "PEM" else a for a in args]
    result = run_cli(*args, env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--demo" in lines[0] and "cannot run beside a configured key" in lines[0]
    assert SECRET not in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["--jwt-secret", "s" * 32, "--port", "http"],
        ["--jwt-secret", "s" * 32, "--port", "99999"],
        ["--jwt-secret", "s" * 32, "--jwt-algorithms", "none"],
        ["--jwt-secret", "s" * 32, "--jwt-leeway", "-3"],
        ["--jwt-secret", "s" * 32, "--max-message-size", "1"],
        ["--jwt-public-key", "/does/not/exist"],
        ["--jwt-secret", "s" * 32, "--no-such-flag"],
        ["--jwt-secret", "s" * 32, "--workers", "2"],  # the memory broker cannot share sessions
        ["--jwt-secret", "s" * 32, "--broker", "http://127.0.0.1:6379"],
        ["--jwt-secret", "s" * 32, "--workers", "0"],
        ["--jwt-secret", "s" * 32, "--metrics-token", "short"],
    ],
)
def test_invalid_flags_exit_2_without_traceback(args: list[str]) -> None:
    result = run_cli(*args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "error" in result.stderr


def test_port_in_use_exits_1_clearly(cli_server: ServerProcess) -> None:
    result = run_cli("--jwt-secret", SECRET, "--port", str(cli_server.port))
    assert result.returncode == 1
    assert "cannot listen" in result.stderr and "Traceback" not in result.stderr


def test_env_secret_and_flags_parse() -> None:
    config, level = config_from_args(
        ["--jwt-algorithms", "HS256, HS512", "--jwt-audience", "a", "--jwt-issuer", "i", "--log-level", "DEBUG"],
        env={"TORNADO_WS_JWT_SECRET": "from-env-" + "x" * 64},
    )
    assert config.jwt_secret == "from-env-" + "x" * 64
    assert config.jwt_algorithms == ("HS256", "HS512")
    assert (config.jwt_audience, config.jwt_issuer, level) == ("a", "i", "DEBUG")


def test_public_key_file_implies_its_algorithm(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path / "key.pem"
    path.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    config, _ = config_from_args(["--jwt-public-key", str(path)], env={})
    assert config.jwt_algorithms == ("RS256",)


@pytest.mark.server_args("--demo")
def test_demo_mode_serves_tokens_and_health(cli_server: ServerProcess) -> None:
    assert get(cli_server.port, "/healthz") == (200, {"status": "ok"})
    code, body = get(cli_server.port, "/demo/token?user=u&org=o&name=N")
    assert code == 200 and body["token"].count(".") == 2


def test_demo_route_is_404_without_demo(cli_server: ServerProcess) -> None:
    code, body = get(cli_server.port, "/demo/token?user=u&org=o")
    assert code == 404 and body["error"]["code"] == "not_found"


async def _session_with_refusal(port: int, token: str) -> None:
    async with websockets.connect(f"ws://127.0.0.1:{port}/ws/room?token={token}") as ws:
        assert json.loads(await ws.recv())["type"] == "welcome"
        async with websockets.connect(
            f"ws://127.0.0.1:{port}/ws/room", additional_headers={"Authorization": f"Bearer {token}"}
        ) as tab:
            assert json.loads(await tab.recv())["type"] == "welcome"
        await ws.send('{"type":"message","data":1}')
        assert json.loads(await ws.recv())["seq"] == 1
    async with websockets.connect(f"ws://127.0.0.1:{port}/ws/room?token={token}x") as bad:
        with pytest.raises(websockets.ConnectionClosed):
            await bad.recv()


def test_tokens_never_reach_the_logs(tmp_path: Path) -> None:
    server = ServerProcess(["--jwt-secret", SECRET, "--log-level", "DEBUG"])
    token = make_token("alice", "acme")
    try:
        asyncio.run(_session_with_refusal(server.port, token))
        get(server.port, f"/nope?token={token}")
    finally:
        assert server.stop() == 0
    output = server.output()
    server.log_path.unlink()
    assert "connect session=room org=acme user=alice" in output
    assert "disconnect session=room org=acme user=alice" in output
    assert "token=[redacted]" in output
    for secret in (token, token.split(".")[1], token.split(".")[2], SECRET):
        assert secret not in output


def test_json_log_format_is_one_object_per_line() -> None:
    server = ServerProcess(["--jwt-secret", SECRET, "--log-format", "json"])
    token = make_token("alice", "acme")
    try:
        asyncio.run(_session_with_refusal(server.port, token))
    finally:
        assert server.stop() == 0
    lines = [json.loads(line) for line in server.output().splitlines() if line.strip()]
    server.log_path.unlink()
    assert {"ts", "level", "logger", "message"} <= set(lines[0])
    assert any(line["message"].startswith("connect session=room org=acme user=alice") for line in lines)
    assert all(token not in json.dumps(line) for line in lines)


async def _shutdown_closes_with_1001(server: ServerProcess) -> int | None:
    async with websockets.connect(f"ws://127.0.0.1:{server.port}/ws/room?token={make_token()}") as ws:
        assert json.loads(await ws.recv())["type"] == "welcome"
        server.proc.send_signal(signal.SIGTERM)
        with pytest.raises(websockets.ConnectionClosed) as info:
            await asyncio.wait_for(ws.recv(), 10)
        return info.value.rcvd.code if info.value.rcvd else None


def test_sigterm_closes_clients_with_1001_and_exits_0(cli_server: ServerProcess) -> None:
    assert asyncio.run(_shutdown_closes_with_1001(cli_server)) == 1001
    assert cli_server.proc.wait(15) == 0
    assert "shutdown complete" in cli_server.output()


def test_sigint_exits_0(cli_server: ServerProcess) -> None:
    cli_server.proc.send_signal(signal.SIGINT)
    assert cli_server.proc.wait(15) == 0
