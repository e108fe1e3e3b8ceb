"""Rule routes: list, check with line-numbered errors, backtest over the embedded store."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fastapi.testclient import TestClient

from pharos.apikeys import Role
from pharos.runtime import Runtime
from telemetry.points import Point
from telemetry.store import EmbeddedStore
from tests.pharos.api.conftest import AsRole

T0 = datetime(2026, 10, 22, 10, 0, tzinfo=UTC)
RULE = (
    "rules:\n  - {id: high, name: high, scope: {kind: flood_gauge},"
    " when: {value: water_level_m, above: 1.8}}\n"
)


def test_list_the_shipped_rules_and_check_a_file(client: TestClient, as_role: AsRole) -> None:
    listed = client.get("/api/v1/rules", headers=as_role(Role.VIEWER))
    assert listed.status_code == 200
    assert listed.json()["running"] is False
    assert "flood-bd2" in {r["id"] for r in listed.json()["rules"]}
    ok = client.post("/api/v1/rules/check", json={"yaml": RULE}, headers=as_role(Role.OPERATOR))
    assert ok.status_code == 200 and ok.json() == {"rules": ["high"]}
    bad = client.post(
        "/api/v1/rules/check",
        json={"yaml": RULE.replace("above: 1.8", "above: high")},
        headers=as_role(Role.OPERATOR),
    )
    assert bad.status_code == 422
    problem = bad.json()["detail"][0]
    assert problem["line"] == 2 and problem["field"] == "rules[0].when.above"
    assert "valid number" in problem["msg"]
    denied = client.post("/api/v1/rules/check", json={"yaml": RULE}, headers=as_role(Role.VIEWER))
    assert denied.status_code == 403
    reload = client.post("/api/v1/rules/reload", headers=as_role(Role.OPERATOR))
    assert reload.status_code == 503


def test_backtest_over_stored_history(
    client: TestClient, as_role: AsRole, runtime: Runtime, tmp_path: Path
) -> None:
    store = EmbeddedStore(tmp_path / "ts.db")
    runtime.timeseries = store
    levels = [1.7, 1.75, 1.82, 1.85, 1.79, 1.7]
    points = [
        Point("flood_gauge", {"device_id": "fg-1"}, {"water_level_m": v}, T0 + timedelta(minutes=i))
        for i, v in enumerate(levels)
    ]
    asyncio.run(store.write(points))
    body = {
        "start": T0.isoformat(),
        "end": (T0 + timedelta(hours=1)).isoformat(),
        "yaml": RULE,
    }
    answer = client.post("/api/v1/rules/backtest", json=body, headers=as_role(Role.OPERATOR))
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["readings"] == 6 and result["devices"] == 1
    [alert] = result["alerts"]
    assert alert["device_id"] == "fg-1"
    assert alert["raised_at"] == (T0 + timedelta(minutes=2)).isoformat().replace("+00:00", "Z")
    assert alert["cleared_at"] == (T0 + timedelta(minutes=4)).isoformat().replace("+00:00", "Z")
    long = {**body, "end": (T0 + timedelta(days=40)).isoformat()}
    assert (
        client.post("/api/v1/rules/backtest", json=long, headers=as_role(Role.OPERATOR)).status_code
        == 422
    )
