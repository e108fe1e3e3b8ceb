"""What the device's wire faults do on its MQTT link: when the link goes, how, and which
readings leave malformed.

The fault plan itself (``firmware_sim.wire_faults``: offline windows, flapping, clock
skew, malformed payloads, all seeded) knows nothing of MQTT. This module turns it into
the device's next step on the link (``link_step``: leave cleanly with ``offline`` and a
DISCONNECT, or cut the socket so the broker publishes the Last Will, or reconnect once
the back-off allows) and into the bytes of a malformed reading (``reading_payload``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from enum import Enum
from typing import Any

from firmware_sim.mqtt.link import LinkState
from firmware_sim.wire_faults import DropStyle, LinkPlan, Malformation, WireFaults


class LinkStep(Enum):
    STAY = "stay"  # nothing to do now
    CONNECT = "connect"
    LEAVE = "leave"  # clean: offline, then DISCONNECT
    CUT = "cut"  # abrupt: the broker sends the Last Will
    STAY_AWAY = "stay_away"  # the plan wants no link now: no connect is under way


def link_step(plan: LinkPlan, link: LinkState, now: datetime, retry_at: datetime) -> LinkStep:
    wanted = plan.wants_link(now)
    if link is LinkState.UP and not wanted:
        return LinkStep.LEAVE if plan.drop is DropStyle.CLEAN else LinkStep.CUT
    if wanted and link is LinkState.DOWN and now >= retry_at:
        return LinkStep.CONNECT
    if not wanted:
        return LinkStep.STAY_AWAY
    return LinkStep.STAY


def reading_payload(
    wire: WireFaults,
    metrics: dict[str, Any],
    malformation: Malformation | None,
    device_now: datetime,
    encode: Callable[[dict[str, Any], datetime], bytes],
) -> bytes:
    """The reading as sent: encoded, and malformed (values, then bytes) when it is due."""
    raw: dict[str, Any] = dict(metrics)
    if malformation is not None:
        raw = wire.malform_metrics(raw, malformation)
    payload = encode(raw, device_now)
    if malformation is not None:
        payload = wire.malform_payload(payload, malformation)
    return payload
