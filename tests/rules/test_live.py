"""The rules on the live stream: the simulator's scenarios through Mosquitto and ingest.

Real broker, real ingest (into the embedded store), the simulator's physics and
faults on a stepped clock; alerts land in SQLite and on ``pharos/v1/alerts``; commands
reach the simulated lamps over MQTT. The backtest over the stored history must list
the alerts the live run raised.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from firmware_sim.faults import Fault, FaultConfig
from firmware_sim.scenario import expand, load_scenario
from rules.alerts import AlertFilter
from rules.aqi import category
from rules.backtest import backtest
from rules.settings import SHIPPED_RULES, RulesSettings
from rules.spec import load_rule_file
from tests.rules.conftest import SITE_SUN, AlertWatcher, Bed, pipeline

pytestmark = pytest.mark.broker
LOCAL = ZoneInfo("Asia/Ho_Chi_Minh")
CAN_THO = load_rule_file(SHIPPED_RULES).rules


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite only here: the alert store is tested on PostgreSQL in ``test_alerts``."""
    return f"sqlite:///{tmp_path / 'pharos.db'}"


def local(when: datetime) -> str:
    return when.astimezone(LOCAL).strftime("%H:%M")


async def test_flood_evening_raises_bd_levels_with_the_tide_and_lights_the_district(
    bed: Bed,
) -> None:
    scenario = load_scenario("flood-evening")
    specs = [s for s in expand(scenario) if not s.is_modbus]
    rules = [r for r in CAN_THO if r.id.startswith("flood-")]
    nk_lamps = [s.device_id for s in specs if s.kind.value == "streetlight"]
    assert nk_lamps
    levels: dict[str, list[float]] = {}

    async with pipeline(
        bed, specs, start=scenario.start, seed=scenario.seed, rules=rules, events=scenario.events
    ) as run:
        watcher = AlertWatcher(bed)
        try:
            assert run.fleet is not None
            models = run.fleet.models

            def sample_lamps(when: datetime) -> None:
                if local(when) in ("22:30", "23:30"):
                    levels[local(when)] = [models[i].output_level(when) for i in nk_lamps]

            await run.run(scenario.end, after_step=sample_lamps)
            alerts, _ = run.alerts.list(AlertFilter(), limit=1000)
            events = watcher.events()
        finally:
            watcher.close()

    gauges = {s.device_id for s in specs if s.kind.value == "flood_gauge"}
    by_rule: dict[str, list[str]] = {}
    for alert in alerts:
        by_rule.setdefault(alert.rule_id, []).append(alert.device_id)
        assert alert.device_id in gauges
    # Every gauge of the swollen river crosses I, II and III on the evening tide …
    assert set(by_rule) == {"flood-bd1", "flood-bd2", "flood-bd3"}
    for rule_id in by_rule:
        assert sorted(by_rule[rule_id]) == sorted(gauges)
    for alert in alerts:
        assert "16:00" <= local(alert.raised_at) <= "20:00", (alert.rule_id, alert.raised_at)
        # … in order: I before II before III at each gauge …
    for gauge in gauges:
        raised = {a.rule_id: a.raised_at for a in alerts if a.device_id == gauge}
        assert raised["flood-bd1"] < raised["flood-bd2"] < raised["flood-bd3"]
        # … and each clears as the water falls, III first.
        cleared = {a.rule_id: a.cleared_at for a in alerts if a.device_id == gauge}
        assert all(c is not None for c in cleared.values()), cleared
        assert cleared["flood-bd3"] < cleared["flood-bd2"] < cleared["flood-bd1"]  # type: ignore[operator]
    assert all(a.repeats == 0 for a in alerts), "hysteresis: no flapping at a level"
    # The IOC saw each raise and clear on pharos/v1/alerts.
    kinds = [(e["event"], e["alert"]["rule_id"]) for e in events]
    assert kinds.count(("raised", "flood-bd2")) == len(gauges)
    assert kinds.count(("cleared", "flood-bd2")) == len(gauges)
    # BĐ II lit Ninh Kiều's lamps at 100 % for the night, where the program says 70 % / 50 %.
    assert levels["22:30"] == [100.0] * len(nk_lamps)
    assert levels["23:30"] == [100.0] * len(nk_lamps)

    # The backtest over the stored history finds the same alerts.
    result = await backtest(
        rules,
        run.store,
        run.catalog,
        settings=RulesSettings(),
        sun=SITE_SUN,
        start=scenario.start,
        end=scenario.end + timedelta(minutes=1),
    )
    live = sorted((a.rule_id, a.device_id, a.raised_at, a.cleared_at) for a in alerts)
    replayed = sorted((a.rule_id, a.device_id, a.raised_at, a.cleared_at) for a in result.alerts)
    assert replayed == live


