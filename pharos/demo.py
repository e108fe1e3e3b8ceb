"""The demo: a broker, a database and the API with a few Cần Thơ devices, on a bare machine.

Everything it needs is started here on embedded defaults: a Mosquitto from the
project's own configuration (on a free port, files under ``data_dir/demo``), the
SQLite registry, the sample field inventory, a backend broker account, an admin API
key, and the API. One device publishes a reading that the backend receives through
the broker's ACL, to show the path a real device takes.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import uvicorn
from paho.mqtt.enums import CallbackAPIVersion

from devices.registry.csv_import import import_devices
from devices.registry.db import utcnow
from devices.registry.service import DeviceFilter
from devices.wire import Channel, DeviceKind, device_topic
from devices.wire.topics import subscription
from pharos.apikeys import Role, create_api_key
from pharos.broker_process import MosquittoProcess, free_port
from pharos.database import upgrade
from pharos.runtime import Runtime, build_runtime
from pharos.settings import Settings

INVENTORY = Path(__file__).resolve().parents[1] / "examples" / "inventory-can-tho.csv"
BACKEND_ACCOUNT = "pharos-backend"


def run_demo(settings: Settings, *, duration: float | None = None) -> None:
    """Start everything, print how to reach it, serve until Ctrl-C or ``duration`` seconds."""
    workdir = (settings.data_dir / "demo").resolve()
    with MosquittoProcess(workdir / "broker", port=free_port()) as broker:
        settings = _with_broker(settings, broker)
        runtime = build_runtime(settings)
        try:
            upgrade(runtime.engine)
            api_key = _provision(runtime)
            _show_device_path(runtime, broker.port)
            _print_banner(settings, broker.port, api_key)
            _serve(runtime, duration)
        finally:
            runtime.close()


def _with_broker(settings: Settings, broker: MosquittoProcess) -> Settings:
    broker_settings = settings.broker.model_copy(
        update={
            "host": "127.0.0.1",
            "port": broker.port,
            "password_file": broker.password_file,
            "acl_file": broker.acl_file,
            "pid_file": broker.pid_file,
        }
    )
    return settings.model_copy(update={"broker": broker_settings})


def _provision(runtime: Runtime) -> str:
    """The sample inventory, a backend account and a fresh admin key; returns the key."""
    with runtime.registry("demo") as registry:
        outcome = import_devices(registry, INVENTORY.read_text(encoding="utf-8"))
        registry.ensure_service_account(BACKEND_ACCOUNT)
        api_key = create_api_key(
            registry.session, f"demo-admin-{utcnow():%Y%m%dT%H%M%S%f}", Role.ADMIN
        )
    print(
        f"inventory: {len(outcome.created)} created, {len(outcome.updated)} updated, "
        f"{len(outcome.unchanged)} unchanged ({INVENTORY.name})"
    )
    return api_key


def _show_device_path(runtime: Runtime, port: int) -> None:
    """One lamp publishes a reading; the backend account receives it through the ACL."""
    with runtime.registry("demo") as registry:
        backend = registry.ensure_service_account(BACKEND_ACCOUNT)
        lamps, _ = registry.list_devices(DeviceFilter(kind=DeviceKind.STREETLIGHT), limit=1)
        device = registry.rotate_credentials(lamps[0].id)
    subscribed, received = threading.Event(), threading.Event()
    backend_client = _client(backend.username, backend.secret)
    backend_client.on_subscribe = lambda *_: subscribed.set()
    backend_client.on_message = lambda *_: received.set()
    lamp_client = _client(device.username, device.secret)
    with _running(backend_client, port), _running(lamp_client, port):
        backend_client.subscribe(subscription(Channel.TELEMETRY), qos=1)
        if subscribed.wait(5):
            payload = b'{"seq": 1, "metrics": {"power_w": 88.5, "dim_level": 100, "lamp_on": true}}'
            topic = device_topic(device.username, Channel.TELEMETRY)
            lamp_client.publish(topic, payload, qos=1)
            received.wait(5)
    outcome = "received" if received.is_set() else "did NOT receive"
    print(
        f"broker: backend {outcome} telemetry from {device.username} (per-device credentials, ACL)"
    )


@contextlib.contextmanager
def _running(client: mqtt.Client, port: int) -> Iterator[None]:
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        yield
    finally:
        client.disconnect()
        client.loop_stop()


def _client(username: str, secret: str) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=username)
    client.username_pw_set(username, secret)
    return client


def _print_banner(settings: Settings, broker_port: int, api_key: str) -> None:
    base = f"http://{settings.api.host}:{settings.api.port}"
    print(
        "\nPharos demo is up:\n"
        f"  API        {base}/docs   (OpenAPI, try it there)\n"
        f"  API key    {api_key}   (role admin; send as X-API-Key)\n"
        f"  broker     mqtt://127.0.0.1:{broker_port}   (per-device accounts only)\n"
        f"  database   {settings.database.url}\n"
        f"  example    curl -H 'X-API-Key: {api_key}' {base}/api/v1/devices\n"
        "Stop with Ctrl-C.",
        flush=True,
    )


def _serve(runtime: Runtime, duration: float | None) -> None:
    from pharos.api.app import create_app

    settings = runtime.settings
    config = uvicorn.Config(
        create_app(runtime), host=settings.api.host, port=settings.api.port, log_level="warning"
    )
    server = uvicorn.Server(config)

    async def stop_after(seconds: float) -> None:
        await asyncio.sleep(seconds)  # the run time asked for, not a synchronisation
        server.should_exit = True

    async def serve_for() -> None:
        async with asyncio.TaskGroup() as tasks:
            serving = tasks.create_task(server.serve())
            timer = tasks.create_task(stop_after(duration)) if duration is not None else None
            await serving  # ends on Ctrl-C (uvicorn's handler) or when the timer stops it
            if timer is not None:
                timer.cancel()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_for())
