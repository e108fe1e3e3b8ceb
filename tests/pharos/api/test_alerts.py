"""Alert routes: list and filter, history, acknowledge, comment, close; roles (both databases)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from pharos.apikeys import Role
from pharos.runtime import Runtime
from pharos_core.clock import SteppedClock
from rules.alerts import AlertStore
from rules.derived import DeviceFacts
from rules.engine import Transition
from rules.spec import parse_rule_text
from tests.pharos.api.conftest import AsRole

T0 = datetime(2026, 10, 22, 11, 0, tzinfo=UTC)
RULES = {
    r.id: r
    for r in parse_rule_text(
        "rules:\n"
        "  - {id: bd2, name: BĐ II, severity: major, when: {value: flood_level, above: 1.5}}\n"
        "  - {id: aqi-poor, name: AQI poor, when: {value: vn_aqi, above: 100}}\n"
    ).rules
}


def raise_alert(sessions: sessionmaker[Session], rule: str, device: str, district: str) -> int:
    facts = DeviceFacts(device, "flood_gauge", district)
    change = AlertStore(sessions).record_raise(
        Transition("raised", RULES[rule], facts, T0, 2.0, f"{rule} at {device}")
    )
    return change.alert.id


def test_list_and_filter(
    client: TestClient, as_role: AsRole, sessions: sessionmaker[Session]
) -> None:
    raise_alert(sessions, "bd2", "fg-nk-1", "Ninh Kiều")
    raise_alert(sessions, "bd2", "fg-cr-1", "Cái Răng")
    raise_alert(sessions, "aqi-poor", "env-nk-1", "Ninh Kiều")
    answer = client.get("/api/v1/alerts", headers=as_role(Role.VIEWER))
    assert answer.status_code == 200
    assert answer.json()["total"] == 3
    nk = client.get(
        "/api/v1/alerts", params={"district": "Ninh Kiều"}, headers=as_role(Role.VIEWER)
    ).json()
    assert sorted(a["device_id"] for a in nk["items"]) == ["env-nk-1", "fg-nk-1"]
    major = client.get(
        "/api/v1/alerts",
        params={"severity": "major", "live": True, "since": (T0 - timedelta(hours=1)).isoformat()},
        headers=as_role(Role.VIEWER),
    ).json()
    assert {a["rule_id"] for a in major["items"]} == {"bd2"}
    bad = client.get("/api/v1/alerts", params={"state": "melted"}, headers=as_role(Role.VIEWER))
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["query", "state"]
    assert client.get("/api/v1/alerts").status_code == 401


def test_acknowledge_comment_close_and_history(
    client: TestClient, as_role: AsRole, sessions: sessionmaker[Session]
) -> None:
    alert_id = raise_alert(sessions, "bd2", "fg-nk-1", "Ninh Kiều")
    url = f"/api/v1/alerts/{alert_id}"
    viewer = client.post(f"{url}/acknowledge", json={}, headers=as_role(Role.VIEWER))
    assert viewer.status_code == 403
    acked = client.post(f"{url}/acknowledge", json={"note": "seen"}, headers=as_role(Role.OPERATOR))
    assert acked.status_code == 200
    assert acked.json()["state"] == "acknowledged"
    assert acked.json()["acknowledged_by"] == "operator@cantho"
    again = client.post(f"{url}/acknowledge", json={}, headers=as_role(Role.OPERATOR))
    assert again.status_code == 409 and "acknowledged by operator@cantho" in again.json()["detail"]
    comment = client.post(
        f"{url}/comments", json={"text": "pump started"}, headers=as_role(Role.TECHNICIAN)
    )
    assert comment.status_code == 201
    assert comment.json()["events"][-1]["text"] == "pump started"
    empty = client.post(f"{url}/comments", json={"text": ""}, headers=as_role(Role.OPERATOR))
    assert empty.status_code == 422
    extra = client.post(f"{url}/close", json={"why": "x"}, headers=as_role(Role.OPERATOR))
    assert extra.status_code == 422
    closed = client.post(f"{url}/close", json={"note": "done"}, headers=as_role(Role.OPERATOR))
    assert closed.status_code == 200 and closed.json()["state"] == "closed"
    history = client.get(url, headers=as_role(Role.VIEWER)).json()
    assert [e["event"] for e in history["events"]] == [
        "raised",
        "acknowledged",
        "commented",
        "closed",
    ]
    assert client.get("/api/v1/alerts/999999", headers=as_role(Role.VIEWER)).status_code == 404


def test_acknowledge_and_close_are_stamped_on_the_process_clock(
    client: TestClient, runtime: Runtime, sessions: sessionmaker[Session], as_role: AsRole
) -> None:
    """The demo's clock runs ahead of the wall: history must stay in order with it."""
    alert_id = raise_alert(sessions, "bd2", "fg-clock", "Ninh Kiều")
    later = T0 + timedelta(hours=1)
    runtime.clock = SteppedClock(later)
    url = f"/api/v1/alerts/{alert_id}"
    acked = client.post(f"{url}/acknowledge", json={}, headers=as_role(Role.OPERATOR))
    assert acked.status_code == 200, acked.text
    assert datetime.fromisoformat(acked.json()["acknowledged_at"]) == later
    history = client.get(url, headers=as_role(Role.VIEWER)).json()["events"]
    times = [datetime.fromisoformat(event["at"]) for event in history]
    assert times == sorted(times) and times[-1] == later
