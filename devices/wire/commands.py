"""Commands to devices and their acknowledgements, with typed parameters per action."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from devices.wire.catalogue import DeviceKind, kind_spec
from devices.wire.payloads import PayloadError, _decode_json, _first_error


class CommandAction(StrEnum):
    SET_DIM = "set_dim"
    SWITCH = "switch"
    OVERRIDE = "override"
    SET_PROGRAM = "set_program"
    SELF_TEST = "self_test"
    SET_INTERVAL = "set_interval"
    SWITCH_CIRCUIT = "switch_circuit"


Level = Annotated[float, Field(ge=0, le=100, description="light level in percent")]


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SetDimParams(_Params):
    level: Level


class SwitchParams(_Params):
    on: bool


class OverrideParams(_Params):
    level: Level
    minutes: Annotated[int, Field(ge=1, le=24 * 60, description="how long the override holds")]


class ProgramStep(_Params):
    """A step at a fixed local time (``at``) or at sunset/sunrise plus ``offset_minutes``."""

    at: Annotated[str, Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")] | None = None
    event: Literal["sunset", "sunrise"] | None = None
    offset_minutes: Annotated[int, Field(ge=-180, le=180)] = 0
    level: Level


class LampProgram(_Params):
    """The program a lamp stores and runs on its own clock (``set_program``)."""

    id: Annotated[str, Field(min_length=1, max_length=64)]
    steps: Annotated[list[ProgramStep], Field(min_length=1, max_length=24)]


DEFAULT_PROGRAM = LampProgram(
    id="default",
    steps=[
        ProgramStep(event="sunset", offset_minutes=-10, level=100),
        ProgramStep(at="22:00", level=70),
        ProgramStep(at="00:00", level=50),
        ProgramStep(at="04:30", level=100),
        ProgramStep(event="sunrise", offset_minutes=10, level=0),
    ],
)
"""DOMAIN.md's default dimming: 100 % from sunset - 10 min, 70 % 22:00, 50 % 00:00,
100 % 04:30, off at sunrise + 10 min (the lamp's own fallback and control's default)."""


class SetProgramParams(_Params):
    program: LampProgram


class SelfTestParams(_Params):
    pass


class SetIntervalParams(_Params):
    seconds: Annotated[int, Field(ge=10, le=86_400)]


class SwitchCircuitParams(_Params):
    circuit: Annotated[int, Field(ge=1, le=16)]
    on: bool


PARAMS: dict[CommandAction, type[_Params]] = {
    CommandAction.SET_DIM: SetDimParams,
    CommandAction.SWITCH: SwitchParams,
    CommandAction.OVERRIDE: OverrideParams,
    CommandAction.SET_PROGRAM: SetProgramParams,
    CommandAction.SELF_TEST: SelfTestParams,
    CommandAction.SET_INTERVAL: SetIntervalParams,
    CommandAction.SWITCH_CIRCUIT: SwitchCircuitParams,
}


class CommandParamsError(ValueError):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def validate_command_params(
    kind: DeviceKind | str, action: str, params: dict[str, Any]
) -> BaseModel:
    """The typed parameters of ``action`` for ``kind``, or ``CommandParamsError``."""
    spec = kind_spec(kind)
    if action not in spec.commands:
        supported = ", ".join(spec.commands) or "none"
        raise CommandParamsError("action", f"{spec.kind} does not take {action!r} ({supported})")
    try:
        return PARAMS[CommandAction(action)].model_validate(params)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise CommandParamsError(f"params.{where}" if where else "params", err["msg"]) from None


class Command(BaseModel):
    """What the backend publishes on ``cmd``. ``params`` is checked per action by the sender."""

    model_config = ConfigDict(extra="forbid")

    id: uuid.UUID
    action: str
    params: dict[str, Any] = Field(default_factory=dict)
    expires_at: AwareDatetime

    def is_expired(self, now: datetime) -> bool:
        return now >= self.expires_at

    def to_payload(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def parse(cls, payload: bytes) -> Command:
        try:
            return cls.model_validate(_decode_json(payload))
        except ValidationError as exc:
            raise _first_error(exc) from None


class CommandAck(BaseModel):
    """What the device answers on ``cmd/ack``."""

    model_config = ConfigDict(extra="forbid")

    id: uuid.UUID
    status: Literal["ok", "rejected", "failed"]
    detail: str = ""

    def to_payload(self) -> bytes:
        return json.dumps(
            {"id": str(self.id), "status": self.status, "detail": self.detail}
        ).encode()

    @classmethod
    def parse(cls, payload: bytes) -> CommandAck:
        try:
            return cls.model_validate(_decode_json(payload))
        except ValidationError as exc:
            raise _first_error(exc) from None


__all__ = [
    "PARAMS",
    "Command",
    "CommandAck",
    "CommandAction",
    "CommandParamsError",
    "LampProgram",
    "PayloadError",
    "ProgramStep",
    "validate_command_params",
]
