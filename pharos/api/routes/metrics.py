"""``GET /metrics``: the telemetry pipeline's health in Prometheus' text format, without a key.

The figures live in the ``TelemetryMetrics`` the runtime shares with ingest and the
writer (``runtime.telemetry_metrics``). Each scrape renders them through a
``CollectorRegistry`` of its own: nothing registers in prometheus-client's global
registry, so apps (and tests) never see each other's figures.
"""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from pharos.api.deps import RuntimeDep
from telemetry.metrics import TelemetryMetrics

router = APIRouter(tags=["health"])


class TelemetryCollector:
    """A prometheus-client collector over a live ``TelemetryMetrics``."""

    def __init__(self, metrics: TelemetryMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        families: dict[str, CounterMetricFamily | GaugeMetricFamily] = {}
        for sample in self._metrics.samples():
            family = families.get(sample.name)
            if family is None:
                labels = [name for name, _ in sample.labels]
                kind = CounterMetricFamily if sample.type == "counter" else GaugeMetricFamily
                family = families[sample.name] = kind(sample.name, sample.help, labels=labels)
            family.add_metric([value for _, value in sample.labels], sample.value)
        yield from families.values()


def render(metrics: TelemetryMetrics | None) -> bytes:
    """The exposition text of ``metrics`` (empty when the process has none)."""
    registry = CollectorRegistry()
    if metrics is not None:
        registry.register(TelemetryCollector(metrics))
    return generate_latest(registry)


@router.get("/metrics", response_class=Response)
def metrics(runtime: RuntimeDep) -> Response:
    """Counters: received, invalid, written, spooled; gauges: spool depth, ingest lag."""
    current: TelemetryMetrics | None = getattr(runtime, "telemetry_metrics", None)
    # The classic 0.0.4 text format: every Prometheus reads it, and plain ASCII names
    # render the same in it as in the newer 1.0.0.
    return Response(render(current), media_type=CONTENT_TYPE_PLAIN_0_0_4)
