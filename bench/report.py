"""Markdown tables (one per scenario, with tornado-ws's ratio to each peer), the
targets of issues #7 and #17, and the generated block of docs/performance.md."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .peers import FEATURES, PEERS, TORNADO_WS
from .profile import Profile
from .runner import Result
from .scenarios import Column, Scenario

BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


def _fmt(fmt: str, value: Any) -> str:
    return "—" if value is None else fmt.format(value)


def _cell(column: Column, result: Result, features: frozenset[str]) -> str:
    # A peer without the feature a figure needs has no such figure: say so, do not invent one.
    if column.needs is not None and column.needs not in features:
        return FEATURES[column.needs]
    return _fmt(column.fmt, result.figures.get(column.key))


def table(scenario: Scenario, results: Iterable[Result]) -> str:
    rows = [r for r in results if r.scenario == scenario.key]
    ours = next((r for r in rows if r.peer == TORNADO_WS and r.ok), None)
    ratio_cols = [c for c in scenario.columns if c.better]
    head = ["peer", *(c.label for c in scenario.columns), "errors"]
    head += [f"÷ {c.label} {'↑' if c.better == 'higher' else '↓'}" for c in ratio_cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        label = PEERS[r.peer].label
        if not r.ok:
            why = r.unavailable or f"failed: {r.failure}"
            lines.append("| " + " | ".join([label, why] + ["—"] * (len(head) - 2)) + " |")
            continue
        features = PEERS[r.peer].features()
        cells = [label, *(_cell(c, r, features) for c in scenario.columns), str(r.errors)]
        for c in ratio_cols:
            mine, theirs = (ours.figures.get(c.key) if ours else None), r.figures.get(c.key)
            cells.append(f"{mine / theirs:.2f}x" if mine is not None and theirs else "—")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fig(results: list[Result], scenario: str, peer: str, key: str) -> float | None:
    for r in results:
        if r.scenario == scenario and r.peer == peer and r.ok:
            value = r.figures.get(key)
            return float(value) if value is not None else None
    return None


def targets(results: list[Result]) -> str:
    """Issue #7's targets against this run's figures (ratios within the same run)."""

    def f(scenario: str, peer: str, key: str) -> float | None:
        return _fig(results, scenario, peer, key)

    us, dps, hs = "server_us_per_delivery", "deliveries_per_s", "handshakes_per_s"
    naive_us, naive_dps = f("fanout", "naive-tornado", us), f("fanout", "naive-tornado", dps)
    rows: list[tuple[str, float | None, float | None, str, str]] = [
        # (target, tornado-ws's figure, the bound, unit, "<=" or ">=")
        ("fan-out CPU/delivery <= Node ws", f("fanout", TORNADO_WS, us), f("fanout", "node-ws", us), "µs", "<="),
        ("fan-out CPU/delivery <= naive / 4.5", f("fanout", TORNADO_WS, us), naive_us and naive_us / 4.5, "µs", "<="),
        ("fan-out deliveries/s >= 3 x naive", f("fanout", TORNADO_WS, dps), naive_dps and 3 * naive_dps, "/s", ">="),
        (
            "fan-out deliveries/s >= websockets",
            f("fanout", TORNADO_WS, dps),
            f("fanout", "websockets", dps),
            "/s",
            ">=",
        ),
        ("idle RSS <= 8 KiB/connection", f("idle", TORNADO_WS, "kib_per_connection"), 8.0, "KiB", "<="),
        (
            "handshakes/s (with JWT) >= naive",
            f("handshake", TORNADO_WS, hs),
            f("handshake", "naive-tornado", hs),
            "/s",
            ">=",
        ),
        ("fan-out p99 at half max < 50 ms", f("fanout", TORNADO_WS, "half_p99_ms"), 50.0, "ms", "<="),
    ]
    return _target_table(rows)


def targets_17(results: list[Result]) -> str:
    """Issue #17's targets (cursors and the big room, tornado-ws on the memory broker)."""
    rows: list[tuple[str, float | None, float | None, str, str]] = [
        ("cursors p99 < 50 ms", _fig(results, "cursors", TORNADO_WS, "p99_ms"), 50.0, "ms", "<="),
        (
            "cursors server CPU < 60 % of a core",
            _fig(results, "cursors", TORNADO_WS, "server_cpu_pct"),
            60.0,
            "%",
            "<=",
        ),
        (
            "big room (roster limit) < 10 s server CPU",
            _fig(results, "big-room", TORNADO_WS, "server_cpu_s"),
            10.0,
            "s",
            "<=",
        ),
    ]
    return _target_table(rows)


def _target_table(rows: list[tuple[str, float | None, float | None, str, str]]) -> str:
    lines = ["| target | tornado-ws | bound | met |", "|---|---|---|---|"]
    for name, ours, bound, unit, op in rows:
        if ours is None or bound is None:
            lines.append(f"| {name} | {_num(ours)} | {_num(bound)} | not measured |")
            continue
        met = ours <= bound if op == "<=" else ours >= bound
        lines.append(f"| {name} | {_num(ours)} {unit} | {_num(bound)} {unit} | {'yes' if met else '**no**'} |")
    return "\n".join(lines)


def _num(v: float | None) -> str:
    if v is None:
        return "—"
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.1f}"


def profile_section(profiles: list[Profile], errors: list[str], asked: bool) -> str:
    if not asked:
        return "Not profiled in this run (add `--profile`)."
    lines = [f"Not profiled: {e}" for e in errors]
    for p in profiles:
        busy = 100 * p.samples / max(1, p.expected)
        lines += [
            f"#### {p.title}",
            "",
            f"py-spy, {p.samples:,} samples of the tornado-ws process (non-idle ≈ {busy:.0f} % of wall time);"
            f" collapsed stacks in `{p.raw_path}`.",
            "",
            "| self % | function (on top of the stack) | inclusive % | function (anywhere on the stack) |",
            "|---:|---|---:|---|",
        ]
        for (s_name, s_pct), (i_name, i_pct) in zip(p.self_top, p.inclusive_top, strict=False):
            lines.append(f"| {s_pct:.1f} | `{s_name}` | {i_pct:.1f} | `{i_name}` |")
        lines.append("")
    return "\n".join(lines)


def write_doc(path: Path, block: str) -> None:
    """Replace the generated block of ``path`` (between the markers), keeping the prose around it."""
    generated = f"{BEGIN}\n{block.strip()}\n{END}"
    text = path.read_text(encoding="utf-8") if path.exists() else f"# Performance\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        text = text.rstrip() + f"\n\n{BEGIN}\n{END}\n"
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.DOTALL)
    path.write_text(pattern.sub(lambda _: generated, text, count=1), encoding="utf-8")
