"""Telemetry routes: history and latest values, the twin, dead letters, and ``/metrics``.

The app reads a real embedded store (its answers match InfluxDB's: see
``tests/telemetry/store/test_equivalence.py``) and the real registry database.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from devices.registry.schemas import DeviceCreate, GroupCreate
from devices.wire import DeviceState, DeviceStatus
from pharos.api.routes.metrics import render
from pharos.apikeys import Role
from pharos.broker_process import free_port
from pharos.runtime import Runtime
from telemetry.deadletters import DeadLetterStore
from telemetry.metrics import TelemetryMetrics
from telemetry.points import DeadLetter, Point
from telemetry.store import EmbeddedStore, InfluxStore, registry_group_members
from telemetry.twin import DeviceTwinStore
from tests.pharos.api.conftest import PAGE_SIZE_MAX, AsRole, errors_at

T0 = datetime(2026, 11, 22, 18, 0, tzinfo=UTC)
WINDOW = {"start": T0.isoformat(), "end": (T0 + timedelta(hours=1)).isoformat()}
PM25 = {"metric": "pm25", **WINDOW}


def env(device_id: str, seconds: int, pm25: float, district: str = "Ninh Kiều") -> Point:
    return Point(
        "env_monitor",
        {"device_id": device_id, "district": district},
        {"seq": seconds, "pm25": pm25, "pm10": pm25 * 2},
        T0 + timedelta(seconds=seconds),
    )


def lamp(device_id: str, seconds: int, on: bool) -> Point:
    return Point(
        "streetlight",
        {"device_id": device_id, "district": "Cái Răng"},
        {"lamp_on": on, "power_w": 90.0 if on else 0.0},
        T0 + timedelta(seconds=seconds),
    )


@pytest.fixture
def store(runtime: Runtime, tmp_path: Path) -> EmbeddedStore:
    """A fleet in the registry and readings in an embedded store the app reads."""
    with runtime.registry("tech") as registry:
        registry.create_group(GroupCreate(id="riverside", name="Bờ sông"))
        for device_id, district, groups in (
            ("env-0001", "Ninh Kiều", ["riverside"]),
            ("env-0002", "Ninh Kiều", []),
            ("env-0003", "Cái Răng", ["riverside"]),
        ):
            fields = {"id": device_id, "kind": "env_monitor", "name": device_id}
            registry.create_device(
                DeviceCreate.model_validate(fields | {"district": district, "groups": groups})
            )
        registry.create_device(
            DeviceCreate.model_validate(
                {"id": "sl-0001", "kind": "streetlight", "name": "lamp", "rated_power_w": 90}
            )
        )
    store = EmbeddedStore(
        tmp_path / "timeseries.db", group_members=registry_group_members(runtime.sessions)
    )
    points = [env("env-0001", s, 10.0 + s / 60) for s in range(0, 1800, 60)]
    points += [env("env-0002", 30, 55.0), env("env-0003", 45, 70.0, "Cái Răng")]
    points += [lamp("sl-0001", s, on=s % 120 == 0) for s in range(0, 600, 60)]
    asyncio.run(store.write(points))
    setattr(runtime, "timeseries", store)  # what the composition root wires  # noqa: B010
    return store


def get(client: TestClient, as_role: AsRole, url: str, **params: Any) -> Any:
    response = client.get(url, params=params, headers=as_role(Role.VIEWER))
    assert response.status_code == 200, response.text
    return response.json()


# -- history and latest ----------------------------------------------------------------


@pytest.mark.usefixtures("store")
def test_history_of_a_device_metric(client: TestClient, as_role: AsRole) -> None:
    body = get(
        client,
        as_role,
        "/api/v1/devices/env-0001/telemetry",
        metric="pm25",
        interval="10m",
        aggregate="max",
        **WINDOW,
    )
    # Readings every minute for 30 minutes, pm25 = 10 + minutes: max of each 10 minutes.
    assert [(b["time"], b["value"]) for b in body["buckets"]] == [
        ("2026-11-22T18:00:00Z", 19.0),
        ("2026-11-22T18:10:00Z", 29.0),
        ("2026-11-22T18:20:00Z", 39.0),
    ]
    assert (body["metric"], body["aggregate"], body["interval_s"]) == ("pm25", "max", 600)


@pytest.mark.usefixtures("store")
def test_history_defaults_to_hourly_means_of_the_last_day(
    client: TestClient, as_role: AsRole
) -> None:
    body = get(client, as_role, "/api/v1/devices/env-0001/telemetry", metric="pm25")
    assert (body["aggregate"], body["interval_s"]) == ("mean", 3600)
    end, start = (datetime.fromisoformat(body[k]) for k in ("end", "start"))
    assert end - start == timedelta(days=1)
    assert abs(datetime.now(UTC) - end) < timedelta(minutes=1)


@pytest.mark.usefixtures("store")
def test_without_metric_the_devices_latest_values(client: TestClient, as_role: AsRole) -> None:
    body = get(client, as_role, "/api/v1/devices/env-0002/telemetry")
    assert {(v["device_id"], v["metric"], v["value"]) for v in body["items"]} == {
        ("env-0002", "pm25", 55.0),
        ("env-0002", "pm10", 110.0),
        ("env-0002", "seq", 30.0),
    }


@pytest.mark.usefixtures("store")
def test_latest_by_kind_district_group_and_metric(client: TestClient, as_role: AsRole) -> None:
    url = "/api/v1/telemetry/latest"

    def devices(**params: Any) -> set[str]:
        return {v["device_id"] for v in get(client, as_role, url, **params)["items"]}

    assert devices() == {"env-0001", "env-0002", "env-0003", "sl-0001"}
    assert devices(kind="streetlight") == {"sl-0001"}
    assert devices(district="Ninh Kiều") == {"env-0001", "env-0002"}
    assert devices(group="riverside") == {"env-0001", "env-0003"}
    body = get(client, as_role, url, metric=["pm25", "lamp_on"])
    assert {(v["device_id"], v["metric"]) for v in body["items"]} == {
        ("env-0001", "pm25"),
        ("env-0002", "pm25"),
        ("env-0003", "pm25"),
        ("sl-0001", "lamp_on"),
    }
    (lamp_on,) = [v for v in body["items"] if v["metric"] == "lamp_on"]
    assert lamp_on["value"] is False and lamp_on["time"] == "2026-11-22T18:09:00Z"


@pytest.mark.usefixtures("store")
@pytest.mark.parametrize(
    ("params", "loc"),
    [
        ({**PM25, "end": T0.isoformat()}, ("query", "end")),
        ({**PM25, "start": "2026-11-22T18:00:00"}, ("query", "start")),  # no offset
        ({**PM25, "interval": "500ms"}, ("query", "interval")),
        ({**PM25, "interval": "0s"}, ("query", "interval")),
        ({**PM25, "interval": "1s", "end": "2026-11-25T00:00:00Z"}, ("query", "interval")),
        ({**PM25, "aggregate": "median"}, ("query", "aggregate")),
        ({**PM25, "metric": "power_w"}, ("query", "metric")),
    ],
)  # fmt: skip
def test_bad_history_parameters_are_422_naming_the_field(
    client: TestClient, as_role: AsRole, params: dict[str, str], loc: tuple[str, ...]
) -> None:
    response = client.get(
        "/api/v1/devices/env-0001/telemetry", params=params, headers=as_role(Role.VIEWER)
    )
    assert response.status_code == 422, response.text
    assert errors_at(response.json()) == [loc]


@pytest.mark.usefixtures("store")
def test_mean_of_a_boolean_metric_is_422_on_aggregate(client: TestClient, as_role: AsRole) -> None:
    params = {"metric": "lamp_on", "aggregate": "mean", **WINDOW}
    response = client.get(
        "/api/v1/devices/sl-0001/telemetry", params=params, headers=as_role(Role.VIEWER)
    )
    assert response.status_code == 422
    assert errors_at(response.json()) == [("query", "aggregate")]
    assert "boolean" in response.json()["detail"][0]["msg"]
    params["aggregate"] = "max"
    assert get(client, as_role, "/api/v1/devices/sl-0001/telemetry", **params)["buckets"]


@pytest.mark.usefixtures("store")
@pytest.mark.parametrize(
    ("params", "loc"),
    [
        ({"group": "no-such-group"}, ("query", "group")),
        ({"district": "Quận 1"}, ("query", "district")),
        ({"kind": "teapot"}, ("query", "kind")),
        ({"kind": "streetlight", "metric": "pm25"}, ("query", "metric")),
    ],
)
def test_bad_latest_parameters_are_422_naming_the_field(
    client: TestClient, as_role: AsRole, params: dict[str, str], loc: tuple[str, ...]
) -> None:
    response = client.get("/api/v1/telemetry/latest", params=params, headers=as_role(Role.VIEWER))
    assert response.status_code == 422, response.text
    assert errors_at(response.json()) == [loc]


@pytest.mark.usefixtures("store")
def test_unknown_device_is_404(client: TestClient, as_role: AsRole) -> None:
    for path in ("telemetry", "twin"):
        response = client.get(f"/api/v1/devices/nope-1/{path}", headers=as_role(Role.VIEWER))
        assert response.status_code == 404
        assert response.json() == {"detail": "no device 'nope-1'"}


@pytest.mark.usefixtures("store")
@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/devices/env-0001/telemetry",
        "/api/v1/telemetry/latest",
        "/api/v1/devices/env-0001/twin",
        "/api/v1/dead-letters",
    ],
)
def test_every_telemetry_route_needs_a_key(client: TestClient, url: str) -> None:
    response = client.get(url)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert client.get(url, headers={"X-API-Key": "phk_not-a-key"}).status_code == 401


def test_an_unreachable_store_is_503(client: TestClient, as_role: AsRole, runtime: Runtime) -> None:
    setattr(runtime, "timeseries", InfluxStore(f"http://127.0.0.1:{free_port()}", "pharos"))  # noqa: B010
    response = client.get("/api/v1/telemetry/latest", headers=as_role(Role.VIEWER))
    assert response.status_code == 503
    assert "unreachable" in response.json()["detail"]


def test_without_a_store_telemetry_is_503(client: TestClient, as_role: AsRole) -> None:
    response = client.get("/api/v1/telemetry/latest", headers=as_role(Role.VIEWER))
    assert response.status_code == 503
    assert response.json() == {"detail": "no time-series store configured"}


# -- twin ------------------------------------------------------------------------------


@pytest.mark.usefixtures("store")
def test_twin_shows_status_last_values_and_reported_state(
    client: TestClient, as_role: AsRole, runtime: Runtime
) -> None:
    async def report() -> None:
        twin = DeviceTwinStore(runtime.sessions)
        await twin.record_status("env-0001", DeviceStatus.ONLINE, T0)
        await twin.record_points([env("env-0001", 60, 41.5)])
        await twin.record_state("env-0001", DeviceState(fw="1.2.0", interval_s=60), T0)
        await twin.flush()

    asyncio.run(report())
    body = get(client, as_role, "/api/v1/devices/env-0001/twin")
    assert body == {
        "device_id": "env-0001",
        "online": True,
        "status_changed_at": "2026-11-22T18:00:00Z",
        "last_seen_at": "2026-11-22T18:01:00Z",
        "last_values": {
            "pm10": {"value": 83.0, "at": "2026-11-22T18:01:00Z"},
            "pm25": {"value": 41.5, "at": "2026-11-22T18:01:00Z"},
        },
        "reported_state": {"fw": "1.2.0", "interval_s": 60},
        "reported_at": "2026-11-22T18:00:00Z",
    }
    quiet = get(client, as_role, "/api/v1/devices/env-0002/twin")
    assert quiet["online"] is None and quiet["last_values"] == {}


# -- dead letters ----------------------------------------------------------------------


def put_letters(runtime: Runtime) -> None:
    letters = [
        DeadLetter(T0, "mqtt", "payload: not valid JSON", "env-0001", "t/1", b"{oops"),
        DeadLetter(T0, "mqtt", "unknown device", "ghost-1", "t/2", b"{}"),
        DeadLetter(T0, "modbus", "timeout: no reply", "em-0001", None, b""),
    ]
    asyncio.run(DeadLetterStore(runtime.sessions).put(letters))


def test_dead_letters_for_the_roles_that_fix_things(
    client: TestClient, as_role: AsRole, runtime: Runtime
) -> None:
    put_letters(runtime)
    for role in (Role.VIEWER, Role.ENERGY_MANAGER):
        response = client.get("/api/v1/dead-letters", headers=as_role(role))
        assert response.status_code == 403
        assert "operator" in response.json()["detail"]
    for role in (Role.OPERATOR, Role.TECHNICIAN, Role.ADMIN):
        response = client.get("/api/v1/dead-letters", headers=as_role(role))
        assert response.status_code == 200
        assert response.json()["total"] == 3


def test_dead_letters_filter_page_and_count(
    client: TestClient, as_role: AsRole, runtime: Runtime
) -> None:
    put_letters(runtime)
    headers = as_role(Role.OPERATOR)
    body = client.get("/api/v1/dead-letters", params={"source": "mqtt"}, headers=headers).json()
    assert body["total"] == 2 and body["by_reason"] == {"payload": 1, "unknown device": 1}
    assert {i["device_id"] for i in body["items"]} == {"env-0001", "ghost-1"}
    one = client.get(
        "/api/v1/dead-letters", params={"device_id": "env-0001", "limit": 1}, headers=headers
    ).json()
    (item,) = one["items"]
    assert (item["payload_preview"], item["payload_base64"]) == ("{oops", "e29vcHM=")
    assert (one["offset"], one["limit"]) == (0, 1)


@pytest.mark.parametrize(
    ("params", "loc"),
    [
        ({"source": "carrier-pigeon"}, ("query", "source")),
        ({"limit": PAGE_SIZE_MAX + 1}, ("query", "limit")),
        ({"offset": -1}, ("query", "offset")),
    ],
)
def test_bad_dead_letter_parameters_are_422(
    client: TestClient, as_role: AsRole, params: dict[str, Any], loc: tuple[str, ...]
) -> None:
    response = client.get("/api/v1/dead-letters", params=params, headers=as_role(Role.OPERATOR))
    assert response.status_code == 422
    assert errors_at(response.json()) == [loc]


# -- /metrics --------------------------------------------------------------------------


def test_metrics_exposes_the_runtimes_counters_without_a_key(
    client: TestClient, runtime: Runtime
) -> None:
    metrics = TelemetryMetrics(received=12, invalid=2, written=9, spooled=1, lag_seconds=0.25)
    setattr(runtime, "telemetry_metrics", metrics)  # what the composition root wires  # noqa: B010
    response = client.get("/metrics")
    assert response.status_code == 200, "wire metrics.router into create_app"
    assert response.headers["content-type"].startswith("text/plain")
    lines = response.text.splitlines()
    assert "pharos_telemetry_received_total 12.0" in lines
    assert "pharos_telemetry_invalid_total 2.0" in lines
    assert "pharos_telemetry_written_total 9.0" in lines
    assert "pharos_telemetry_spooled_total 1.0" in lines
    assert "pharos_telemetry_lag_seconds 0.25" in lines
    metrics.received += 5  # the services count on; the next scrape shows it
    assert "pharos_telemetry_received_total 17.0" in client.get("/metrics").text.splitlines()


def test_metrics_never_touch_the_global_registry() -> None:
    first, second = TelemetryMetrics(written=1), TelemetryMetrics(written=2)
    assert b"pharos_telemetry_written_total 1.0" in render(first)
    assert b"pharos_telemetry_written_total 2.0" in render(second)
    assert render(None) == b""
    names = {m.name for m in REGISTRY.collect()}
    assert not any(name.startswith("pharos_") for name in names)
