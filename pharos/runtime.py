"""Building the shared pieces from settings: engine, session factory, broker access.

The CLI, the API and the demo all start here, so each gets the same wiring.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from control.plane import ControlPlane
from devices.broker import BrokerAccessWriter, BrokerAccount
from devices.registry.db import make_engine, make_session_factory
from devices.registry.service import Registry, registry_session
from pharos.database import ensure_sqlite_dir
from pharos.settings import Settings
from pharos_core.clock import Clock, SystemClock
from rules.service import RulesService
from telemetry.fleet_stats import Reachable
from telemetry.metrics import TelemetryMetrics
from telemetry.store import TimeSeriesStore, open_store


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    broker_writer: BrokerAccessWriter
    timeseries: TimeSeriesStore | None = None
    telemetry_metrics: TelemetryMetrics = field(default_factory=TelemetryMetrics)
    rules: RulesService | None = None  # the live rules engine, when `pharos serve` runs it
    # the Modbus poller's healthy meters, when this process polls (IOC summary, fleet stats)
    modbus_reachable: Reachable | None = None
    control: ControlPlane | None = None  # commands and the lighting scheduler, when running
    # the one clock of the process: services and API routes agree on "now" (the demo's
    # accelerated clock, a test's stepped one); ``PharosServices`` sets it to its own
    clock: Clock = field(default_factory=SystemClock)

    def sync_broker(self, accounts: list[BrokerAccount]) -> None:
        self.broker_writer.sync(accounts)

    @contextmanager
    def registry(self, actor: str) -> Iterator[Registry]:
        """A registry transaction whose credential changes reach the broker after commit."""
        with registry_session(
            self.sessions,
            actor,
            broker_sync=self.sync_broker,
            districts=self.settings.site.districts,
            hash_iterations=self.settings.broker.hash_iterations,
        ) as registry:
            yield registry

    def close(self) -> None:
        self.engine.dispose()


def freeze_startup_heap() -> None:
    """Keep what start-up built out of every later garbage collection (``gc.freeze``).

    Called once the services run: the modules, settings, rules and caches loaded at
    start-up (about 100,000 objects) live as long as the process, yet each full
    collection walked them all, stopping the event loop for 50-100 ms on this machine
    (ingest and the rules evaluator with it: the worst trigger → command latencies).
    Collected first, so no garbage of the start-up is kept; objects made later are
    collected as before.
    """
    gc.collect()
    gc.freeze()


def build_runtime(settings: Settings) -> Runtime:
    ensure_sqlite_dir(settings.database.url)
    engine = make_engine(settings.database.url, echo=settings.database.echo)
    sessions = make_session_factory(engine)
    broker, influx = settings.broker, settings.influx
    timeseries = open_store(
        influx_url=influx.url,
        database=influx.database,
        api=influx.api,
        credentials=influx.token.get_secret_value() if influx.token else None,
        embedded_path=settings.data_dir / "timeseries.db",
        sessions=sessions,
    )
    return Runtime(
        settings=settings,
        engine=engine,
        sessions=sessions,
        broker_writer=BrokerAccessWriter(broker.password_file, broker.acl_file, broker.pid_file),
        timeseries=timeseries,
    )
