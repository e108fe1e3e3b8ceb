"""The application shell: ``/healthz`` without a key, and the OpenAPI document."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import Message, Receive, Scope, Send

from devices.registry.db import make_engine, make_session_factory
from pharos.api import create_app
from pharos.apikeys import Role
from pharos.runtime import Runtime
from tests.pharos.api.conftest import BrokerFiles, make_runtime, streetlight


def test_healthz_answers_ok_without_a_key(client: TestClient) -> None:
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_healthz_is_503_when_the_database_is_unreachable(
    tmp_path: Path, broker_files: BrokerFiles
) -> None:
    # SQLite cannot open a file in a directory that does not exist.
    engine = make_engine(f"sqlite:///{tmp_path / 'missing-dir' / 'pharos.db'}")
    sessions: sessionmaker[Session] = make_session_factory(engine)
    try:
        with TestClient(create_app(make_runtime(engine, sessions, broker_files))) as client:
            response = client.get("/healthz")
    finally:
        engine.dispose()

    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "detail": "database unreachable"}


def test_openapi_describes_the_api_and_its_keys(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()

    assert spec["info"]["title"] == "Pharos"
    assert spec["info"]["version"]
    schemes = spec["components"]["securitySchemes"]
    assert schemes["APIKeyHeader"] == {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    assert schemes["HTTPBearer"]["scheme"] == "bearer"
    assert {"/healthz", "/api/v1/devices", "/api/v1/devices/import", "/api/v1/groups/{group_id}",
            "/api/v1/audit"} <= set(spec["paths"])  # fmt: skip
    upload = spec["paths"]["/api/v1/devices/import"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in upload


def test_the_commit_happens_before_the_response_starts(
    runtime: Runtime, keys: dict[Role, str]
) -> None:
    events: list[str] = []
    event.listen(runtime.sessions, "after_commit", lambda _session: events.append("commit"))
    app = create_app(runtime)

    async def recording_app(scope: Scope, receive: Receive, send: Send) -> None:
        async def recording_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                events.append("response")
            await send(message)

        await app(scope, receive, recording_send)

    with TestClient(recording_app) as client:
        response = client.post(
            "/api/v1/devices", json=streetlight(), headers={"X-API-Key": keys[Role.TECHNICIAN]}
        )

    assert response.status_code == 201
    # Committed (and the broker files synced) before the client hears 201.
    assert events == ["commit", "response"]
