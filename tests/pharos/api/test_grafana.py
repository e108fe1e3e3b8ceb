"""Embed links and the board list over the API (real app, SQLite and PostgreSQL)."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from fastapi.testclient import TestClient

from grafana.boards import BOARDS
from grafana.settings import GrafanaSettings
from pharos.apikeys import Role
from pharos.runtime import Runtime
from tests.pharos.api.conftest import AsRole

PUBLIC = "https://ioc.cantho.gov.vn/grafana"


def with_public_url(runtime: Runtime) -> None:
    runtime.settings.grafana = GrafanaSettings(public_url=PUBLIC, org_id=2)  # type: ignore[arg-type]


def test_boards_list_their_panels(client: TestClient, as_role: AsRole) -> None:
    response = client.get("/api/v1/grafana/boards", headers=as_role(Role.VIEWER))
    assert response.status_code == 200, response.text
    boards = response.json()
    assert [b["uid"] for b in boards] == [b.uid for b in BOARDS]
    flood = next(b for b in boards if b["uid"] == "ioc-flood")
    assert flood["folder"] == "Flood"
    assert flood["variables"] == ["district", "device"]
    assert flood["panels"][0] == {"id": 1, "title": "River level against BĐ I / II / III"}


def test_embed_gives_a_locked_d_solo_url(
    client: TestClient, as_role: AsRole, runtime: Runtime
) -> None:
    with_public_url(runtime)
    response = client.get(
        "/api/v1/grafana/embed",
        params={
            "board": "ioc-flood",
            "panel": "Rain per hour",
            "from": "now-6h",
            "theme": "light",
            "district": "Ninh Kiều",
        },
        headers=as_role(Role.VIEWER),
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["board"], body["panel_id"], body["panel_title"]) == (
        "ioc-flood",
        4,
        "Rain per hour",
    )
    url = urlsplit(body["url"])
    assert f"{url.scheme}://{url.netloc}{url.path}" == f"{PUBLIC}/d-solo/ioc-flood/ioc-flood"
    query = parse_qs(url.query, keep_blank_values=True)
    assert query["orgId"] == ["2"] and query["panelId"] == ["4"]
    assert (query["from"], query["to"], query["theme"]) == (["now-6h"], ["now"], ["light"])
    assert query["var-district"] == ["Ninh Kiều"]
    assert query["var-device"] == ["$__all"]  # not given: locked to All
    assert query["kiosk"] == [""]
    assert query["_dash.hideVariables"] == ["true"]
    assert query["_dash.hideTimePicker"] == ["true"]
    assert query["timezone"] == ["Asia/Ho_Chi_Minh"]


def test_embed_errors_name_the_field(client: TestClient, as_role: AsRole, runtime: Runtime) -> None:
    with_public_url(runtime)
    cases = {
        ("ioc-nope", "1", None): "board",
        ("ioc-flood", "99", None): "panel",
        ("ioc-flood", "1", ("kind", "streetlight")): "kind",
        ("ioc-flood", "1", ("from", "yesterday")): "from",
    }
    for (board, panel, extra), field in cases.items():
        params = {"board": board, "panel": panel} | (dict([extra]) if extra else {})
        response = client.get("/api/v1/grafana/embed", params=params, headers=as_role(Role.VIEWER))
        assert response.status_code == 422, (params, response.text)
        assert response.json()["detail"][0]["loc"] == ["query", field], response.text


def test_embed_without_a_public_url_is_409(client: TestClient, as_role: AsRole) -> None:
    response = client.get(
        "/api/v1/grafana/embed",
        params={"board": "ioc-flood", "panel": "1"},
        headers=as_role(Role.VIEWER),
    )
    assert response.status_code == 409
    assert "PHAROS_GRAFANA__PUBLIC_URL" in response.json()["detail"]


def test_grafana_routes_need_a_key(client: TestClient) -> None:
    for url in ("/api/v1/grafana/boards", "/api/v1/grafana/embed?board=ioc-flood&panel=1"):
        assert client.get(url).status_code == 401
