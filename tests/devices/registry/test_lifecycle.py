"""Only the transitions of the lifecycle are allowed; commissioning needs its checklist."""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import product

import pytest

from devices.registry.lifecycle import ALLOWED, Checklist, TransitionError, check_transition
from devices.registry.models import LifecycleState as S

DONE = Checklist(True, datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC))
EXPECTED = {
    (S.REGISTERED, S.INSTALLED), (S.INSTALLED, S.COMMISSIONED),
    (S.COMMISSIONED, S.IN_SERVICE), (S.COMMISSIONED, S.MAINTENANCE),
    (S.IN_SERVICE, S.MAINTENANCE), (S.MAINTENANCE, S.IN_SERVICE),
    (S.REGISTERED, S.DECOMMISSIONED), (S.INSTALLED, S.DECOMMISSIONED),
    (S.COMMISSIONED, S.DECOMMISSIONED), (S.IN_SERVICE, S.DECOMMISSIONED),
    (S.MAINTENANCE, S.DECOMMISSIONED),
}  # fmt: skip


def test_allowed_table_is_the_documented_one() -> None:
    assert {(a, b) for a, targets in ALLOWED.items() for b in targets} == EXPECTED


@pytest.mark.parametrize(("current", "target"), list(product(S, S)))
def test_every_pair(current: S, target: S) -> None:
    if (current, target) in EXPECTED:
        check_transition(current, target, DONE)
    else:
        with pytest.raises(TransitionError):
            check_transition(current, target, DONE)


def test_commissioning_names_each_missing_item() -> None:
    with pytest.raises(TransitionError) as caught:
        check_transition(S.INSTALLED, S.COMMISSIONED, Checklist(False, None, None))
    message = str(caught.value)
    for item in ("position_set", "first_telemetry_seen", "self_test_acknowledged"):
        assert item in message
    partly = Checklist(True, DONE.first_telemetry_at, None)
    with pytest.raises(TransitionError, match="self_test_acknowledged") as caught:
        check_transition(S.INSTALLED, S.COMMISSIONED, partly)
    assert "position_set" not in str(caught.value)
