"""How a simulated device answers the commands it receives on ``cmd``.

A command is parsed against the wire contract: broken JSON whose id is still legible is
answered ``rejected`` with the reason, one whose id cannot be read is counted and
ignored; an expired one (on the device's own, possibly skewed, clock) gets no answer at
all; parameters the device's kind does not take are ``rejected``; otherwise the model
carries it out and its outcome is the answer. The last ``ANSWERS_KEPT`` answers are
remembered by id, so a command sent again (the backend's retry after a lost
acknowledgement) is answered again, not carried out twice.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime

from devices.wire import (
    Command,
    CommandAck,
    CommandParamsError,
    PayloadError,
    validate_command_params,
)
from firmware_sim.model import DeviceModel
from firmware_sim.mqtt.hub import WireCounters
from firmware_sim.wire_faults import WireFaults

log = logging.getLogger(__name__)

ANSWERS_KEPT = 64  # command ids a device remembers its answer to
# A command whose JSON is broken can still be answered when its id is legible.
_COMMAND_ID = re.compile(rb'"id"\s*:\s*"([0-9a-fA-F-]{32,36})"')


@dataclass(frozen=True, slots=True)
class Answer:
    ack: CommandAck | None  # None: no answer at all (unreadable, or expired)
    carried_out: bool = False  # the model changed: its new state goes out too


class CommandAnswerer:
    """The command handling of one device; see the module docstring."""

    __slots__ = ("_answered", "_counters", "_device_id", "_model", "_wire")

    def __init__(self, model: DeviceModel, wire: WireFaults, counters: WireCounters) -> None:
        self._model = model
        self._device_id = model.device_id
        self._wire = wire
        self._counters = counters
        self._answered: OrderedDict[uuid.UUID, CommandAck] = OrderedDict()

    def answer(self, payload: bytes, now: datetime) -> Answer:
        try:
            command = Command.parse(payload)
        except PayloadError as exc:
            command_id = legible_command_id(payload)
            if command_id is None:
                self._counters.commands_unreadable += 1
                log.info("%s: unreadable command ignored: %s", self._device_id, exc)
                return Answer(None)
            return Answer(CommandAck(id=command_id, status="rejected", detail=str(exc)))
        if command.is_expired(self._wire.device_time(now)):
            self._counters.commands_ignored += 1
            return Answer(None)
        known = self._answered.get(command.id)
        if known is not None:
            return Answer(known)
        try:
            validate_command_params(self._model.kind, command.action, command.params)
        except CommandParamsError as exc:
            return Answer(CommandAck(id=command.id, status="rejected", detail=str(exc)))
        outcome = self._model.handle(command.action, command.params, now)
        ack = CommandAck(id=command.id, status=outcome.status, detail=outcome.detail)
        self._answered[command.id] = ack
        while len(self._answered) > ANSWERS_KEPT:
            self._answered.popitem(last=False)
        return Answer(ack, carried_out=outcome.status == "ok")


def legible_command_id(payload: bytes) -> uuid.UUID | None:
    """The id of a command whose JSON is broken, when it can still be read."""
    match = _COMMAND_ID.search(payload)
    if match is None:
        return None
    try:
        return uuid.UUID(match.group(1).decode("ascii"))
    except ValueError:
        return None
