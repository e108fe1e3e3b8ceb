"""The demo: a simulated Cần Thơ fleet, ingest, storage and the API, on a bare machine.

Everything it needs is started here on embedded defaults: a Mosquitto from the
project's own configuration (on a free port, files under ``data_dir/demo``), the
SQLite registry, the sample field inventory, a backend broker account, an admin API
key, a part of the ``can-tho-demo`` scenario's fleet (MQTT devices and Modbus meters
and cabinets, registered like devices from a factory), the telemetry services (MQTT
ingest and the Modbus poller into the embedded store, or InfluxDB when ``influx.url``
is set) and the API, all in one event loop.

The fleet lives in accelerated time (the scenario's day from 17:00 local, sixty times
real time by default), so its readings carry times ahead of the wall clock; the demo
widens ingest's future-timestamp window to the simulated day so they are kept as sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from pydantic import SecretStr

from control.files import AssignmentSpec, apply_lighting_file, parse_lighting_file
from control.plan import TargetType
from control.program import Site
from devices.registry.csv_import import import_devices
from devices.registry.db import transaction, utcnow
from devices.wire import DeviceKind
from firmware_sim.fleet import Fleet, FleetCounters
from firmware_sim.mqtt.hub import BrokerAddress
from firmware_sim.scenario import DeviceSpec, Scenario, expand, limit_devices
from pharos.apikeys import Role, create_api_key
from pharos.broker_process import MosquittoProcess, free_port, port_is_free
from pharos.cli.common import configure_logging, stop_on_signals
from pharos.composition import PharosServices, ServiceSet
from pharos.database import upgrade
from pharos.demo_settings import shown_path, write_demo_settings
from pharos.runtime import Runtime, build_runtime
from pharos.services import TelemetryOptions
from pharos.serving import serve_api
from pharos.settings import Settings
from pharos.simulate import (
    lighting_group,
    prepared_scenario,
    provision_scenario,
    scenario_clock,
    wait_for_accounts,
)
from rules.alerts import AlertStore
from telemetry.ingest import MqttOptions

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
INVENTORY = EXAMPLES / "inventory-can-tho.csv"
LIGHTING = EXAMPLES / "lighting-can-tho.yaml"
SCENARIO = Path(__file__).resolve().parents[1] / "firmware_sim" / "scenarios" / "can-tho-demo.yaml"
BACKEND_ACCOUNT = "pharos-backend"
BROKER_PORT = 18830  # the demo broker's port unless busy: printed, the same every run
SETTINGS_FILE = "pharos.toml"  # under data_dir/demo: the CLI's settings for the demo
PROGRESS_EVERY_S = 10.0

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DemoOptions:
    duration_s: float | None = None  # wall-clock seconds, then stop; None: until Ctrl-C
    devices: int = 400  # every non-lamp device of the scenario, then lamps up to this
    accelerate: float = 60.0  # simulated seconds per real second
    scenario: Path = SCENARIO
    broker_port: int = BROKER_PORT  # taken when free, else any free port (said so)


def run_demo(settings: Settings, options: DemoOptions | None = None) -> None:
    """Start everything, print how to reach it, run until Ctrl-C or the duration."""
    options = options or DemoOptions()
    configure_logging(logging.WARNING)  # the progress lines are the demo's output
    workdir = (settings.data_dir / "demo").resolve()
    with MosquittoProcess(workdir / "broker", port=_broker_port(options.broker_port)) as broker:
        scenario = _todays_scenario(options.scenario, settings.site.timezone)
        settings = _demo_settings(settings, broker, scenario)
        runtime = build_runtime(settings)
        try:
            upgrade(runtime.engine)
            api_key, backend = _provision(runtime, broker)
            # After _provision: the file carries the services' secrets it just made.
            write_demo_settings(workdir / SETTINGS_FILE, runtime.settings)
            with contextlib.suppress(KeyboardInterrupt):
                asyncio.run(_run(runtime, scenario, backend, api_key, options))
        finally:
            runtime.close()


def _broker_port(wanted: int) -> int:
    """``wanted`` when free; else a free port, saying why the address differs."""
    if port_is_free(wanted):
        return wanted
    port = free_port()
    print(
        f"broker: port {wanted} is in use (another demo, or a broker of yours); "
        f"this demo's broker is on {port} instead (--broker-port to choose)",
        flush=True,
    )
    return port


def demo_devices(specs: list[DeviceSpec], count: int) -> list[DeviceSpec]:
    """Every device that is not a streetlight (cabinets, poles, monitors, gauges, meters),
    then streetlights spread over the city up to ``count`` in all."""
    others = [spec for spec in specs if spec.kind is not DeviceKind.STREETLIGHT]
    if count <= len(others):
        return limit_devices(specs, count)
    lamps = [spec for spec in specs if spec.kind is DeviceKind.STREETLIGHT]
    return others + limit_devices(lamps, count - len(others)) if lamps else others


def _todays_scenario(path: Path, timezone: str) -> Scenario:
    """The scenario's day, starting today at 17:00 local (dusk comes within a minute)."""
    today = datetime.now(ZoneInfo(timezone)).replace(hour=17, minute=0, second=0, microsecond=0)
    return prepared_scenario(path, start=today)


