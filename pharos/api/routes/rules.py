"""``/api/v1/rules``: the rule set: list, check a file, reload, backtest over history.

Anyone with a key reads the rules. Operators check and reload them (a file with errors
is refused with every problem's line, field and reason, and the running rules stay);
reloading needs the rules engine running in this process (``runtime.rules``).
Backtests read stored history (InfluxDB or the embedded store) and write nothing.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, status
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from pharos.api.deps import RuntimeDep, require_roles
from pharos.api.errors import invalid_at, responses
from pharos.apikeys import Role
from rules.backtest import BacktestResult, backtest
from rules.catalog import StaticCatalog, load_facts
from rules.derived import SunTimes
from rules.spec import Rule, RuleFileError, load_rule_files, parse_rule_text
from telemetry.store import QueryError, StoreUnavailableError

router = APIRouter(prefix="/rules", tags=["rules"])

_operators = Depends(require_roles(Role.OPERATOR))
MAX_BACKTEST = timedelta(days=31)


class RuleSetPublic(BaseModel):
    model_config = ConfigDict(frozen=True)

    running: bool = Field(description="whether the rules engine runs in this process")
    rules: list[dict[str, Any]] = Field(description="the rules, as in their files")


class RuleCheck(BaseModel):
    model_config = ConfigDict(extra="forbid")

    yaml: str = Field(max_length=1_000_000, description="a rule file's text")


class RuleCheckPublic(BaseModel):
    model_config = ConfigDict(frozen=True)

    rules: list[str] = Field(description="ids of the valid file's rules")


class BacktestCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start: AwareDatetime = Field(description="start of the period")
    end: AwareDatetime = Field(description="end of the period (exclusive), at most 31 days on")
    rule_ids: list[str] | None = Field(None, description="only these rules (default: all)")
    device_ids: list[str] | None = Field(None, description="only these devices")
    yaml: str | None = Field(None, max_length=1_000_000, description="rules to try instead")


def _unprocessable(error: RuleFileError) -> HTTPException:
    detail = [
        {"type": "rule_file", "loc": ["body", "yaml"], "msg": f"{i.field}: {i.reason}",
         "line": i.line, "field": i.field, "source": i.source or error.source}
        for i in error.issues
    ]  # fmt: skip
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail)


def _dump(rules: list[Rule]) -> list[dict[str, Any]]:
    return [r.model_dump(mode="json", by_alias=True, exclude_none=True) for r in rules]


@router.get("", responses=responses(422, meanings={422: "a configured rule file is invalid"}))
async def list_rules(runtime: RuntimeDep) -> RuleSetPublic:
    if runtime.rules is not None:
        return RuleSetPublic(running=True, rules=_dump(runtime.rules.rules))
    try:
        rules = await asyncio.to_thread(load_rule_files, runtime.settings.rules.files)
    except RuleFileError as exc:
        raise _unprocessable(exc) from None
    return RuleSetPublic(running=False, rules=_dump(rules))


@router.post("/check", dependencies=[_operators])
def check_rules(body: RuleCheck) -> RuleCheckPublic:
    """Validate a rule file's text without using it."""
    try:
        parsed = parse_rule_text(body.yaml, "body")
    except RuleFileError as exc:
        raise _unprocessable(exc) from None
    return RuleCheckPublic(rules=[r.id for r in parsed.rules])


@router.post(
    "/reload",
    dependencies=[_operators],
    responses=responses(422, 503, meanings={422: "a rule file is invalid; the rules stay"}),
)
async def reload_rules(runtime: RuntimeDep) -> RuleSetPublic:
    """Load the configured rule files again; on errors the running rules stay."""
    if runtime.rules is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "the rules engine is not running")
    try:
        rules = await runtime.rules.reload()
    except RuleFileError as exc:
        raise _unprocessable(exc) from None
    return RuleSetPublic(running=True, rules=_dump(rules))


@router.post("/backtest", dependencies=[_operators], responses=responses(502, 503))
async def backtest_rules(body: BacktestCreate, runtime: RuntimeDep) -> BacktestResult:
    """The alerts the rules would have raised over the period (nothing is written)."""
    if body.end <= body.start or body.end - body.start > MAX_BACKTEST:
        raise invalid_at(("body", "end"), "after start and at most 31 days on", str(body.end))
    store = runtime.timeseries
    if store is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "no time-series store")
    settings = runtime.settings
    try:
        if body.yaml is not None:
            rules = parse_rule_text(body.yaml, "body").rules
        elif runtime.rules is not None:
            rules = runtime.rules.rules
        else:
            rules = await asyncio.to_thread(load_rule_files, settings.rules.files)
    except RuleFileError as exc:
        raise _unprocessable(exc) from None
    if body.rule_ids is not None:
        rules = [r for r in rules if r.id in set(body.rule_ids)]
    catalog = StaticCatalog((await asyncio.to_thread(load_facts, runtime.sessions)).values())
    site = settings.site
    try:
        return await backtest(
            rules,
            store,
            catalog,
            settings=settings.rules,
            sun=SunTimes(site.latitude, site.longitude, site.timezone),
            start=body.start,
            end=body.end,
            device_ids=body.device_ids,
        )
    except StoreUnavailableError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from None
    except QueryError as exc:
        raise HTTPException(status.HTTP_502_BAD_GATEWAY, str(exc)) from None
