"""API test fixtures: a real app around a real database (SQLite and PostgreSQL).

The broker files go to ``tmp_path`` with no pid file, so no broker is needed: the
tests read the password file Pharos writes, as Mosquitto would.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from devices.broker import BrokerAccessWriter
from devices.registry.db import transaction
from pharos.api import create_app
from pharos.apikeys import Role, create_api_key
from pharos.runtime import Runtime
from pharos.settings import ApiSettings, BrokerSettings, DatabaseSettings, Settings

PAGE_SIZE_MAX = 50


def key_name(role: Role) -> str:
    return f"{role.value}@cantho"


@dataclass(frozen=True)
class BrokerFiles:
    password_file: Path
    acl_file: Path

    def usernames(self) -> list[str]:
        """Usernames in the password file, or none while it was never written."""
        if not self.password_file.exists():
            return []
        lines = self.password_file.read_text(encoding="utf-8").splitlines()
        return [line.split(":", 1)[0] for line in lines if line]

    def hash_of(self, username: str) -> str | None:
        if not self.password_file.exists():
            return None
        for line in self.password_file.read_text(encoding="utf-8").splitlines():
            name, _, hashed = line.partition(":")
            if name == username:
                return hashed
        return None


@pytest.fixture
def broker_files(tmp_path: Path) -> BrokerFiles:
    return BrokerFiles(tmp_path / "mosquitto" / "passwd", tmp_path / "mosquitto" / "acl")


def make_runtime(
    engine: Engine, sessions: sessionmaker[Session], broker_files: BrokerFiles
) -> Runtime:
    settings = Settings(
        database=DatabaseSettings(url=engine.url.render_as_string(hide_password=False)),
        broker=BrokerSettings(
            password_file=broker_files.password_file, acl_file=broker_files.acl_file, pid_file=None
        ),
        api=ApiSettings(page_size_max=PAGE_SIZE_MAX),
    )
    writer = BrokerAccessWriter(broker_files.password_file, broker_files.acl_file, None)
    return Runtime(settings=settings, engine=engine, sessions=sessions, broker_writer=writer)


@pytest.fixture
def runtime(engine: Engine, sessions: sessionmaker[Session], broker_files: BrokerFiles) -> Runtime:
    return make_runtime(engine, sessions, broker_files)


@pytest.fixture
def keys(sessions: sessionmaker[Session]) -> dict[Role, str]:
    """One live API key per role, named ``<role>@cantho``."""
    with transaction(sessions) as session:
        return {role: create_api_key(session, key_name(role), role) for role in Role}


@pytest.fixture
def client(runtime: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(runtime)) as test_client:
        yield test_client


AsRole = Callable[[Role], dict[str, str]]


@pytest.fixture
def as_role(keys: dict[Role, str]) -> AsRole:
    """The headers that authenticate as ``role``."""
    return lambda role: {"X-API-Key": keys[role]}


def streetlight(device_id: str = "sl-0001", **fields: Any) -> dict[str, Any]:
    return {
        "id": device_id,
        "kind": "streetlight",
        "name": "Đèn đường Hòa Bình",
        "district": "Ninh Kiều",
        "street": "Đại lộ Hòa Bình",
        "rated_power_w": 120,
        **fields,
    }


def energy_meter(device_id: str = "em-0001", **fields: Any) -> dict[str, Any]:
    return {
        "id": device_id,
        "kind": "energy_meter",
        "name": "Công tơ tủ điện Hòa Bình",
        "district": "Ninh Kiều",
        "modbus_host": "10.20.0.5",
        **fields,
    }


def errors_at(body: dict[str, Any]) -> list[tuple[str, ...]]:
    """The ``loc`` of each error in a FastAPI-shaped 422."""
    return [tuple(str(p) for p in error["loc"]) for error in body["detail"]]
