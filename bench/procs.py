"""Processes: servers pinned to one core, Redis when a peer needs it, the Node driver.

Every process is started with a timeout and stopped (and waited for) on the
way out, so a run leaves nothing behind and pytest sees no ResourceWarning.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import resource
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from . import ROOT
from .peers import NODE_WS_DIR, Launch, Peer

DRIVER = ROOT / "bench" / "driver" / "driver.js"
SERVER_CORE, DRIVER_CORE = 0, 1


def raise_nofile(want: int = 65536) -> int:
    """Raise this process's open-file limit (children inherit it); return the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        # Raising the hard limit works as root; otherwise settle for the hard limit.
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), max(hard, want)))
        return max(soft, want)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def can_pin() -> bool:
    return shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2


def pinned(argv: list[str], core: int | None) -> list[str]:
    # taskset execs the command, so the pid we get is the server's own.
    return argv if core is None else ["taskset", "-c", str(core), *argv]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Proc:
    """A child process whose output goes to a temp file (read back on failure)."""

    def __init__(self, argv: list[str], name: str) -> None:
        self.name = name
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the process
        self.popen = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self, limit: int = 2000) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-limit:]

    def wait_listening(self, port: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.popen.returncode}: {self.output()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not listen on {port} within {timeout} s: {self.output()}")

    def stop(self, timeout: float = 10.0) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        self.log.close()


@dataclasses.dataclass
class Deployment:
    targets: list[dict[str, Any]]  # [{"host", "port"}], one per node
    pids: list[int]  # every server-side process, Redis included
    procs: list[Proc]


@contextlib.contextmanager
def deploy(peer: Peer, jwt_secret: str, core: int | None, extra: tuple[str, ...] = ()) -> Iterator[Deployment]:
    """Start the peer's Redis instances and nodes (``extra``: the run's server flags); stop them all on exit."""
    procs: list[Proc] = []
    try:
        redis_urls = []
        for i in range(peer.redis):
            port = free_port()
            argv = ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"]
            procs.append(Proc(pinned(argv, core), f"redis-{i}"))
            procs[-1].wait_listening(port)
            redis_urls.append(f"redis://127.0.0.1:{port}/0")
        targets = []
        for node in range(peer.nodes):
            port = free_port()
            argv = peer.argv(Launch(port, node, tuple(redis_urls), jwt_secret, extra))
            procs.append(Proc(pinned(argv, core), f"{peer.key}-{node}"))
            procs[-1].wait_listening(port)
            targets.append({"host": "127.0.0.1", "port": port})
        yield Deployment(targets, [p.pid for p in procs], procs)
    finally:
        for proc in reversed(procs):
            proc.stop()


def ensure_node_ws(timeout: float = 180.0) -> None:
    """``npm install`` the Node ws peer once (into its git-ignored node_modules)."""
    if (NODE_WS_DIR / "node_modules" / "ws" / "package.json").exists():
        return
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm not found: the Node ws peer needs it (apt-get install npm)")
    subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=NODE_WS_DIR,
        check=True,
        timeout=timeout,
        stdout=subprocess.DEVNULL,
    )


def run_driver(
    config: dict[str, Any], core: int | None, timeout: float, on_phase: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Run one scenario in the Node driver; return its JSON result."""
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node not found: the load driver is a Node script")
    config = {**config, "timeout_s": timeout}
    argv = pinned([node, str(DRIVER), json.dumps(config)], core)
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        stderr_tail: list[str] = []
        reader = threading.Thread(target=_read_stderr, args=(proc.stderr, stderr_tail, on_phase), daemon=True)
        reader.start()
        # The driver stops itself after `timeout`; this is the backstop if it cannot.
        killer = threading.Timer(timeout + 15, proc.kill)
        killer.start()
        try:
            stdout = proc.stdout.read()
            proc.wait()
        finally:
            killer.cancel()
        reader.join(5)
    if proc.returncode != 0 or not stdout.strip():
        raise RuntimeError(f"driver exited with {proc.returncode}: {''.join(stderr_tail)[-1500:]}")
    result: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    return result


def _read_stderr(stream: Any, tail: list[str], on_phase: Callable[[str], None] | None) -> None:
    for line in stream:
        if line.startswith("PHASE "):
            if on_phase is not None:
                on_phase(line[6:].strip())
        else:
            tail.append(line)
            del tail[:-30]


def machine() -> dict[str, str]:
    """Facts for the report: CPU model, cores, memory, kernel, versions."""
    info: dict[str, str] = {}
    cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
    models = [line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")]
    info["cpu"] = models[0] if models else "unknown"
    info["cores"] = str(os.cpu_count())
    meminfo = Path("/proc/meminfo").read_text().split()
    info["memory"] = f"{int(meminfo[1]) / 1024 / 1024:.1f} GiB"
    info["kernel"] = os.uname().release
    return info


def version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30, cwd=ROOT)
    except (OSError, subprocess.TimeoutExpired):
        return "unavailable"
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr).strip() else "unknown"
