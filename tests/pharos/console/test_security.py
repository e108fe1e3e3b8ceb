"""Sessions, CSRF and roles without a browser: the signed cookie, a forged or expired
one, a revoked key, a missing or wrong CSRF token, the roles read from the API's routes,
and the console kept out of the API's OpenAPI."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from pharos.api.app import create_app
from pharos.apikeys import Role, create_api_key, revoke_api_key
from pharos.console.security import ConsoleSession, RoleRules, SessionCodec, allowed_roles
from pharos.database import upgrade
from pharos.runtime import Runtime, build_runtime
from pharos.settings import Settings


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    settings = Settings(data_dir=tmp_path, database={"url": f"sqlite:///{tmp_path / 'p.db'}"})
    built = build_runtime(settings)
    upgrade(built.engine)
    yield built
    built.close()


def key_for(runtime: Runtime, name: str, role: Role) -> str:
    with runtime.sessions() as session:
        key = create_api_key(session, name, role)
        session.commit()
    return key


def signed_in(client: TestClient, key: str) -> str:
    page = client.get("/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert csrf is not None
    answer = client.post(
        "/login",
        data={"csrf_token": csrf.group(1), "api_key": key, "next": "/"},
        follow_redirects=False,
    )
    assert answer.status_code == 303 and answer.headers["location"] == "/"
    home = client.get("/")
    token = re.search(r'name="csrf_token" value="([^"]+)"', home.text)
    assert token is not None
    return token.group(1)


def test_the_session_cookie_is_signed_and_ages_out() -> None:
    codec = SessionCodec("secret", max_age_s=60)
    cookie = codec.dumps(ConsoleSession("alice", "token"))
    assert codec.loads(cookie) == ConsoleSession("alice", "token")
    assert SessionCodec("other", 60).loads(cookie) is None
    assert codec.loads(cookie[:-2] + "xx") is None
    assert codec.loads("x" * 10_000) is None
    assert SessionCodec("secret", max_age_s=-1).loads(cookie) is None


def test_sign_in_sets_an_httponly_strict_cookie_and_a_revoked_key_ends_it(runtime: Runtime) -> None:
    key = key_for(runtime, "op", Role.OPERATOR)
    client = TestClient(create_app(runtime), headers={"Accept-Language": "en"})
    assert client.get("/", follow_redirects=False).headers["location"].startswith("/login")
    page = client.get("/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    wrong = client.post("/login", data={"csrf_token": csrf, "api_key": "phk_nope"})
    assert wrong.status_code == 401 and "Unknown or revoked" in wrong.text
    answer = client.post(
        "/login", data={"csrf_token": csrf, "api_key": key}, follow_redirects=False
    )
    cookie = answer.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    assert client.get("/alerts").status_code == 200
    with runtime.sessions() as session:
        revoke_api_key(session, "op")
        session.commit()
    assert client.get("/alerts", follow_redirects=False).status_code == 303


def test_a_form_without_the_sessions_csrf_token_is_refused(runtime: Runtime) -> None:
    key = key_for(runtime, "op", Role.OPERATOR)
    client = TestClient(create_app(runtime), headers={"Accept-Language": "en"})
    token = signed_in(client, key)
    assert client.post("/alerts/1/close", data={}).status_code == 403
    assert client.post("/alerts/1/close", data={"csrf_token": "forged"}).status_code == 403
    login_page = client.get("/login")  # another session's token does not fit this one
    assert client.post("/alerts/1/close", data={"csrf_token": token + "x"}).status_code == 403
    assert login_page.status_code == 200
    # The right token passes the check (and the store answers: no such alert).
    assert client.post("/alerts/1/close", data={"csrf_token": token}).status_code == 404
    assert client.post("/alerts/1/close", headers={"X-CSRF-Token": token}).status_code == 404


def test_roles_come_from_the_apis_own_checks(runtime: Runtime) -> None:
    app = create_app(runtime)
    rules = RoleRules(app)
    assert allowed_roles(rules, "program.save") == {Role.ENERGY_MANAGER, Role.ADMIN}
    assert allowed_roles(rules, "alert.comment") == {Role.OPERATOR, Role.TECHNICIAN, Role.ADMIN}
    assert allowed_roles(rules, "device.transition") == {Role.TECHNICIAN, Role.ADMIN}
    assert allowed_roles(rules, "override.create") == {Role.OPERATOR, Role.ADMIN}
    with pytest.raises(LookupError, match="no route"):
        rules.roles_for("POST", "/api/v1/nowhere")


def test_a_technician_may_not_save_a_program(runtime: Runtime) -> None:
    key = key_for(runtime, "tech", Role.TECHNICIAN)
    client = TestClient(create_app(runtime), headers={"Accept-Language": "en"})
    token = signed_in(client, key)
    answer = client.post(
        "/programs/default",
        data={"csrf_token": token, "step_kind": "at", "step_at": "18:00", "step_level": "5"},
    )
    assert answer.status_code == 403
    assert "energy_manager" in answer.text


def test_the_console_stays_out_of_the_api_schema_and_sends_no_cdn(runtime: Runtime) -> None:
    client = TestClient(create_app(runtime), headers={"Accept-Language": "en"})
    paths = client.get("/openapi.json").json()["paths"]
    assert all(path.startswith(("/api/", "/healthz", "/metrics")) for path in paths)
    page = client.get("/login")
    assert "http://" not in page.text and "https://" not in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert client.get("/console/static/htmx.min.js").status_code == 200


def test_next_after_sign_in_stays_on_this_site(runtime: Runtime) -> None:
    key = key_for(runtime, "op", Role.OPERATOR)
    app = create_app(runtime)
    for hostile in ("//evil.example/", "https://evil.example/", "/\\evil"):
        client = TestClient(app)
        page = client.get("/login")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
        answer = client.post(
            "/login",
            data={"csrf_token": csrf, "api_key": key, "next": hostile},
            follow_redirects=False,
        )
        assert answer.headers["location"] == "/"
