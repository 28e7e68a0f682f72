"""py-spy on tornado-ws while a scenario loads it: where the time goes.

py-spy samples the server from outside (``--nonblocking``: the server is never
paused); ``--format raw`` gives collapsed stacks, aggregated here into self
and inclusive time per function.
"""

from __future__ import annotations

import collections
import dataclasses
import shutil
import subprocess
import sys
from pathlib import Path

from . import ROOT

RATE = 200  # samples/s: low enough to stay out of the way of the driver's core


# Frames every stack starts with (entry point, event loop): not worth a row.
_ENTRY = ("<frozen runpy>", "asyncio/", "tornado_ws/__main__.py", "tornado_ws/cli.py", "uvloop_tornado_ws.py")


@dataclasses.dataclass
class Profile:
    title: str
    samples: int
    expected: int  # RATE x duration: samples / expected ≈ the share of time the server was busy
    self_top: list[tuple[str, float]]  # (function, % of samples) with the function on top of the stack
    inclusive_top: list[tuple[str, float]]  # (function, % of samples) with the function anywhere on it
    raw_path: Path


def py_spy() -> str | None:
    local = Path(sys.executable).with_name("py-spy")
    return str(local) if local.exists() else shutil.which("py-spy")


class Profiler:
    """Starts py-spy on the server when the driver announces ``phase``; collects it after."""

    def __init__(self, title: str, out: Path, phase: str, seconds: float) -> None:
        self.title = title
        self.out = out
        self.phase = phase
        self.seconds = max(1, round(seconds))
        self.proc: subprocess.Popen[bytes] | None = None
        self.error: str | None = None

    def on_phase(self, phase: str, pids: list[int]) -> None:
        exe = py_spy()
        if phase != self.phase or self.proc is not None:
            return
        if exe is None:
            self.error = "py-spy not installed (pip install py-spy)"
            return
        argv = [exe, "record", "--pid", str(pids[-1]), "--duration", str(self.seconds), "--rate", str(RATE)]
        argv += ["--format", "raw", "--nolineno", "--nonblocking", "--output", str(self.out)]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def finish(self) -> Profile | None:
        if self.proc is None:
            self.error = self.error or f"the driver never reached phase {self.phase!r}"
            return None
        try:
            _, err = self.proc.communicate(timeout=self.seconds + 30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        if self.proc.returncode != 0 or not self.out.exists():
            self.error = f"py-spy failed: {err.decode(errors='replace')[-300:]}"
            return None
        return summarize(self.title, self.out, self.seconds * RATE)


def summarize(title: str, raw: Path, expected: int, top: int = 12) -> Profile:
    own: collections.Counter[str] = collections.Counter()
    anywhere: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_short(f) for f in stack.split(";")]
        total += n
        own[frames[-1]] += n
        for frame in set(frames):
            if not any(marker in frame for marker in _ENTRY):
                anywhere[frame] += n

    def pct(counter: collections.Counter[str]) -> list[tuple[str, float]]:
        return [(name, 100 * n / max(1, total)) for name, n in counter.most_common(top)]

    return Profile(title, total, expected, pct(own), pct(anywhere), raw)


def _short(frame: str) -> str:
    # "write (tornado/iostream.py)" with site-packages and stdlib prefixes cut.
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    for marker in ("site-packages/", "/lib/python3.11/", "/lib/python3.12/", "/lib/python3.13/"):
        if marker in where:
            where = where.split(marker, 1)[1]
    where = where.split(f"{ROOT}/", 1)[-1]
    return f"{name} ({where})" if where else name
