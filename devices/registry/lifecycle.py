"""The device lifecycle: which transitions are allowed and what commissioning needs.

registered → installed → commissioned → in_service ⇄ maintenance → decommissioned;
any live device may be decommissioned (a wrong registration, a stolen pole), and a
decommissioned device is final. Pure logic: no database here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from devices.registry.models import LifecycleState as S

ALLOWED: dict[S, frozenset[S]] = {
    S.REGISTERED: frozenset({S.INSTALLED, S.DECOMMISSIONED}),
    S.INSTALLED: frozenset({S.COMMISSIONED, S.DECOMMISSIONED}),
    S.COMMISSIONED: frozenset({S.IN_SERVICE, S.MAINTENANCE, S.DECOMMISSIONED}),
    S.IN_SERVICE: frozenset({S.MAINTENANCE, S.DECOMMISSIONED}),
    S.MAINTENANCE: frozenset({S.IN_SERVICE, S.DECOMMISSIONED}),
    S.DECOMMISSIONED: frozenset(),
}


class TransitionError(ValueError):
    """A transition the lifecycle does not allow, or commissioning with items missing."""


@dataclass(frozen=True, slots=True)
class Checklist:
    """What must be true before a device is signed off as commissioned."""

    position_set: bool
    first_telemetry_at: datetime | None
    self_test_ok_at: datetime | None

    def missing(self) -> list[str]:
        items = []
        if not self.position_set:
            items.append("position_set (latitude and longitude)")
        if self.first_telemetry_at is None:
            items.append("first_telemetry_seen")
        if self.self_test_ok_at is None:
            items.append("self_test_acknowledged")
        return items


def check_transition(current: S, target: S, checklist: Checklist) -> None:
    """Raise ``TransitionError`` naming the reason if ``current → target`` is not allowed."""
    if target == current:
        raise TransitionError(f"device is already {current.value}")
    if target not in ALLOWED[current]:
        allowed = ", ".join(sorted(s.value for s in ALLOWED[current])) or "none (final state)"
        raise TransitionError(
            f"cannot go from {current.value} to {target.value}; allowed: {allowed}"
        )
    if target == S.COMMISSIONED and (missing := checklist.missing()):
        raise TransitionError("commissioning checklist incomplete: missing " + ", ".join(missing))