def _demo_settings(settings: Settings, broker: MosquittoProcess, scenario: Scenario) -> Settings:
    broker_settings = settings.broker.model_copy(
        update={
            "host": "127.0.0.1",
            "port": broker.port,
            "password_file": broker.password_file,
            "acl_file": broker.acl_file,
            "pid_file": broker.pid_file,
        }
    )
    # Accelerated devices report times up to the end of their simulated day.
    ahead = (scenario.end - utcnow()).total_seconds() + 3600
    telemetry = settings.telemetry.model_copy(
        update={"max_future_s": max(settings.telemetry.max_future_s, ahead)}
    )
    # The demo's own data directory, absolute: the settings file works from anywhere.
    return settings.model_copy(
        update={
            "broker": broker_settings,
            "telemetry": telemetry,
            "data_dir": settings.data_dir.resolve(),
        }
    )


def _provision(runtime: Runtime, broker: MosquittoProcess) -> tuple[str, MqttOptions]:
    """The sample inventory, the services' broker accounts and a fresh admin key.

    The services' secrets go into the runtime's settings, as an operator would put them
    in PHAROS_BROKER__PASSWORD, PHAROS_CONTROL__BROKER_PASSWORD and
    PHAROS_RULES__BROKER_PASSWORD (and so into the demo's settings file).
    """
    settings = runtime.settings
    with runtime.registry("demo") as registry:
        outcome = import_devices(registry, INVENTORY.read_text(encoding="utf-8"))
        account = registry.ensure_service_account(BACKEND_ACCOUNT)
        commands = registry.ensure_service_account(settings.control.broker_username)
        rules = registry.ensure_service_account(settings.rules.broker_username)
        api_key = create_api_key(
            registry.session, f"demo-admin-{utcnow():%Y%m%dT%H%M%S%f}", Role.ADMIN
        )
    print(
        f"inventory: {len(outcome.created)} created, {len(outcome.updated)} updated, "
        f"{len(outcome.unchanged)} unchanged ({INVENTORY.name})",
        flush=True,
    )
    runtime.settings = settings.model_copy(
        update={
            "broker": settings.broker.model_copy(
                update={"username": account.username, "password": SecretStr(account.secret)}
            ),
            "control": settings.control.model_copy(
                update={"broker_password": SecretStr(commands.secret)}
            ),
            "rules": settings.rules.model_copy(update={"broker_password": SecretStr(rules.secret)}),
        }
    )
    backend = MqttOptions(broker.host, broker.port, account.username, account.secret)
    return api_key, backend


async def _run(
    runtime: Runtime, scenario: Scenario, backend: MqttOptions, api_key: str, options: DemoOptions
) -> None:
    stop = stop_on_signals()
    specs = demo_devices(expand(scenario), options.devices)
    address = BrokerAddress(backend.host, backend.port)
    clock = scenario_clock(scenario, options.accelerate)
    fleet = Fleet(
        specs,
        broker=address,
        clock=clock,
        seed=scenario.seed,
        events=scenario.events,
    )
    async with fleet:
        secrets = await asyncio.to_thread(
            provision_scenario, runtime, specs, modbus_endpoints=fleet.modbus_endpoints
        )
        await wait_for_accounts(address, secrets or {backend.username: backend.password or ""})
        await asyncio.to_thread(_load_lighting, runtime, specs)
        services_wanted = ServiceSet(telemetry=TelemetryOptions(stats_interval_s=None))
        async with PharosServices(
            runtime, services_wanted, clock=clock, ingest_mqtt=backend
        ) as services:
            fleet.start_mqtt(secrets)
            _print_banner(runtime.settings, api_key, scenario, len(specs))
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(_run_fleet(fleet, scenario, stop), name="fleet")
                alert_store = AlertStore(runtime.sessions)
                tasks.create_task(_report(fleet, services, alert_store, stop), name="progress")
                if options.duration_s is not None:
                    tasks.create_task(_stop_after(options.duration_s, stop), name="timer")
                await serve_api(runtime, stop)
                stop.set()  # the API stopped: so does everything else
    print("demo stopped", flush=True)


