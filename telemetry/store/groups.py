"""Resolving a registry group to its member devices, for the stores' ``group`` filter.

The points' ``group`` tag holds one group at most (tags stay low-cardinality), while a
device may belong to several groups and change groups over time; the registry is
exact, so the stores ask it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from devices.registry.models import device_groups
from telemetry.store.base import GroupMembers


def registry_group_members(sessions: sessionmaker[Session]) -> GroupMembers:
    """A resolver reading the registry's memberships (an unknown group has no members)."""

    def members(group_id: str) -> list[str]:
        with sessions() as session:
            query = select(device_groups.c.device_id).where(device_groups.c.group_id == group_id)
            return list(session.scalars(query))

    async def resolve(group_id: str) -> Sequence[str]:
        return await asyncio.to_thread(members, group_id)

    return resolve