async def test_pollution_episode_raises_aqi_alerts_with_the_right_categories(bed: Bed) -> None:
    scenario = load_scenario("pollution-episode")
    specs = [s for s in expand(scenario) if not s.is_modbus]
    rules = [r for r in CAN_THO if r.id.startswith("aqi-")]
    async with pipeline(
        bed, specs, start=scenario.start, seed=scenario.seed, rules=rules, events=scenario.events
    ) as run:
        await run.run(scenario.end, step=timedelta(minutes=30))
        alerts, _ = run.alerts.list(AlertFilter(), limit=1000)
        aqi_rows = await run.derived.derived("aqi")
    monitors = {s.device_id: s for s in specs}
    # Only the episode raises alerts: nothing before it starts at 06:30.
    assert alerts and all("06:30" <= local(a.raised_at) <= "12:00" for a in alerts)
    by_rule: dict[str, set[str]] = {}
    for alert in alerts:
        by_rule.setdefault(alert.rule_id, set()).add(alert.device_id)
        floor = {"aqi-poor": 100, "aqi-bad": 150, "aqi-very-bad": 200, "aqi-hazardous": 300}
        assert alert.value is not None and alert.value > floor[alert.rule_id]
        assert alert.repeats == 0, f"hysteresis: {alert.rule_id} flapped at {alert.device_id}"
    # The stations of the two districts under the smoke (×3.5) reach "bad" …
    for device_id in ("env-nk-00001", "env-nk-00002", "env-nk-00003", "env-cr-00001"):
        assert device_id in by_rule["aqi-bad"]
    # … and "very bad" only there, not in Bình Thủy (×2.0).
    assert by_rule["aqi-very-bad"]
    assert all(monitors[d].district != "Bình Thủy" for d in by_rule["aqi-very-bad"])
    assert "aqi-hazardous" not in by_rule
    # The aqi points carry the category of their VN_AQI.
    points: dict[tuple[str, object], dict[str, float]] = {}
    for tags, field, at, value in aqi_rows:
        points.setdefault((tags["device_id"], at), {})[field] = value
    assert {device_id for device_id, _ in points} == set(monitors)
    for fields in points.values():
        assert fields["category"] == int(category(int(fields["vn_aqi"])))

    # Hysteresis against a plain threshold on the same stored readings: it flaps.
    period = {"start": scenario.start, "end": scenario.end + timedelta(minutes=1)}
    common = {"settings": RulesSettings(), "sun": SITE_SUN, **period}
    replay = await backtest(rules, run.store, run.catalog, **common)  # type: ignore[arg-type]
    assert sorted((a.rule_id, a.device_id, a.raised_at) for a in replay.alerts) == sorted(
        (a.rule_id, a.device_id, a.raised_at) for a in alerts
    )
    plain = [r.model_copy(update={"clear": None}) for r in rules]
    flapping = await backtest(plain, run.store, run.catalog, **common)  # type: ignore[arg-type]
    assert len(flapping.alerts) > len(alerts)


async def test_lamp_failure_day_burning_and_a_silent_gauge_each_raise_their_alert(
    bed: Bed,
) -> None:
    scenario = load_scenario("flood-evening")
    faults = {
        "sl-nk-00003": FaultConfig(faults=frozenset({Fault.LAMP_FAILURE})),
        "sl-nk-00007": FaultConfig(faults=frozenset({Fault.DAY_BURNING})),
        "fg-cr-00001": FaultConfig(faults=frozenset({Fault.OFFLINE_ABRUPT}), flap_period_s=3600),
    }
    specs = [
        replace(s, faults=faults.get(s.device_id, FaultConfig()))
        for s in expand(scenario)
        if not s.is_modbus
    ]
    wanted = {"lamp-failure", "day-burning", "gauge-silent"}
    rules = [r for r in CAN_THO if r.id in wanted]
    end = scenario.start + timedelta(hours=8)  # 20:00: past dusk
    async with pipeline(
        bed, specs, start=scenario.start, seed=scenario.seed, rules=rules, events=scenario.events
    ) as run:
        watcher = AlertWatcher(bed)
        try:
            # Steps of 5 minutes: time never runs ahead of the evaluated readings by more
            # than a step, well under the 10 minutes that make a gauge silent.
            await run.run(end, step=timedelta(minutes=5))
            alerts, _ = run.alerts.list(AlertFilter(), limit=1000)
            events = watcher.events()
            work = run.alerts.work_items()
        finally:
            watcher.close()

    raised = sorted((a.rule_id, a.device_id) for a in alerts)
    assert raised == [
        ("day-burning", "sl-nk-00007"),
        ("gauge-silent", "fg-cr-00001"),
        ("lamp-failure", "sl-nk-00003"),
    ]
    by_rule = {a.rule_id: a for a in alerts}
    # Day burning: from the first afternoon readings, cleared after sunset (17:41).
    day = by_rule["day-burning"]
    assert local(day.raised_at) < "13:00"
    assert day.cleared_at is not None and "17:00" <= local(day.cleared_at) <= "17:45"
    # Lamp failure: once the lamp should be lit at dusk (sunset − 10 min), still open.
    failure = by_rule["lamp-failure"]
    assert "17:30" <= local(failure.raised_at) <= "18:15"
    assert failure.cleared_at is None
    assert [(w.device_id, w.alert_id) for w in work] == [("sl-nk-00003", failure.id)]
    # The gauge's Last Will raises "silent" at once (not ten minutes later).
    silent = by_rule["gauge-silent"]
    assert "12:30" <= local(silent.raised_at) <= "14:00"
    assert silent.value == 0.0 or (silent.value is not None and silent.value < 600)
    assert ("raised", "gauge-silent") in [(e["event"], e["alert"]["rule_id"]) for e in events]
