"""``pharos ingest``: the telemetry services of one worker, from the settings, until Ctrl-C.

The composition lives in ``pharos.services.TelemetryServices``: the point sink (the
InfluxDB writer with its durable spool when ``influx.url`` is set, else the embedded
store), the dead-letter store, the device twin and directory, MQTT ingest and the
Modbus poller.

Several workers share the load through an MQTT 5 shared subscription
(``telemetry.share_group``). Each needs a broker account of its own (the broker ties
a session to its account): worker N logs in as ``<broker.username>-N`` with its own
secret (``PHAROS_BROKER__PASSWORD`` in that worker's environment) and keeps its own
spool in ``<spool_dir>/worker-N``. Only one process should poll the Modbus meters:
by default the single worker, or worker 1.
"""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from pharos.cli.common import configure_logging, opened_runtime, run_or_fail, stop_on_signals
from pharos.runtime import Runtime, freeze_startup_heap
from pharos.services import TelemetryOptions, TelemetryServices

log = logging.getLogger("pharos.ingest")

WorkerOption = Annotated[
    int | None,
    typer.Option(
        "--worker-id",
        min=1,
        metavar="N",
        help="Run as worker N of several: broker account <broker.username>-N, spool "
        "<spool_dir>/worker-N. Set telemetry.share_group so the workers share the load.",
    ),
]
StatsOption = Annotated[
    float,
    typer.Option(
        "--stats-interval",
        min=0,
        metavar="SECONDS",
        help="Log a line of figures (JSON) this often; 0: never.",
    ),
]
MetricsPortOption = Annotated[
    int | None,
    typer.Option(
        "--metrics-port",
        min=1,
        max=65535,
        help="Serve /metrics (Prometheus) and /healthz on api.host:PORT.",
    ),
]
ModbusOption = Annotated[
    bool | None,
    typer.Option(
        "--modbus/--no-modbus",
        help="Poll the registry's Modbus meters here (default: the only worker, or worker 1).",
    ),
]


def ingest_command(
    ctx: typer.Context,
    worker_id: WorkerOption = None,
    stats_interval: StatsOption = 60.0,
    modbus: ModbusOption = None,
    metrics_port: MetricsPortOption = None,
) -> None:
    """Take readings, state and status from the broker, and poll the Modbus meters, into storage.

    A reading is acknowledged to the broker only once it is in InfluxDB or the spool
    (influx.url set) or the embedded store; bad input goes to the dead letters.
    Needs its broker account: `pharos broker service-account pharos-backend` (or
    pharos-backend-N for --worker-id N), its secret in PHAROS_BROKER__PASSWORD.
    Runs until Ctrl-C or SIGTERM, then stores and acknowledges what it received.

    Example: PHAROS_BROKER__PASSWORD=... pharos ingest --worker-id 1
    """
    configure_logging()
    options = TelemetryOptions(
        worker_id=worker_id,
        modbus=modbus if modbus is not None else worker_id in (None, 1),
        stats_interval_s=stats_interval or None,
    )
    with opened_runtime(ctx) as runtime:
        run_or_fail(_serve(runtime, options, metrics_port))


async def _serve(runtime: Runtime, options: TelemetryOptions, metrics_port: int | None) -> None:
    from pharos.serving import serve_api

    stop = stop_on_signals()
    async with TelemetryServices(runtime, options) as services:
        freeze_startup_heap()
        if metrics_port is None:
            await stop.wait()
        else:
            await serve_api(runtime, stop, metrics_only_port=metrics_port)
        log.info("ingest: stopping (storing and acknowledging what was received)")
    if services.ingest is not None:
        log.info("ingest: stopped; %s", services.ingest.stats)
