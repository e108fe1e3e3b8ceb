"""Rules' commands through control's command service: overrides stored, lamps at 100 %."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from control.models import OverrideRow
from pharos.broker_process import MosquittoProcess
from pharos_core.clock import SteppedClock
from rules.control_port import ControlCommands
from tests.control.helpers import command_service, lamp_models, register_lamps, wait_reported
from tests.firmware_sim.test_mqtt_device import Accounts, open_accounts, running

pytestmark = pytest.mark.broker
START = datetime(2026, 10, 22, 15, 0, tzinfo=UTC)  # 22:00 in Cần Thơ: the program says 70 %


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'pharos.db'}"


@pytest.fixture
def accounts(mosquitto: MosquittoProcess) -> Iterator[Accounts]:
    yield from open_accounts(mosquitto)


async def test_an_override_action_is_a_control_override_and_reaches_the_lamps(
    accounts: Accounts, sessions: sessionmaker[Session]
) -> None:
    ids = [f"sl-nk-{n:02d}" for n in range(4)]
    register_lamps(sessions, "ninh-kieu", ids)
    models = lamp_models(ids)
    clock = SteppedClock(START)
    replans: list[bool] = []
    async with (
        running(accounts, models, clock),
        command_service(accounts, sessions, clock) as service,
    ):
        await wait_reported(service, lambda states: all(i in states for i in ids))
        port = ControlCommands(service, sessions, clock, plan_changed=lambda: replans.append(True))
        sent = await port.send_command(
            ids, "override", {"level": 100, "minutes": 480}, reason="flood-bd2 raised"
        )
        assert sent == 4
        # Each lamp reports its new state once it obeys: wait on the reports.
        await wait_reported(
            service, lambda states: all(states[i].get("dim_level") == 100 for i in ids)
        )
        assert all(m.output_level(clock.now()) == 100 for m in models)
    assert replans == [True]
    with sessions() as session:
        rows = session.scalars(select(OverrideRow)).all()
    assert sorted(r.target_id for r in rows) == ids
    assert all(r.level == 100 and r.created_by == "rules" for r in rows)
