"""Push against a local HTTP server that records requests (tests/grafana/fake_grafana.py).

No real Grafana was reached by these tests: none can be installed here.
"""

from __future__ import annotations

import pytest

from grafana.boards import BOARDS
from grafana.push import PushError, push
from pharos.broker_process import free_port
from tests.grafana.fake_grafana import TOKEN, FakeGrafana


def test_push_creates_one_folder_per_domain_and_saves_every_board(
    grafana: tuple[FakeGrafana, str],
) -> None:
    state, url = grafana
    report = push(url, TOKEN, org_id=3)
    assert sorted(state.folders) == sorted(b.folder_uid for b in BOARDS)
    assert sorted(state.folders.values()) == sorted(b.folder for b in BOARDS)
    assert sorted(report.folders_created) == sorted(state.folders)
    for board in BOARDS:
        saved = state.dashboards[board.uid]
        assert saved["folderUid"] == board.folder_uid
        assert saved["overwrite"] is True
        assert "id" not in saved["dashboard"]
        assert saved["dashboard"]["title"].startswith("IOC · ")
    assert {h["x-grafana-org-id"] for _, _, h, _ in state.requests} == {"3"}


def test_a_second_push_overwrites_by_uid_and_creates_nothing(
    grafana: tuple[FakeGrafana, str],
) -> None:
    state, url = grafana
    push(url, TOKEN)
    first = len(state.requests)
    report = push(url, TOKEN)
    assert report.folders_created == []
    assert len(state.dashboards) == len(BOARDS)
    assert set(state.versions.values()) == {2}
    again = state.requests[first:]
    assert [m for m, p, _, _ in again if p == "/api/folders"] == []  # no create the 2nd time
    assert len([p for _, p, _, _ in again if p == "/api/dashboards/db"]) == len(BOARDS)


def test_a_bad_token_is_a_clear_error(grafana: tuple[FakeGrafana, str]) -> None:
    state, url = grafana
    with pytest.raises(PushError, match=r"refused the token \(401 Unauthorized\)"):
        push(url, "wrong")
    assert state.dashboards == {}


def test_a_token_without_the_role_is_a_clear_error(grafana: tuple[FakeGrafana, str]) -> None:
    state, url = grafana
    state.forbid_writes = True
    with pytest.raises(PushError, match=r"403 Forbidden.*Editor role"):
        push(url, TOKEN)


def test_an_unreachable_grafana_is_a_clear_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(PushError, match=f"Grafana at {url} is unreachable"):
        push(url, TOKEN, timeout_s=2)
