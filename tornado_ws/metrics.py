"""Prometheus metrics, one set of collectors per app (so tests can build many apps).

Hot-path counts (bytes out, frames in, rate-limited frames) are plain ints
bumped by the handlers and read at scrape time: a Prometheus counter takes a
lock on every ``inc``, which would cost more than the write it counts.
Label values come from fixed sets (reasons, close codes), never from input.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from tornado_ws.core.registry import Registry

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    def __init__(self, sessions: Registry) -> None:
        self.sessions = sessions
        #: Prometheus's registry of this app's collectors (not the session registry, ``self.sessions``).
        self.collectors = CollectorRegistry(auto_describe=True)
        self.messages_in = 0
        self.api_messages_in = 0
        self.bytes_out = 0
        self.rate_limited = 0
        self.slow_consumers = 0
        #: Signals not delivered: over a sender's --signal-rate, or a receiver falling behind.
        self.signals_dropped = 0
        self.refused = Counter(
            "tornado_ws_handshakes_refused",
            "WebSocket connections refused, by reason",
            ["reason"],
            registry=self.collectors,
        )
        self.disconnects = Counter(
            "tornado_ws_disconnects",
            "WebSocket connections closed, by close code (1006: no close frame)",
            ["code"],
            registry=self.collectors,
        )
        self.fanout_seconds = PlainHistogram(
            (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)
        )
        self.collectors.register(_LiveCollector(self))
        self._disconnects_by_code: dict[str, Any] = {}

    def count_disconnect(self, code_label: str) -> None:
        # Counter.labels() hashes and locks on every call; one child per label, looked up once.
        child = self._disconnects_by_code.get(code_label)
        if child is None:
            child = self._disconnects_by_code[code_label] = self.disconnects.labels(code_label)
        child.inc()

    def render(self) -> bytes:
        return generate_latest(self.collectors)


class PlainHistogram:
    """Bucket counts as plain ints, exported at scrape time.

    prometheus_client's Histogram takes a lock and walks every bucket on each observe;
    with a publish every few microseconds in small rooms that was ~10 % of the CPU.
    """

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def family(self, name: str, documentation: str) -> HistogramMetricFamily:
        cumulative, buckets = 0, []
        for bound, count in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            cumulative += count
            buckets.append((bound, cumulative))
        return HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=self.total)


class _LiveCollector(Collector):
    """Gauges and plain-int counters, read when Prometheus scrapes."""

    def __init__(self, metrics: Metrics) -> None:
        self.m = metrics

    def collect(self) -> Iterator[Metric]:
        m, core = self.m, self.m.sessions
        yield GaugeMetricFamily("tornado_ws_connections_open", "Open WebSocket connections", core.connection_count)
        yield GaugeMetricFamily("tornado_ws_sessions_open", "Sessions with at least one member", len(core.sessions))
        messages_in = CounterMetricFamily(
            "tornado_ws_messages_in", "Messages accepted for broadcast, by source", labels=["source"]
        )
        messages_in.add_metric(["websocket"], m.messages_in)
        messages_in.add_metric(["api"], m.api_messages_in)
        yield messages_in
        yield CounterMetricFamily(
            "tornado_ws_messages_out", "Message frames delivered to members (one per recipient)", core.deliveries
        )
        yield CounterMetricFamily("tornado_ws_bytes_out", "Bytes written to WebSocket peers", m.bytes_out)
        yield CounterMetricFamily(
            "tornado_ws_rate_limited_frames", "Client frames dropped by the rate limit", m.rate_limited
        )
        yield m.fanout_seconds.family(
            "tornado_ws_broadcast_seconds", "Time to sequence one message and hand it to every member's socket"
        )
        yield CounterMetricFamily(
            "tornado_ws_signals_dropped",
            "Signals dropped: over the sender's signal budget, or a receiver's unsent ones past its cap",
            m.signals_dropped,
        )
        yield CounterMetricFamily(
            "tornado_ws_slow_consumers",
            "Connections cut because their unsent backlog passed the limit",
            m.slow_consumers,
        )
