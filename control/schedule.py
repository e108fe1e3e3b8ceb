"""Execution of lighting programs: step jobs in APScheduler's persistent job store,
run on the injected clock, each step sent as a group command; catch-up after a
restart; programs pushed to the lamps; drift brought back within limits.

APScheduler 3 reads the wall clock inside its schedulers, so a whole simulated night
cannot run through one. We keep what makes it worth having, its persistent
``SQLAlchemyJobStore`` (one job per target: a group or lamp with a calendar or an
override, ``next_run_time`` the next instant its level may change, computed by
``control.plan.next_change``), and drive the store ourselves: sleep on the clock
until the store's next run time, take the due jobs, run them, reschedule them. After
a restart the jobs are where they were; the catch-up sends every managed lamp the
level (and program) ``desired_level`` gives for now, whatever fired while we were away.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Protocol

from apscheduler.job import Job  # type: ignore[import-untyped]
from apscheduler.jobstores.base import JobLookupError  # type: ignore[import-untyped]
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore  # type: ignore[import-untyped]
from apscheduler.triggers.date import DateTrigger  # type: ignore[import-untyped]
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from control.commands.model import CommandPublic, CommandRequest
from control.models import JOBS_TABLE, LampStateRow
from control.plan import ControlPlan, LampRef, Target, TargetType, desired_level, next_change
from control.program import ProgramSpec, Site
from control.state import is_drifting
from control.store import lamps_of, load_plan, managed_lamps
from devices.registry.db import transaction
from pharos_core.clock import Clock, sleep_or_wake
from pharos_core.lifecycle import ServiceTasks

log = logging.getLogger(__name__)
ACTOR = "schedule"


class Submitter(Protocol):
    async def submit(
        self, request: CommandRequest, actor: str, *, source: str = "api"
    ) -> CommandPublic: ...


def step_job(target_type: str, target_id: str) -> None:
    """The job's callable as stored; ``StepScheduler`` runs due jobs itself."""


@dataclass(frozen=True, slots=True)
class ScheduleOptions:
    command_ttl_s: int = 600
    drift_check_s: float = 60.0  # (clock) how often drift is looked for
    drift_grace_s: float = 120.0  # (clock) a drift must last this long to be corrected
    max_corrections: int = 3  # per drift episode; then it is left visible for people


class _NoScheduler:
    """What APScheduler's jobs and job store want of a scheduler (we drive them)."""

    timezone = UTC


