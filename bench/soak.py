"""Bounded soak: clients churn through sessions against a real server for a fixed time, then everything
is audited.

    python -m bench.soak --duration 60 --clients 40 [--seed 1] [--json soak.json]

N clients (pairs of them share a user: two tabs) in two organizations join random sessions, publish,
leave cleanly, drop their TCP connection abruptly and resume with ``since``/``epoch``, and come back
to sessions they left, until the time is up. The server is ``python -m tornado_ws`` with its
defaults, in a subprocess. At the end:

- every connection's message stream is gapless and duplicate-free from where the server said it
  starts (``welcome.seq`` or the resume point), and every resume the history could serve was served;
- all observers agree on what each ``(org, session, seq)`` holds, nothing crossed an org or session,
  no publish was sequenced twice, every publish of a clean visit was acknowledged, and the sum of the
  sessions' last seqs equals the server's ``messages_in_total`` (audited per session by a final client
  that resumes the last ``--history-size`` messages);
- the server logged no error, closes every connection (``connections_open`` 0), and its file
  descriptors and memory are back near where they were after the warm-up.

Exit status 0 when every check passed; the figures go to stdout (and ``--json``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import itertools
import json
import os
import random
import re
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import jwt
import websockets

ROOT = Path(__file__).resolve().parent.parent
ORGS = ("acme", "globex")
HISTORY = 100  # the server's default --history-size
MiB = 1024 * 1024


# -- the server under test -----------------------------------------------------------------------------


class Server:
    """``python -m tornado_ws`` on a free port, its output in a temporary file."""

    def __init__(self, secret: str, duration: float, extra: list[str] | None = None) -> None:
        self._log_file = tempfile.NamedTemporaryFile(prefix="tornado-ws-soak-", suffix=".log", delete=False)  # noqa: SIM115
        self.log_path = Path(self._log_file.name)
        ttl = str(max(300.0, 2 * duration + 60))  # no stream may expire mid-run: epochs stay fixed
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tornado_ws", "--port", "0", "--history-ttl", ttl, *(extra or [])],
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, "TORNADO_WS_JWT_SECRET": secret},
            cwd=ROOT,
        )
        self.port = self._wait_for_port()

    def _wait_for_port(self) -> int:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            match = re.search(rb"listening on http://[^:]+:(\d+)/", self.log_path.read_bytes())
            if match:
                return int(match.group(1))
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.output()[-2000:]}")
            time.sleep(0.05)
        raise RuntimeError("server did not start")

    def output(self) -> str:
        if not self._log_file.closed:
            self._log_file.flush()
        return self.log_path.read_text(errors="replace")

    def rss(self) -> int:
        with open(f"/proc/{self.proc.pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def metrics(self) -> dict[str, float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as response:
            text = response.read().decode()
        values = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                values[name] = float(value)
        return values

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            code = self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(5)
        self._log_file.close()
        return code

    def cleanup(self) -> None:
        self.log_path.unlink(missing_ok=True)


# -- what the clients saw -------------------------------------------------------------------------------


@dataclasses.dataclass
class Visit:
    """One connection: where it asked to start, what the server said, the seqs it received."""

    client: int
    org: str
    session: str
    resume: tuple[str, int] | None
    welcome: dict[str, Any] | None = None
    seqs: list[int] = dataclasses.field(default_factory=list)
    ended: str = ""

    @property
    def last_seq(self) -> int:
        assert self.welcome is not None
        return self.seqs[-1] if self.seqs else int(self.welcome["seq"])


class Soak:
    def __init__(self, port: int, secret: str, clients: int, sessions: int, seed: int) -> None:
        self.port = port
        self.secret = secret
        self.n_clients = clients
        self.sessions = [f"s{i}" for i in range(sessions)]
        self.seed = seed
        self.deadline = 0.0
        self.visits: list[Visit] = []
        #: (org, session) -> seq -> (client, n): what each seq holds, as every observer saw it.
        self.truth: dict[tuple[str, str], dict[int, tuple[int, int]]] = {}
        #: (client, n) -> where it was sequenced.
        self.placed: dict[tuple[int, int], tuple[str, str, int]] = {}
        self.epochs: dict[tuple[str, str], set[str]] = {}
        self.violations: list[str] = []
        self.counts: Counter[str] = Counter()
        self.in_flight_at_drop: list[tuple[int, int]] = []
        self._n = 0

    # identity of client i: pairs of clients are two tabs of one user
    def org_of(self, client: int) -> str:
        return ORGS[(client // 2) % len(ORGS)]

    def user_of(self, client: int) -> str:
        return f"user{client // 2}"

    def token(self, client: int) -> str:
        now = int(time.time())
        claims = {"sub": self.user_of(client), "org": self.org_of(client), "iat": now, "exp": now + 7200}
        return jwt.encode(claims, self.secret, algorithm="HS256")

    def violation(self, text: str) -> None:
        if len(self.violations) < 1000:
            self.violations.append(text)

    def url(self, session: str, token: str, resume: tuple[str, int] | None = None) -> str:
        url = f"ws://127.0.0.1:{self.port}/ws/{session}?token={token}"
        if resume is not None:
            url += f"&since={resume[1]}&epoch={resume[0]}"
        return url

    # -- recording ----------------------------------------------------------------------------------

    def record_message(self, visit: Visit, frame: dict[str, Any]) -> tuple[int, int] | None:
        key = (visit.org, visit.session)
        if frame.get("session_id") != visit.session:
            self.violation(f"client {visit.client} in {key} got a frame of session {frame.get('session_id')!r}")
            return None
        data, seq = frame.get("data"), frame.get("seq")
        if not isinstance(data, dict) or not isinstance(seq, int) or "c" not in data or "n" not in data:
            self.violation(f"{key}: unexpected message {str(frame)[:200]}")
            return None
        payload = (int(data["c"]), int(data["n"]))
        if self.org_of(payload[0]) != visit.org or frame.get("user_id") != self.user_of(payload[0]):
            self.violation(f"{key}: message from client {payload[0]} of another org or with a wrong user_id")
        held = self.truth.setdefault(key, {}).setdefault(seq, payload)
        if held != payload:
            self.violation(f"{key} seq {seq} holds {held} for one observer and {payload} for another")
        placed = self.placed.setdefault(payload, (visit.org, visit.session, seq))
        if placed != (visit.org, visit.session, seq):
            self.violation(f"publish {payload} sequenced twice: {placed} and {(visit.org, visit.session, seq)}")
        visit.seqs.append(seq)
        self.counts["deliveries"] += 1
        return payload

    def check_welcome(self, visit: Visit, welcome: dict[str, Any]) -> None:
        key = (visit.org, visit.session)
        expected = (welcome.get("type"), welcome.get("session_id"), welcome.get("org_id"), welcome.get("user_id"))
        if expected != ("welcome", visit.session, visit.org, self.user_of(visit.client)):
            self.violation(f"{key}: bad welcome {str(welcome)[:200]}")
            return
        self.epochs.setdefault(key, set()).add(welcome["epoch"])
        if visit.resume is None:
            return
        self.counts["resumes"] += 1
        epoch, since = visit.resume
        seq = int(welcome["seq"])
        if since > seq and epoch == welcome["epoch"]:
            self.violation(f"{key}: resumed from {since} but the server is only at {seq}")
        servable = epoch == welcome["epoch"] and seq - HISTORY <= since <= seq
        if welcome["recovered"]:
            self.counts["resumes_recovered"] += 1
            if not servable:
                self.violation(f"{key}: recovered a resume the history cannot serve ({since} of {seq})")
        else:
            self.counts["resumes_not_recovered"] += 1
            if servable:
                self.violation(f"{key}: refused a resume from {since} with history up to {seq}")

    def check_stream(self, visit: Visit) -> None:
        """The seqs a connection received: consecutive, starting where the welcome said."""
        if visit.welcome is None or not visit.seqs:
            return
        seqs = visit.seqs
        key = (visit.org, visit.session)
        if seqs != list(range(seqs[0], seqs[0] + len(seqs))):
            gaps = [(a, b) for a, b in itertools.pairwise(seqs) if b != a + 1][:3]
            self.violation(f"{key} client {visit.client}: gap or duplicate in its stream at {gaps}")
        start = visit.resume[1] + 1 if visit.welcome["recovered"] and visit.resume else visit.welcome["seq"] + 1
        if seqs[0] != start:
            self.violation(f"{key} client {visit.client}: stream starts at {seqs[0]}, the welcome said {start}")
        if visit.welcome["recovered"] and visit.ended == "clean" and seqs[-1] < visit.welcome["seq"]:
            self.violation(f"{key} client {visit.client}: replay ended at {seqs[-1]} of {visit.welcome['seq']}")

    # -- behaviour ----------------------------------------------------------------------------------

    async def visit(
        self, client: int, session: str, resume: tuple[str, int] | None, rng: random.Random
    ) -> tuple[str, tuple[str, int] | None]:
        visit = Visit(client, self.org_of(client), session, resume)
        self.visits.append(visit)
        self.counts["connections"] += 1
        pending: set[int] = set()
        acked = asyncio.Event()
        try:
            ws = await websockets.connect(
                self.url(session, self.token(client), resume), max_queue=None, open_timeout=15, close_timeout=5
            )
        except (OSError, TimeoutError, websockets.WebSocketException) as exc:
            self.violation(f"client {client} could not connect: {exc!r}")
            return "error", resume
        try:
            welcome = json.loads(await asyncio.wait_for(ws.recv(), 15))
            visit.welcome = welcome
            self.check_welcome(visit, welcome)

            async def read() -> None:
                with contextlib.suppress(websockets.ConnectionClosed):
                    async for raw in ws:
                        frame = json.loads(raw)
                        kind = frame.get("type")
                        if kind == "message":
                            payload = self.record_message(visit, frame)
                            if payload is not None and payload[0] == client and payload[1] in pending:
                                pending.discard(payload[1])
                                if not pending:
                                    acked.set()
                        elif kind in ("user_joined", "user_left"):
                            if frame.get("session_id") != session:
                                self.violation(f"presence of another session reached {visit.org}/{session}")
                        else:
                            self.violation(f"client {client} got {str(frame)[:200]}")

            reader = asyncio.ensure_future(read())
            for _ in range(rng.randint(1, 10)):
                if time.monotonic() >= self.deadline:
                    break
                self._n += 1
                n = self._n
                pending.add(n)
                acked.clear()
                await ws.send(json.dumps({"type": "message", "data": {"c": client, "n": n}}))
                self.counts["published"] += 1
                await asyncio.sleep(rng.uniform(0.05, 0.4))
            if rng.random() < 0.35 and time.monotonic() < self.deadline:
                ws.transport.abort()  # the network died: no close frame, maybe frames in flight
                await reader
                visit.ended = "drop"
                self.counts["drops"] += 1
                self.in_flight_at_drop.extend((client, n) for n in pending)
            else:
                if pending:
                    try:
                        await asyncio.wait_for(acked.wait(), 15)
                    except TimeoutError:
                        self.violation(f"client {client}: {len(pending)} publish(es) never acknowledged")
                await ws.close()
                await reader
                visit.ended = "clean"
                self.counts["clean_leaves"] += 1
        except (OSError, TimeoutError, websockets.WebSocketException) as exc:
            self.violation(f"client {client} in {visit.org}/{session}: {exc!r}")
            visit.ended = "error"
            ws.transport.abort()
        self.check_stream(visit)
        point = (visit.welcome["epoch"], visit.last_seq) if visit.welcome else resume
        return visit.ended, point

    async def client(self, client: int) -> None:
        rng = random.Random(self.seed * 100_003 + client)
        points: dict[str, tuple[str, int]] = {}
        session = rng.choice(self.sessions)
        resume: tuple[str, int] | None = None
        while time.monotonic() < self.deadline:
            ended, point = await self.visit(client, session, resume, rng)
            if point is not None:
                points[session] = point
            if ended == "drop":
                resume = point  # reconnect at once and resume where the stream stopped
                continue
            session = rng.choice(self.sessions)
            resume = points.get(session) if rng.random() < 0.3 else None  # come back later and resume
            await asyncio.sleep(rng.uniform(0.0, 0.2))

    async def run(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds
        await asyncio.gather(*(self.client(i) for i in range(self.n_clients)))

    # -- the audit ----------------------------------------------------------------------------------

    async def audit(self) -> dict[tuple[str, str], int]:
        """Each session's last seq, and its last HISTORY messages fetched by resuming."""
        finals = {}
        for org in ORGS:
            token = jwt.encode(
                {"sub": "auditor", "org": org, "exp": int(time.time()) + 600}, self.secret, algorithm="HS256"
            )
            for session in self.sessions:
                key = (org, session)
                async with websockets.connect(self.url(session, token), max_queue=None) as ws:
                    welcome = json.loads(await asyncio.wait_for(ws.recv(), 15))
                final, epoch = int(welcome["seq"]), welcome["epoch"]
                finals[key] = final
                if key in self.epochs:
                    self.epochs[key].add(epoch)
                if final == 0:
                    continue
                since = max(0, final - HISTORY)
                visit = Visit(-1, org, session, (epoch, since))
                async with websockets.connect(self.url(session, token, (epoch, since)), max_queue=None) as ws:
                    welcome = json.loads(await asyncio.wait_for(ws.recv(), 15))
                    if not welcome["recovered"] or welcome["seq"] != final:
                        self.violation(f"{key}: the auditor could not resume the last {HISTORY} messages")
                        continue
                    for _ in range(final - since):
                        frame = json.loads(await asyncio.wait_for(ws.recv(), 15))
                        self.record_message(visit, frame)
                if visit.seqs != list(range(since + 1, final + 1)):
                    self.violation(f"{key}: the replay of the last {HISTORY} messages is not gapless")
                observed = max(self.truth.get(key, {0: (0, 0)}))
                if observed > final:
                    self.violation(f"{key}: a client saw seq {observed} beyond the server's last seq {final}")
        for key, epochs in self.epochs.items():
            if len(epochs) != 1:
                self.violation(f"{key}: the stream changed epoch mid-run: {sorted(epochs)}")
        return finals


