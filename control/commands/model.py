"""The typed values of commands: a request, its per-device status and the progress view."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from control.plan import TargetType


class TargetStatus(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    OK = "ok"
    REJECTED = "rejected"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self not in (TargetStatus.PENDING, TargetStatus.SENT)


class CommandInvalid(ValueError):
    """A command that cannot be sent; ``field`` names the culprit."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class CommandRequest(BaseModel):
    """What to do, to whom, until when. A repeated ``id`` returns the first command."""

    model_config = ConfigDict(extra="forbid")

    id: uuid.UUID = Field(default_factory=uuid.uuid4, description="idempotency key")
    action: Annotated[str, Field(min_length=1, max_length=32, description="e.g. set_dim")]
    params: dict[str, Any] = Field(default_factory=dict, description="checked per action")
    target_type: TargetType = Field(description="device or group")
    target_id: Annotated[str, Field(min_length=1, max_length=63, description="its id")]
    ttl_s: Annotated[int, Field(ge=10, le=86_400, description="expires this long after")] = 600


class Progress(BaseModel):
    model_config = ConfigDict(extra="forbid")

    total: int = Field(description="devices targeted")
    pending: int = Field(description="not sent yet")
    sent: int = Field(description="sent, no answer yet")
    acknowledged: int = Field(description="answered ok")
    rejected: int = Field(description="refused by the device (reason in detail)")
    failed: int = Field(description="tried and failed")
    expired: int = Field(description="no answer before expiry")
    cancelled: int = Field(description="cancelled before an answer")

    @property
    def settled(self) -> bool:
        return self.pending == 0 and self.sent == 0


class TargetPublic(BaseModel):
    model_config = ConfigDict(extra="forbid")

    device_id: str
    status: TargetStatus
    attempts: int
    first_sent_at: datetime | None
    last_sent_at: datetime | None
    answered_at: datetime | None
    detail: str


class CommandPublic(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: uuid.UUID
    action: str
    params: dict[str, Any]
    target_type: TargetType
    target_id: str
    created_by: str
    created_at: datetime
    expires_at: datetime
    cancelled_at: datetime | None
    source: str
    progress: Progress
    targets: list[TargetPublic] | None = Field(None, description="per device, when asked")


def progress_of(statuses: list[TargetStatus]) -> Progress:
    def count(status: TargetStatus) -> int:
        return sum(1 for s in statuses if s is status)

    return Progress(
        total=len(statuses),
        pending=count(TargetStatus.PENDING),
        sent=count(TargetStatus.SENT),
        acknowledged=count(TargetStatus.OK),
        rejected=count(TargetStatus.REJECTED),
        failed=count(TargetStatus.FAILED),
        expired=count(TargetStatus.EXPIRED),
        cancelled=count(TargetStatus.CANCELLED),
    )
