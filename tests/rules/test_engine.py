"""The pure engine: conditions, hysteresis, windows, silence and derived values on points."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from rules.catalog import StaticCatalog
from rules.derived import Derivations, DeviceFacts, SunTimes
from rules.engine import RuleEngine, Transition
from rules.settings import FloodLevels, RulesSettings
from rules.spec import parse_rule_text
from telemetry.points import Point

T0 = datetime(2026, 10, 22, 10, 0, tzinfo=UTC)  # 17:00 in Cần Thơ
SITE = SunTimes(10.0452, 105.7469, "Asia/Ho_Chi_Minh")


def engine(text: str, *devices: DeviceFacts, settings: RulesSettings | None = None) -> RuleEngine:
    rules = parse_rule_text("rules:\n" + text).rules
    derivations = Derivations(settings or RulesSettings(), SITE)
    return RuleEngine(rules, derivations, StaticCatalog(devices).get)


def point(device: str, kind: str, minutes: float, **fields: float | bool) -> Point:
    return Point(kind, {"device_id": device}, dict(fields), T0 + timedelta(minutes=minutes))


def kinds(transitions: list[Transition]) -> list[tuple[str, str, str]]:
    return [(t.kind, t.rule.id, t.device.device_id) for t in transitions]


def test_threshold_with_for_raises_only_after_holding() -> None:
    rules = engine("  - {id: hot, name: hot, when: {value: temperature_c, above: 35, for: 10m}}\n")
    seen = []
    for minute, value in [(0, 36), (5, 37), (9, 36), (10, 36), (15, 30)]:
        seen += kinds(
            rules.on_points(
                [point("env-1", "env_monitor", minute, temperature_c=value)]
            ).transitions
        )
    assert seen == [("raised", "hot", "env-1"), ("cleared", "hot", "env-1")]


def test_hysteresis_keeps_a_value_hovering_at_the_threshold_from_flapping() -> None:
    text = (
        "  - id: aqi\n    name: aqi\n    when: {value: pm25, above: 50}\n"
        "    clear: {value: pm25, below: 45}\n"
    )
    hysteresis = engine(text)
    plain = engine("  - {id: aqi, name: aqi, when: {value: pm25, above: 50}}\n")
    hovering = [49, 51, 49.5, 50.5, 48, 51, 47, 52, 44]
    with_clear, without = [], []
    for minute, value in enumerate(hovering):
        with_clear += kinds(
            hysteresis.on_points([point("a", "env_monitor", minute, pm25=value)]).transitions
        )
        without += kinds(
            plain.on_points([point("a", "env_monitor", minute, pm25=value)]).transitions
        )
    assert with_clear == [("raised", "aqi", "a"), ("cleared", "aqi", "a")]
    assert len(without) == 8  # flaps on every crossing


def test_rate_of_change_over_a_window() -> None:
    rules = engine(
        "  - {id: rise, name: rise,"
        " when: {rate: water_level_m, window: 1h, per: 1h, above: 0.15}}\n"
    )
    out = []
    for minute in range(0, 61, 10):  # +2 cm per 10 minutes = 12 cm/h: not enough
        out += rules.on_points(
            [point("g", "flood_gauge", minute, water_level_m=1.0 + minute * 0.002)]
        ).transitions
    assert out == []
    for minute in range(70, 131, 10):  # +4 cm per 10 minutes = 24 cm/h
        level = 1.12 + (minute - 60) * 0.004
        out += rules.on_points([point("g", "flood_gauge", minute, water_level_m=level)]).transitions
    assert kinds(out) == [("raised", "rise", "g")]
    assert out[0].value is not None and out[0].value > 0.15


def test_aggregate_mean_over_a_window_and_and_or() -> None:
    rules = engine(
        "  - id: pf\n    name: pf\n    when:\n      all:\n"
        "        - {aggregate: power_factor, fn: mean, window: 15m, below: 0.8}\n"
        "        - {any: [{value: power_w, above: 1000}, {value: current_a, above: 100}]}\n"
    )
    out = []
    for minute, pf in enumerate([0.9, 0.7, 0.7, 0.7]):
        out += rules.on_points(
            [point("m", "energy_meter", minute * 5, power_factor=pf, power_w=2000.0)]
        ).transitions
    # means: 0.9, 0.8, 0.767 → raised at the third reading
    assert kinds(out) == [("raised", "pf", "m")]
    assert out[0].at == T0 + timedelta(minutes=10)


def test_silence_by_time_and_by_last_will() -> None:
    rules = engine(
        "  - {id: quiet, name: quiet, scope: {kind: flood_gauge}, when: {silent: 10m}}\n"
    )
    rules.on_points([point("g1", "flood_gauge", 0, water_level_m=1.0)])
    rules.on_points([point("g2", "flood_gauge", 0, water_level_m=1.0)])
    rules.on_points([point("e1", "env_monitor", 0, pm25=1.0)])  # not in scope
    assert rules.tick(T0 + timedelta(minutes=9)) == []
    rules.on_points([point("g2", "flood_gauge", 9, water_level_m=1.0)])
    assert kinds(rules.tick(T0 + timedelta(minutes=10))) == [("raised", "quiet", "g1")]
    # g2's Last Will: at once, not after ten minutes
    assert kinds(rules.on_status("g2", False, T0 + timedelta(minutes=11))) == [
        ("raised", "quiet", "g2")
    ]
    back = rules.on_points([point("g1", "flood_gauge", 12, water_level_m=1.0)]).transitions
    assert kinds(back) == [("cleared", "quiet", "g1")]


def test_a_silence_alert_clears_only_after_fresh_readings_never_on_a_tick() -> None:
    """A monitor reporting about every silence threshold does not flap open/cleared."""
    rules = RuleEngine(
        parse_rule_text(
            "rules:\n"
            "  - {id: quiet, name: quiet, scope: {kind: env_monitor}, when: {silent: 30m}}\n"
        ).rules,
        Derivations(RulesSettings(), SITE),
        StaticCatalog(()).get,
        silence_clear_readings=2,
    )
    rules.on_points([point("e1", "env_monitor", 0, pm25=10.0)])
    assert kinds(rules.tick(T0 + timedelta(minutes=31))) == [("raised", "quiet", "e1")]
    assert rules.on_points([point("e1", "env_monitor", 32, pm25=10.0)]).transitions == []
    assert rules.tick(T0 + timedelta(minutes=33)) == []  # one fresh reading: still raised
    assert rules.is_raised("quiet", "e1")
    back = rules.on_points([point("e1", "env_monitor", 34, pm25=10.0)]).transitions
    assert kinds(back) == [("cleared", "quiet", "e1")]
    # Silent again after one reading: the count starts over.
    assert kinds(rules.tick(T0 + timedelta(minutes=65))) == [("raised", "quiet", "e1")]
    rules.on_points([point("e1", "env_monitor", 66, pm25=10.0)])
    assert rules.tick(T0 + timedelta(minutes=97)) == []  # still raised, no repeat
    rules.on_points([point("e1", "env_monitor", 98, pm25=10.0)])
    assert rules.is_raised("quiet", "e1")
    assert kinds(rules.on_points([point("e1", "env_monitor", 99, pm25=1.0)]).transitions) == [
        ("cleared", "quiet", "e1")
    ]


def test_flood_levels_from_settings_and_the_derived_point() -> None:
    settings = RulesSettings(stations={"g-chau-doc": FloodLevels(bd1_m=3.0, bd2_m=3.5, bd3_m=4.0)})
    gauge = DeviceFacts("g-chau-doc", "flood_gauge", "Châu Đốc")
    rules = engine(
        "  - {id: bd2, name: bd2, when: {value: flood_level, above: 1.5}}\n",
        gauge,
        settings=settings,
    )
    low = rules.on_points([point("g-chau-doc", "flood_gauge", 0, water_level_m=2.1)])
    assert low.transitions == []  # 2.1 m is over BĐ III at Cần Thơ, not at Châu Đốc
    flood = low.derived[0]
    assert flood.measurement == "flood"
    assert flood.fields["alert_level"] == 0 and flood.fields["bd1_m"] == 3.0
    assert flood.tags == {"device_id": "g-chau-doc", "district": "Châu Đốc"}
    high = rules.on_points([point("g-chau-doc", "flood_gauge", 1, water_level_m=3.6)])
    assert kinds(high.transitions) == [("raised", "bd2", "g-chau-doc")]
    assert high.derived[0].fields["alert_level"] == 2


def test_lamp_failure_day_burning_and_power_bounds() -> None:
    lamp = DeviceFacts("lamp-1", "streetlight", "Ninh Kiều", frozenset({"hoa-binh"}), 100.0)
    text = (
        "  - {id: fail, name: fail, when: {flag: lamp_failure}}\n"
        "  - {id: day, name: day, when: {flag: day_burning}}\n"
        "  - {id: high, name: high, when: {flag: power_too_high}}\n"
    )
    rules = engine(text, lamp)
    night = 5 * 60  # 22:00 local
    healthy = rules.on_points(
        [point("lamp-1", "streetlight", night, power_w=70.0, dim_level=70.0, lamp_on=True)]
    )
    assert healthy.transitions == []
    failed = rules.on_points(
        [point("lamp-1", "streetlight", night + 5, power_w=0.5, dim_level=70.0, lamp_on=True)]
    )
    assert kinds(failed.transitions) == [("raised", "fail", "lamp-1")]
    noon = -5 * 60  # 12:00 local
    day = rules.on_points(
        [point("lamp-1", "streetlight", noon, power_w=100.0, dim_level=100.0, lamp_on=True)]
    )
    assert ("raised", "day", "lamp-1") in kinds(day.transitions)
    high = rules.on_points(
        [point("lamp-1", "streetlight", night + 10, power_w=100.0, dim_level=50.0, lamp_on=True)]
    )
    assert ("raised", "high", "lamp-1") in kinds(high.transitions)


def test_scope_by_district_and_group() -> None:
    a = DeviceFacts("a", "env_monitor", "Ninh Kiều", frozenset({"centre"}))
    b = DeviceFacts("b", "env_monitor", "Cái Răng", frozenset({"south"}))
    rules = engine(
        "  - {id: nk, name: nk, scope: {district: Ninh Kiều}, when: {value: pm25, above: 1}}\n"
        "  - {id: south, name: s, scope: {group: south}, when: {value: pm25, above: 1}}\n",
        a,
        b,
    )
    out = rules.on_points(
        [point("a", "env_monitor", 0, pm25=5.0), point("b", "env_monitor", 0, pm25=5.0)]
    )
    assert kinds(out.transitions) == [("raised", "nk", "a"), ("raised", "south", "b")]


def test_reloading_keeps_the_state_of_unchanged_rules() -> None:
    text = "  - {id: hot, name: hot, when: {value: temperature_c, above: 35}}\n"
    rules = engine(text + "  - {id: cold, name: cold, when: {value: temperature_c, below: 20}}\n")
    rules.on_points([point("e", "env_monitor", 0, temperature_c=40.0)])
    assert rules.is_raised("hot", "e")
    rules.set_rules(parse_rule_text("rules:\n" + text).rules)
    assert rules.is_raised("hot", "e")
    again = rules.on_points([point("e", "env_monitor", 1, temperature_c=41.0)])
    assert again.transitions == []  # still raised: no duplicate
    assert [r.id for r in rules.rules] == ["hot"]


def test_state_is_bounded_by_max_devices() -> None:
    rules = RuleEngine(
        parse_rule_text("rules:\n  - {id: q, name: q, when: {silent: 1m}}\n").rules,
        Derivations(RulesSettings(), SITE),
        StaticCatalog().get,
        max_devices=100,
    )
    for i in range(1000):
        rules.on_points([point(f"d{i}", "env_monitor", 0, pm25=1.0)])
    assert len(rules.tick(T0 + timedelta(minutes=5))) == 100


def test_aqi_is_derived_per_monitor_with_its_category() -> None:
    rules = engine("  - {id: poor, name: poor, when: {value: aqi_category, above: 2.5}}\n")
    out = []
    derived = []
    for minute in range(0, 120, 10):
        o = rules.on_points([point("env", "env_monitor", minute, pm25=70.0, pm10=60.0)])
        out += o.transitions
        derived += o.derived
    assert kinds(out) == [("raised", "poor", "env")]
    assert out[0].at == T0 + timedelta(minutes=60)  # the second hour: NowCast needs two
    last = derived[-1]
    assert last.measurement == "aqi"
    assert last.fields["category"] == 3 and last.fields["pm25_nowcast"] == 70.0