# -- the run --------------------------------------------------------------------------------------------


async def _wait_idle(server: Server, timeout: float = 20) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while True:
        metrics = await asyncio.to_thread(server.metrics)
        if metrics.get("tornado_ws_connections_open", -1) == 0 and metrics.get("tornado_ws_sessions_open", -1) == 0:
            return metrics
        if time.monotonic() > deadline:
            return metrics
        await asyncio.sleep(0.2)


async def _sample(server: Server, stop: asyncio.Event, peaks: dict[str, float]) -> None:
    while not stop.is_set():
        with contextlib.suppress(OSError, RuntimeError):
            peaks["rss"] = max(peaks.get("rss", 0), server.rss())
            peaks["fds"] = max(peaks.get("fds", 0), server.fds())
            open_now = (await asyncio.to_thread(server.metrics)).get("tornado_ws_connections_open", 0)
            peaks["connections"] = max(peaks.get("connections", 0), open_now)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)


async def soak(
    duration: float = 60.0,
    clients: int = 40,
    sessions: int = 4,
    seed: int = 1,
    warmup: float = 3.0,
    rss_growth_limit: int = 24 * MiB,
    fd_growth_limit: int = 2,
) -> dict[str, Any]:
    """Run the soak; returns the figures and the list of violations (empty when all is well)."""
    secret = secrets.token_urlsafe(32)
    server = Server(secret, duration)
    figures: dict[str, Any] = {"duration_s": duration, "clients": clients, "sessions": sessions * len(ORGS)}
    try:
        runner = Soak(server.port, secret, clients, sessions, seed)
        await runner.run(warmup)  # warm-up: imports, caches, buffers; audited like the rest
        await _wait_idle(server)
        await asyncio.sleep(0.5)
        base_rss, base_fds = server.rss(), server.fds()
        peaks: dict[str, float] = {}
        stop = asyncio.Event()
        sampler = asyncio.ensure_future(_sample(server, stop, peaks))
        started = time.monotonic()
        await runner.run(duration)
        elapsed = time.monotonic() - started
        stop.set()
        await sampler
        finals = await runner.audit()
        metrics = await _wait_idle(server)
        await asyncio.sleep(0.5)
        end_rss, end_fds = server.rss(), server.fds()

        messages_in = metrics.get('tornado_ws_messages_in_total{source="websocket"}', -1)
        if sum(finals.values()) != messages_in:
            runner.violation(f"sessions' last seqs sum to {sum(finals.values())}, the server accepted {messages_in}")
        if metrics.get("tornado_ws_connections_open") != 0 or metrics.get("tornado_ws_sessions_open") != 0:
            runner.violation("connections or sessions still open after every client left")
        if metrics.get("tornado_ws_slow_consumers_total", 0) or metrics.get("tornado_ws_rate_limited_frames_total", 0):
            runner.violation("a soak client was cut as a slow consumer or rate limited")
        if end_fds - base_fds > fd_growth_limit:
            runner.violation(f"file descriptors: {base_fds} after warm-up, {end_fds} at the end")
        if end_rss - base_rss > rss_growth_limit:
            runner.violation(f"memory: {base_rss / MiB:.1f} MiB after warm-up, {end_rss / MiB:.1f} MiB at the end")
        lost = [p for p in runner.in_flight_at_drop if p not in runner.placed]
        counts = runner.counts
        figures.update(
            {
                "elapsed_s": round(elapsed, 1),
                "connections": counts["connections"],
                "clean_leaves": counts["clean_leaves"],
                "drops": counts["drops"],
                "resumes": counts["resumes"],
                "resumes_recovered": counts["resumes_recovered"],
                "resumes_not_recovered": counts["resumes_not_recovered"],
                "published": counts["published"],
                "sequenced": int(messages_in),
                "lost_in_flight_at_drop": len(lost),
                "deliveries_checked": counts["deliveries"],
                "messages_per_s": round(messages_in / max(elapsed + warmup, 1e-9), 1),
                "deliveries_per_s": round(counts["deliveries"] / max(elapsed + warmup, 1e-9), 1),
                "max_seq": max(finals.values(), default=0),
                "rss_mib": {
                    "after_warmup": round(base_rss / MiB, 1),
                    "peak": round(peaks.get("rss", 0) / MiB, 1),
                    "end": round(end_rss / MiB, 1),
                },
                "fds": {"after_warmup": base_fds, "peak": int(peaks.get("fds", 0)), "end": end_fds},
                "peak_connections": int(peaks.get("connections", 0)),
            }
        )
    finally:
        exit_code = server.stop()
        output = server.output()
        server.cleanup()
    for bad in ("Traceback", " ERROR "):
        if bad in output:
            at = output.index(bad)
            runner.violation(f"server logged {bad.strip()}: {output[max(0, at - 300) : at + 700]}")
    if exit_code != 0:
        runner.violation(f"server exited with {exit_code}")
    figures["violations"] = runner.violations
    return figures


def render(figures: dict[str, Any]) -> str:
    lines = [f"{k:>24}: {v}" for k, v in figures.items() if k != "violations"]
    violations = figures["violations"]
    lines.append(f"{'violations':>24}: {len(violations)}")
    lines.extend(f"  - {v}" for v in violations[:20])
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of churn after the warm-up")
    parser.add_argument("--clients", type=int, default=40, help="concurrent clients (pairs share a user)")
    parser.add_argument("--sessions", type=int, default=4, help="session ids per organization (two orgs)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    figures = asyncio.run(soak(args.duration, args.clients, args.sessions, args.seed))
    print(render(figures))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0 if not figures["violations"] else 1


if __name__ == "__main__":
    sys.exit(main())