def _load_lighting(runtime: Runtime, specs: list[DeviceSpec]) -> None:
    """The city's programs and calendar, assigned to each district's lighting group."""
    lighting = parse_lighting_file(LIGHTING.read_text(encoding="utf-8"))
    calendar = lighting.calendars[0].id
    groups = sorted({lighting_group(s.district) for s in specs if s.kind is DeviceKind.STREETLIGHT})
    assignments = [
        AssignmentSpec(target_type=TargetType.GROUP, target_id=group, calendar_id=calendar)
        for group in groups
    ]
    settings = runtime.settings.site
    site = Site(
        latitude=settings.latitude, longitude=settings.longitude, timezone=settings.timezone
    )
    with transaction(runtime.sessions) as session:
        apply_lighting_file(session, lighting.model_copy(update={"assignments": assignments}), site)
    print(f"lighting: calendar {calendar!r} on {len(groups)} district groups", flush=True)


async def _run_fleet(fleet: Fleet, scenario: Scenario, stop: asyncio.Event) -> None:
    counters = await fleet.run_until(scenario.end, stop=stop)
    if not stop.is_set():
        print(f"simulated day over: {_fleet_line(counters)}; the API stays up", flush=True)


async def _report(
    fleet: Fleet, services: PharosServices, alert_store: AlertStore, stop: asyncio.Event
) -> None:
    """A progress line every few seconds: the fleet's side, ingest's side, the alerts."""
    since_event = await asyncio.to_thread(alert_store.last_event_id)
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(PROGRESS_EVERY_S):
                await stop.wait()
        if stop.is_set():
            return
        alerts = await asyncio.to_thread(_alerts_part, alert_store, since_event)
        print(f"{_fleet_line(fleet.counters())} | {_services_line(services)}{alerts}", flush=True)


def _alerts_part(alerts: AlertStore, since_event: int) -> str:
    """Alerts as the operator sees them in the alert list: open now; since the demo
    started, new alerts raised (each once), repeats (a live alert's condition seen
    again) and clears."""
    tally = alerts.tally(since_event)
    return (
        f" | alerts: {tally.live} open, {tally.raised} raised, {tally.repeats} repeats, "
        f"{tally.cleared} cleared"
    )


def _services_line(services: PharosServices) -> str:
    parts = []
    telemetry = services.telemetry
    if telemetry.ingest is not None:
        stats = telemetry.ingest.stats
        parts.append(f"ingest: {stats.points} points stored, {stats.dead_letters} dead letters")
    if telemetry.poller is not None:
        health = telemetry.poller.health().values()
        answering = sum(1 for meter in health if meter.healthy)
        parts.append(
            f"modbus: {telemetry.poller.counters().points} points, "
            f"{answering}/{len(health)} meters answering"
        )
    return " | ".join(parts)


def _fleet_line(counters: FleetCounters) -> str:
    return counters.progress_line()


async def _stop_after(seconds: float, stop: asyncio.Event) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):  # the run time asked for, not a synchronisation
            await stop.wait()
    stop.set()


def _print_banner(settings: Settings, api_key: str, scenario: Scenario, devices: int) -> None:
    base = f"http://{settings.api.host}:{settings.api.port}"
    start = scenario.start.strftime("%Y-%m-%d %H:%M %Z")
    config = shown_path(settings.data_dir / "demo" / SETTINGS_FILE)
    broker = settings.broker
    print(
        "\nPharos demo is up:\n"
        f"  API        {base}/docs   (OpenAPI, try it there)\n"
        f"  API key    {api_key}   (role admin; send as X-API-Key)\n"
        f"  broker     mqtt://{broker.host}:{broker.port}   (per-device accounts only; "
        f"pid file {shown_path(broker.pid_file or Path())})\n"
        f"  database   {settings.database.url}\n"
        f"  fleet      {devices} simulated devices of {scenario.name}, from {start}\n"
        f"  telemetry  {settings.influx.url or 'the embedded store'}\n"
        f"  example    curl -H 'X-API-Key: {api_key}' {base}/api/v1/telemetry/latest\n"
        f"  settings   {config}   (this demo's database, broker files and secrets)\n"
        f"  CLI        pharos --config {config} devices list   (any command, on this demo)\n"
        "Stop with Ctrl-C.",
        flush=True,
    )


__all__ = ["DemoOptions", "run_demo"]
