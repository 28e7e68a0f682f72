"""The plain-int histogram exports what Prometheus expects: cumulative buckets, le inclusive."""

from __future__ import annotations

import re

from tornado_ws.core.registry import Registry
from tornado_ws.metrics import Metrics


def test_broadcast_histogram_buckets_are_cumulative_and_inclusive() -> None:
    metrics = Metrics(Registry())
    for value in (0.00005, 0.0001, 0.0002, 0.3, 1.0):  # below, at, between two bounds, over the last two
        metrics.fanout_seconds.observe(value)
    text = metrics.render().decode()
    buckets = dict(re.findall(r'tornado_ws_broadcast_seconds_bucket\{le="([^"]+)"\} ([0-9.]+)', text))
    assert buckets["0.0001"] == "2.0"  # 0.0001 itself counts as <= 0.0001
    assert buckets["0.00025"] == "3.0"
    assert buckets["0.25"] == "3.0"
    assert buckets["+Inf"] == "5.0"
    assert "tornado_ws_broadcast_seconds_count 5.0" in text
    (total,) = re.findall(r"tornado_ws_broadcast_seconds_sum ([0-9.e-]+)", text)
    assert abs(float(total) - 1.30035) < 1e-9


def test_dropped_signals_are_exported_under_their_documented_name() -> None:
    metrics = Metrics(Registry())
    metrics.signals_dropped = 3
    assert "tornado_ws_signals_dropped_total 3.0" in metrics.render().decode()
