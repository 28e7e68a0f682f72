"""Run the matrix of scenarios x peers, print one table per scenario, optionally
profile tornado-ws and rewrite the generated block of docs/performance.md."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import tornado
import websockets

from . import ROOT
from .peers import NODE_WS_DIR, PEERS, TORNADO_WS
from .procs import can_pin, machine, raise_nofile, version
from .profile import Profile, Profiler
from .report import profile_section, table, targets, targets_17, write_doc
from .runner import Result, run_one
from .scenarios import SCENARIOS, params


def _csv(choices: list[str]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        items = [s.strip() for s in text.split(",") if s.strip()]
        bad = [s for s in items if s not in choices]
        if bad:
            raise argparse.ArgumentTypeError(f"unknown: {', '.join(bad)} (choose from {', '.join(choices)})")
        return items

    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_const", dest="preset", const="quick", help="smaller and shorter")
    size.add_argument("--smoke", action="store_const", dest="preset", const="smoke", help="seconds; what tests run")
    p.set_defaults(preset="full")
    every = list(SCENARIOS)
    p.add_argument(
        "--scenarios", type=_csv(every), default=every, help=f"comma list of {', '.join(every)} (default: all)"
    )
    p.add_argument("--peers", type=_csv(list(PEERS)), default=list(PEERS), help="comma list (default: all)")
    p.add_argument("--no-pin", action="store_true", help="do not pin server and driver to separate cores")
    profiled = ", ".join(key for key, _, _ in PROFILED)
    p.add_argument(
        "--profile", action="store_true", help=f"py-spy tornado-ws in extra runs of {profiled} (if selected)"
    )
    p.add_argument("--write-doc", nargs="?", const=str(ROOT / "docs" / "performance.md"), metavar="PATH")
    p.add_argument("--json", metavar="PATH", help="also write every figure as JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    started = time.monotonic()
    nofile = raise_nofile()
    pin = can_pin() and not args.no_pin
    log(f"preset {args.preset}; open-file limit {nofile}; pinning {'server→cpu0, driver→cpu1' if pin else 'off'}")
    results: list[Result] = []
    for key in args.scenarios:
        for peer in args.peers:
            t0 = time.monotonic()
            result = run_one(SCENARIOS[key], PEERS[peer], args.preset, pin=pin)
            status = result.unavailable or result.failure or f"{result.errors} errors"
            log(f"[{key}] {peer}: {status} ({time.monotonic() - t0:.1f} s)")
            results.append(result)
    profiles, profile_errors = run_profiles(args.preset, pin, args.scenarios) if args.profile else ([], [])
    block = render(args, results, profiles, profile_errors, pin, time.monotonic() - started)
    print(block)
    if args.json:
        Path(args.json).write_text(json.dumps([dataclasses.asdict(r) for r in results], indent=1))
    if args.write_doc:
        write_doc(Path(args.write_doc), block)
        log(f"wrote {args.write_doc}")
    log(f"done in {time.monotonic() - started:.0f} s")
    return 1 if any(r.failure for r in results) else 0


# (scenario, the driver phase to sample, its length from the scenario's params)
PROFILED: tuple[tuple[str, str, Callable[[dict[str, float]], float]], ...] = (
    ("fanout", "saturate", lambda p: p["warmup"] + p["duration"]),
    ("handshake", "handshake", lambda p: p["warmup"] + p["duration"]),
    ("idle", "idle", lambda p: p["hold"]),
    # Every /ws socket joining its sessions: about a second with the memory broker (full preset).
    ("multiplex", "join", lambda p: 1),
    ("cursors", "cursors", lambda p: p["warmup"] + p["duration"]),
    # The room filling up with the roster limit (the first variant): 3.5 s on a quiet machine, up to
    # 15 s on a loaded one; 10 s for 10,000 members.
    ("big-room", "join", lambda p: p["members"] / 1000),
)


def run_profiles(preset: str, pin: bool, scenarios: list[str]) -> tuple[list[Profile], list[str]]:
    """Extra runs of tornado-ws under py-spy (apart from the measured runs, so they stay unperturbed),
    for the profiled scenarios among ``scenarios``."""
    out_dir = Path(tempfile.gettempdir()) / "tornado-ws-bench"
    out_dir.mkdir(exist_ok=True)
    profiles, errors = [], []
    for key, phase, seconds in PROFILED:
        if key not in scenarios:
            continue
        # The first variant only (the big room's with the roster limit: the one with a target).
        scenario = dataclasses.replace(SCENARIOS[key], variants=SCENARIOS[key].variants[:1])
        title = f"{scenario.title} ({phase} phase)"
        profiler = Profiler(title, out_dir / f"tornado-ws-{key}.pyspy.txt", phase, seconds(params(scenario, preset)))
        result = run_one(scenario, PEERS[TORNADO_WS], preset, pin=pin, on_phase=profiler.on_phase)
        profile = profiler.finish()
        if profile is None:
            errors.append(f"{title}: {profiler.error or result.failure}")
        else:
            profiles.append(profile)
        log(f"[profile] {title}: {profiler.error or f'{profile.samples if profile else 0} samples'}")
    return profiles, errors


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def render(
    args: argparse.Namespace,
    results: list[Result],
    profiles: list[Profile],
    profile_errors: list[str],
    pin: bool,
    seconds: float,
) -> str:
    facts = machine()
    ws_pkg = NODE_WS_DIR / "node_modules" / "ws" / "package.json"
    ws_version = json.loads(ws_pkg.read_text())["version"] if ws_pkg.exists() else "not installed"
    command = "python -m bench " + shlex.join(sys.argv[1:] if argv_is_cli() else [])
    out = [
        "## Figures",
        "",
        f"Generated by `{command.strip()}` on {datetime.date.today()} ({args.preset} preset, {seconds:.0f} s).",
        "",
        f"- Machine: {facts['cpu']}, {facts['cores']} cores, {facts['memory']} RAM, Linux {facts['kernel']}",
        f"- Python {sys.version.split()[0]}, Tornado {tornado.version}, websockets {websockets.__version__},"
        f" Node {version(['node', '--version'])}, ws {ws_version}",
        f"- Pinning: {'server (and Redis) on CPU 0, driver on CPU 1 (taskset)' if pin else 'none'}",
        "- Driver: one Node process with a raw WebSocket client (bench/driver/); its own CPU is in the tables.",
        "",
    ]
    for key in args.scenarios:
        scenario = SCENARIOS[key]
        out += [f"### {scenario.title}", "", scenario.what.format(**params(scenario, args.preset)), ""]
        out += [table(scenario, results), ""]
        notes = [f"{r.peer}: {'; '.join(r.error_samples)}" for r in results if r.scenario == key and r.error_samples]
        out += [f"Errors seen: {' / '.join(notes)}", ""] if notes else []
    out += ["### Targets (issue #7)", "", targets(results), ""]
    if {"cursors", "big-room"} & set(args.scenarios):
        out += ["### Targets (issue #17)", "", targets_17(results), ""]
    out += ["### Profiles", "", profile_section(profiles, profile_errors, args.profile), ""]
    return "\n".join(out)


def argv_is_cli() -> bool:
    # sys.argv[0] is bench/__main__.py under `python -m bench`; tests call main() directly.
    return Path(sys.argv[0]).name == "__main__.py"
