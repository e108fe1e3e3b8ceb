"""Control test fixtures: broker accounts (devices and the command service's own)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pharos.broker_process import MosquittoProcess
from tests.firmware_sim.test_mqtt_device import Accounts, open_accounts


@pytest.fixture
def accounts(mosquitto: MosquittoProcess) -> Iterator[Accounts]:
    yield from open_accounts(mosquitto)