class StepScheduler:
    """An async context manager: catch-up on entry, then steps and drift checks."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        engine: Engine,
        clock: Clock,
        commands: Submitter,
        site: Site,
        options: ScheduleOptions | None = None,
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        self._commands = commands
        self._site = site
        self.options = options or ScheduleOptions()
        self._store = SQLAlchemyJobStore(engine=engine, tablename=JOBS_TABLE)
        self._wake = asyncio.Event()
        self._drift_wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._progress = asyncio.Event()
        self._sleeping_until = datetime.min.replace(tzinfo=UTC)
        self._stopping = asyncio.Event()
        self._tasks = ServiceTasks(self._stopping, self._wake, self._drift_wake)
        # The programs as last planned: a program whose steps change under the same id
        # is sent again to the lamps running it (their stored copy is stale).
        self._programs_seen: dict[str, ProgramSpec] | None = None

    async def __aenter__(self) -> StepScheduler:
        await asyncio.to_thread(self._store.start, _NoScheduler(), "control")
        await self.catch_up()
        await self._tasks.start(
            ("schedule-steps", self._run()), ("schedule-drift", self._drift_loop())
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._tasks.stop(exc_type, exc, tb)

    def plan_changed(self) -> None:
        """Programs, calendars, assignments or overrides changed: re-plan now."""
        self._wake.set()

    async def reached(self, when: datetime) -> None:
        """Until every step due by ``when`` is sent and the scheduler sleeps past it
        (a test driving a stepped clock waits on this before moving time again)."""
        while not (self._idle.is_set() and self._sleeping_until > when):
            self._progress.clear()
            await self._progress.wait()

    # --- the plan ----------------------------------------------------------------------

    def _plan(self, now: datetime) -> tuple[ControlPlan, list[LampRef]]:
        with transaction(self._sessions) as session:
            plan = load_plan(session, self._site, now)
            return plan, managed_lamps(session, plan)

    def _lamps(self, target: Target) -> list[LampRef]:
        with transaction(self._sessions) as session:
            return lamps_of(session, target)

    # --- catch-up and steps ------------------------------------------------------------

    async def catch_up(self) -> None:
        """Every managed lamp gets the level (and program) it should have now: per
        target (a group command where the whole group agrees), each lamp once."""
        now = self._clock.now()
        plan, _ = await asyncio.to_thread(self._plan, now)
        targets = sorted(
            set(plan.assignments) | {o.target for o in plan.overrides},
            key=lambda t: (t.type is TargetType.GROUP, t.id),  # a lamp's own first
        )
        done: set[str] = set()
        for target in targets:
            lamps = await asyncio.to_thread(self._lamps, target)
            fresh = [lamp for lamp in lamps if lamp.device_id not in done]
            done.update(lamp.device_id for lamp in fresh)
            await self._apply(plan, fresh, now, target, len(lamps), resend_programs=True)
        self._programs_seen = dict(plan.programs)
        await asyncio.to_thread(self._sync_jobs, plan, now)

    async def _resend_changed_programs(self, plan: ControlPlan, now: datetime) -> None:
        """Lamps running a program whose steps changed since the last plan get it again
        (``set_program``) with the level it now gives."""
        seen, self._programs_seen = self._programs_seen, dict(plan.programs)
        if seen is None:
            return
        changed = {pid for pid, spec in plan.programs.items() if pid in seen and seen[pid] != spec}
        if not changed:
            return
        targets = sorted(plan.assignments, key=lambda t: (t.type is TargetType.GROUP, t.id))
        done: set[str] = set()
        for target in targets:
            lamps = await asyncio.to_thread(self._lamps, target)
            fresh = [lamp for lamp in lamps if lamp.device_id not in done]
            done.update(lamp.device_id for lamp in fresh)
            running = [
                lamp for lamp in fresh if desired_level(plan, lamp, now).program_id in changed
            ]
            await self._apply(plan, running, now, target, len(lamps), resend_programs=True)

    async def refresh(self, target: Target) -> None:
        """Send the lamps of ``target`` the level they should have now (an override set
        or cleared, a calendar changed)."""
        now = self._clock.now()
        plan, _ = await asyncio.to_thread(self._plan, now)
        lamps = await asyncio.to_thread(self._lamps, target)
        await self._apply(plan, lamps, now, target)

    async def _run(self) -> None:
        while not self._stopping.is_set():
            now = self._clock.now()
            plan, _ = await asyncio.to_thread(self._plan, now)
            await self._resend_changed_programs(plan, now)
            due: list[Any] = await asyncio.to_thread(self._store.get_due_jobs, now)
            for job in due:
                target = Target(TargetType(job.args[0]), job.args[1])
                lamps = await asyncio.to_thread(self._lamps, target)
                await self._apply(plan, lamps, now, label=target)
            # After the due jobs ran: their next run, and any change of the plan.
            await asyncio.to_thread(self._sync_jobs, plan, now)
            next_run = await asyncio.to_thread(self._store.get_next_run_time)
            until = next_run or now + timedelta(hours=1)
            self._sleeping_until = until
            self._idle.set()
            self._progress.set()
            try:
                await sleep_or_wake(self._clock, until, self._wake)
            finally:
                self._idle.clear()

    def _sync_jobs(self, plan: ControlPlan, now: datetime) -> None:
        """One job per target with a calendar or an override, due at its next change."""
        targets = set(plan.assignments) | {o.target for o in plan.overrides}
        wanted: dict[str, tuple[Target, datetime]] = {}
        for target in targets:
            lamp = (
                LampRef(target.id, ())
                if target.type is TargetType.DEVICE
                else LampRef("", (target.id,))
            )
            when = next_change(plan, lamp, now)
            if when is not None:
                wanted[f"step:{target}"] = (target, when)
        for job in self._store.get_all_jobs():
            if job.id not in wanted:
                self._store.remove_job(job.id)
        for job_id, (target, when) in wanted.items():
            job = self._store.lookup_job(job_id)
            if job is not None and job.next_run_time == when:
                continue
            new = _job(job_id, target, when)
            try:
                self._store.update_job(new)
            except JobLookupError:
                self._store.add_job(new)

    async def _apply(
        self,
        plan: ControlPlan,
        lamps: list[LampRef],
        now: datetime,
        label: Target,
        group_size: int | None = None,
        *,
        resend_programs: bool = False,
    ) -> None:
        """Send each lamp its desired level (one command per level) and its program
        (to lamps not known to run it, or to all of them after a restart)."""
        size = len(lamps) if group_size is None else group_size
        levels: dict[float, list[str]] = {}
        programs: dict[str, list[str]] = {}
        for lamp in lamps:
            decision = desired_level(plan, lamp, now)
            if decision.level is None:
                continue
            levels.setdefault(decision.level, []).append(lamp.device_id)
            if decision.program_id is not None:
                programs.setdefault(decision.program_id, []).append(lamp.device_id)
        known = await asyncio.to_thread(self._desired_programs, [lamp.device_id for lamp in lamps])
        for program_id, device_ids in programs.items():
            stale = [d for d in device_ids if resend_programs or known.get(d) != program_id]
            program = plan.programs[program_id].lamp_program().model_dump(exclude_defaults=True)
            await self._send(label, stale, "set_program", {"program": program}, size)
        for level, device_ids in sorted(levels.items()):
            await self._send(label, device_ids, "set_dim", {"level": level}, size)

    def _desired_programs(self, device_ids: list[str]) -> dict[str, str | None]:
        with transaction(self._sessions) as session:
            rows = session.execute(
                select(LampStateRow.device_id, LampStateRow.desired_program_id).where(
                    LampStateRow.device_id.in_(device_ids)
                )
            )
            return {device_id: program_id for device_id, program_id in rows}

    async def _send(
        self,
        label: Target,
        device_ids: list[str],
        action: str,
        params: dict[str, Any],
        group_size: int,
    ) -> None:
        if not device_ids:
            return
        whole_group = label.type is TargetType.GROUP and len(device_ids) == group_size
        targets = [label] if whole_group else [Target(TargetType.DEVICE, d) for d in device_ids]
        for target in targets:
            request = CommandRequest(
                action=action,
                params=params,
                target_type=target.type,
                target_id=target.id,
                ttl_s=self.options.command_ttl_s,
            )
            await self._commands.submit(request, ACTOR, source="schedule")

    # --- drift ---------------------------------------------------------------------------

    async def _drift_loop(self) -> None:
        while not self._stopping.is_set():
            until = self._clock.now() + timedelta(seconds=self.options.drift_check_s)
            await sleep_or_wake(self._clock, until, self._drift_wake)
            if self._stopping.is_set():
                return
            await self.correct_drift()

    async def correct_drift(self) -> int:
        """Bring drifting lamps back to their desired level; how many were sent."""
        now = self._clock.now()
        due = await asyncio.to_thread(self._drifting, now)
        for device_id, level in due:
            request = CommandRequest(
                action="set_dim",
                params={"level": level},
                target_type=TargetType.DEVICE,
                target_id=device_id,
                ttl_s=self.options.command_ttl_s,
            )
            await self._commands.submit(request, ACTOR, source="drift")
        return len(due)

    def _drifting(self, now: datetime) -> list[tuple[str, float]]:
        """Lamps off their level past the grace, with the level to send.

        A lamp the plan manages is judged against what ``desired_level`` (the same
        decision the steps send) says *now*, not against the last level commanded: at
        sunrise the program's level is off even if the last ``set_dim`` said 100, so a
        repair never lights a lamp the program has off; where the plan gives no level
        there is nothing to repair to.
        """
        grace = timedelta(seconds=self.options.drift_grace_s)
        due: list[tuple[str, float]] = []
        with transaction(self._sessions) as session:
            plan = load_plan(session, self._site, now)
            managed = {lamp.device_id: lamp for lamp in managed_lamps(session, plan)}
            for row in session.scalars(select(LampStateRow)):
                lamp = managed.get(row.device_id)
                if lamp is not None:
                    decision = desired_level(plan, lamp, now)
                    if decision.level is None:
                        row.drift_since = None
                        row.corrections = 0
                        continue
                    row.desired_level = decision.level
                if not is_drifting(row):
                    row.drift_since = None
                    row.corrections = 0
                    continue
                if row.drift_since is None:
                    row.drift_since = now
                if (
                    row.drift_since <= now - grace
                    and row.corrections < self.options.max_corrections
                    and row.desired_level is not None
                ):
                    row.corrections += 1
                    row.last_correction_at = now
                    due.append((row.device_id, row.desired_level))
        return due


def _job(job_id: str, target: Target, when: datetime) -> Any:
    return Job(
        _NoScheduler(),
        id=job_id,
        func=step_job,
        args=(target.type.value, target.id),
        kwargs={},
        trigger=DateTrigger(run_date=when, timezone=UTC),
        executor="default",
        name=f"lighting step of {target}",
        misfire_grace_time=None,
        coalesce=True,
        max_instances=1,
        next_run_time=when,
    )
