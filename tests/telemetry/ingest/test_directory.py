"""The device directory: tags from the registry, fresh devices found at once, misses remembered.

On SQLite and PostgreSQL (the first-group query is plain SQL on both).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from devices.registry.schemas import DeviceCreate, DeviceUpdate, GroupCreate
from devices.registry.service import registry_session
from telemetry.ingest import DeviceDirectory, DeviceInfo
from tests.fixtures import db
from tests.telemetry.ingest.conftest import eventually


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Both databases again (this package's conftest narrows the others to SQLite)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'pharos.db'}"
    else:
        yield from db._postgres_database(request.getfixturevalue("postgres_admin"))


def add(sessions: sessionmaker[Session], device_id: str, **fields: object) -> None:
    with registry_session(sessions, "test") as registry:
        data = {"id": device_id, "kind": "env_monitor", "name": device_id, **fields}
        registry.create_device(DeviceCreate.model_validate(data))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_tags_come_from_the_registry_with_the_first_group_by_id(
    sessions: sessionmaker[Session],
) -> None:
    with registry_session(sessions, "test") as registry:
        for group in ("street-b", "street-a"):
            registry.create_group(GroupCreate(id=group, name=group))
    add(sessions, "env-0001", district="Ninh Kiều", groups=["street-b", "street-a"])
    add(sessions, "sl-0001", kind="streetlight", rated_power_w=100)
    async with DeviceDirectory(sessions) as directory:
        assert len(directory) == 2
        assert directory.get("env-0001") == DeviceInfo(
            "env-0001", "env_monitor", "Ninh Kiều", "street-a"
        )
        lamp = directory.get("sl-0001")
        assert lamp == DeviceInfo("sl-0001", "streetlight", None, None)
        assert lamp.tags() == {"device_id": "sl-0001"}
        assert directory.get("env-0404") is None


async def test_a_new_device_is_found_by_lookup_and_a_miss_is_remembered(
    sessions: sessionmaker[Session],
) -> None:
    clock = Clock()
    async with DeviceDirectory(sessions, miss_retry_s=5, clock=clock) as directory:
        await directory.lookup(["env-0002"])
        assert directory.get("env-0002") is None
        add(sessions, "env-0002")
        await directory.lookup(["env-0002"])
        assert directory.get("env-0002") is None, "a miss is not asked again at once"
        clock.now += 5
        await directory.lookup(["env-0002"])
        assert directory.get("env-0002") == DeviceInfo("env-0002", "env_monitor")


async def test_refresh_picks_up_changed_districts(sessions: sessionmaker[Session]) -> None:
    add(sessions, "env-0003", district="Cái Răng")
    async with DeviceDirectory(sessions, refresh_interval_s=0.05) as directory:
        info = directory.get("env-0003")
        assert info is not None and info.district == "Cái Răng"
        with registry_session(sessions, "test") as registry:
            registry.update_device("env-0003", DeviceUpdate(district="Bình Thủy"))
        assert await eventually(lambda: directory.get("env-0003") != info)
        assert directory.get("env-0003") == DeviceInfo("env-0003", "env_monitor", "Bình Thủy")


async def test_the_directory_is_bounded(sessions: sessionmaker[Session]) -> None:
    for n in range(5):
        add(sessions, f"env-{n:04d}")
    async with DeviceDirectory(sessions, max_devices=3) as directory:
        assert len(directory) == 3
        await directory.lookup(["env-0004"])
        assert len(directory) == 3
        assert directory.get("env-0004") is not None, "a reporting device takes a place"
