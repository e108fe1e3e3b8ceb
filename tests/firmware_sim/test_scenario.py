"""Scenario files: every shipped one loads and expands the same way twice; bad ones say where.

The expansion is checked for what the fleet and the registry rely on: unique valid
ids, positions in and around Cần Thơ, poles ~35 m apart along their street, rated
power within the street class's range, cabinets that exist for the lamps they feed,
faults on the share of the fleet asked for, and the same devices for the same seed.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest

from devices.wire import DeviceKind, is_valid_device_id
from firmware_sim.faults import Fault
from firmware_sim.scenario import (
    BuildingType,
    DeviceSpec,
    LatLon,
    RoadClass,
    Scenario,
    ScenarioError,
    distance_m,
    expand,
    limit_devices,
    load_scenario,
    shipped_scenarios,
)

NINE_DISTRICTS = {"Ninh Kiều", "Bình Thủy", "Cái Răng", "Ô Môn", "Thốt Nốt", "Phong Điền",
                  "Cờ Đỏ", "Thới Lai", "Vĩnh Thạnh"}  # fmt: skip
SHIPPED = {"ci-small", "can-tho-demo", "flood-evening", "pollution-episode", "dimming-night"}
ID_PATTERN = re.compile(r"^(sl|sp|env|fg|em|cab)-[a-z]{1,4}-[0-9]{5}$")


def test_the_five_scenarios_are_shipped() -> None:
    assert {p.stem for p in shipped_scenarios()} == SHIPPED


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_scenario_loads_and_expands_deterministically(name: str) -> None:
    scenario = load_scenario(name)
    specs = expand(scenario)

    assert specs == expand(load_scenario(name))  # same file, same seed: same devices
    ids = [s.device_id for s in specs]
    assert len(ids) == len(set(ids))
    assert all(is_valid_device_id(i) and ID_PATTERN.match(i) for i in ids)
    assert all(9.9 < s.latitude < 10.35 and 105.3 < s.longitude < 105.85 for s in specs)
    assert {s.district for s in specs} <= NINE_DISTRICTS
    assert scenario.start.utcoffset() == timedelta(hours=7)
    _check_lamps(scenario, specs)
    _check_cabinets(specs)


def _check_lamps(scenario: Scenario, specs: list[DeviceSpec]) -> None:
    for spec in specs:
        if spec.kind in (DeviceKind.STREETLIGHT, DeviceKind.SMART_POLE):
            assert spec.rated_power_w is not None and spec.street is not None
            low = min(r[0] for r in scenario.lamp_power_w.values())
            high = max(r[1] for r in scenario.lamp_power_w.values())
            assert low <= spec.rated_power_w <= high
        else:
            assert spec.rated_power_w is None


def _check_cabinets(specs: list[DeviceSpec]) -> None:
    cabinets = {s.device_id: s for s in specs if s.kind is DeviceKind.LIGHTING_CABINET}
    fed = Counter((s.cabinet_id, s.cabinet_circuit) for s in specs if s.cabinet_id)
    for (cabinet_id, circuit), lamps in fed.items():
        cabinet = cabinets[cabinet_id]
        assert circuit is not None and 1 <= circuit <= len(cabinet.circuits) <= 16
        assert cabinet.circuits[circuit - 1].lamps == lamps
    for cabinet in cabinets.values():
        assert sum(c.lamps for c in cabinet.circuits) == sum(
            n for (cab, _), n in fed.items() if cab == cabinet.device_id
        )


def test_ci_small_has_every_kind_and_a_few_faults_for_an_hour_at_full_speed() -> None:
    scenario = load_scenario("ci-small")
    specs = expand(scenario)
    kinds = Counter(s.kind for s in specs)

    assert 25 <= len(specs) <= 40
    assert set(kinds) == set(DeviceKind)
    assert kinds[DeviceKind.ENERGY_METER] == 1 and kinds[DeviceKind.LIGHTING_CABINET] == 1
    assert 3 <= sum(1 for s in specs if s.faults.faults) <= 10
    assert scenario.acceleration == "max" and scenario.duration == timedelta(hours=1)


def test_the_demo_is_the_whole_city() -> None:
    specs = expand(load_scenario("can-tho-demo"))
    kinds = Counter(s.kind for s in specs)
    buildings = Counter(s.building for s in specs if s.kind is DeviceKind.ENERGY_METER)
    streets = {s.street for s in specs if s.street}

    assert {s.district for s in specs} == NINE_DISTRICTS
    assert kinds[DeviceKind.STREETLIGHT] >= 3000
    assert kinds[DeviceKind.SMART_POLE] >= 20 and kinds[DeviceKind.LIGHTING_CABINET] >= 50
    assert kinds[DeviceKind.ENV_MONITOR] >= 9 and kinds[DeviceKind.FLOOD_GAUGE] >= 5
    # The ADB project's buildings: 19 hospitals, 27 schools, 4 offices.
    assert buildings == {BuildingType.HOSPITAL: 19, BuildingType.SCHOOL: 27, BuildingType.OFFICE: 4}
    orders = Counter(s.word_order for s in specs if s.kind is DeviceKind.ENERGY_METER)
    assert orders[None] >= 30 and 3 <= sum(n for o, n in orders.items() if o) <= 20
    assert {"Đại lộ Hòa Bình", "Đường 30 Tháng 4", "Đường Trần Hưng Đạo", "Đường Nguyễn Văn Cừ",
            "Đường Võ Văn Kiệt"} <= streets  # fmt: skip
    lamps = [s for s in specs if s.kind is DeviceKind.STREETLIGHT]
    failing = [s for s in lamps if s.faults.has(Fault.LAMP_FAILURE)]
    assert abs(len(failing) - 0.02 * len(lamps)) <= 1  # `share: 0.02` of the streetlights


def test_poles_stand_about_35_m_apart_along_the_street() -> None:
    scenario = load_scenario("ci-small")
    street = scenario.districts[0].streets[1]  # Trần Hưng Đạo: one side, 4 lamps
    poles = [s for s in expand(scenario) if s.street == street.name]
    gaps = [
        distance_m(LatLon(lat=a.latitude, lon=a.longitude), LatLon(lat=b.latitude, lon=b.longitude))
        for a, b in itertools.pairwise(poles)
    ]
    assert len(gaps) == 3 and all(abs(gap - 35) < 0.5 for gap in gaps)
    assert (poles[0].latitude, poles[0].longitude) == (street.start.lat, street.start.lon)


def test_rated_power_comes_from_the_street_class_range() -> None:
    scenario = load_scenario("dimming-night")
    ranges = scenario.lamp_power_w
    for street in scenario.districts[0].streets:
        lamps = [s for s in expand(scenario) if s.street == street.name and s.rated_power_w]
        powers = {s.rated_power_w for s in lamps}
        assert len(powers) == 1  # one lamp model per street
        (power,) = powers
        low, high = ranges[street.road]
        assert power is not None and low <= power <= high
    assert ranges[RoadClass.MAIN] == (100.0, 150.0)


def test_another_seed_gives_other_faults_and_powers_but_the_same_places() -> None:
    scenario = load_scenario("can-tho-demo")
    other = scenario.model_copy(update={"seed": scenario.seed + 1})
    first, second = expand(scenario), expand(other)

    assert [(s.device_id, s.latitude, s.longitude) for s in first if s.street] == [
        (s.device_id, s.latitude, s.longitude) for s in second if s.street
    ]
    assert {s.device_id for s in first if s.faults.faults} != {
        s.device_id for s in second if s.faults.faults
    }


def test_limit_devices_keeps_the_mix_and_drops_references_to_missing_cabinets() -> None:
    specs = expand(load_scenario("can-tho-demo"))
    kept = limit_devices(specs, 500)

    assert len(kept) == 500
    assert len({s.district for s in kept}) == 9
    kept_ids = {s.device_id for s in kept}
    assert all(s.cabinet_id is None or s.cabinet_id in kept_ids for s in kept)
    assert limit_devices(specs, 10**6) == specs


# --- bad files ----------------------------------------------------------------------------

GOOD = """
name: t
seed: 1
start: "2026-03-20T18:00:00+07:00"
duration: 90m
districts:
  - name: Ninh Kiều
    code: nk
    centre: [10.03, 105.78]
    streets:
      - name: Đại lộ Hòa Bình
        start: [10.0343, 105.7878]
        end: [10.0290, 105.7783]
        streetlights: 3
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "scenario.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_good_small_file_loads_with_defaults(tmp_path: Path) -> None:
    scenario = load_scenario(write(tmp_path, GOOD))
    assert scenario.duration == timedelta(minutes=90)
    assert scenario.acceleration == "max"
    assert [s.device_id for s in expand(scenario)] == ["sl-nk-00001", "sl-nk-00002", "sl-nk-00003"]


@pytest.mark.parametrize(
    ("change", "where"),
    [
        (
            ("streetlights: 3", "streetlights: 3\n        colour: red"),
            "districts[0].streets[0].colour",
        ),
        (("end: [10.0290, 105.7783]", "end: [100.0, 105.7783]"), "districts[0].streets[0].end.lat"),
        (("duration: 90m", "duration: soon"), "duration"),
        (('start: "2026-03-20T18:00:00+07:00"', 'start: "2026-03-20T18:00:00"'), "start"),
        (("code: nk", "code: NK1"), "districts[0].code"),
        (("seed: 1", "seed: 1\nacceleration: fast"), "acceleration"),
        (("seed: 1", "seed: 1\nfaults: [{fault: lamp_failure}]"), "faults[0]"),
        (("seed: 1", "seed: 1\nfaults: [{fault: melting, share: 0.1}]"), "faults[0].fault"),
        (("seed: 1", "seed: 1\nevents: [{type: earthquake}]"), "events[0]"),
    ],
)
def test_a_bad_file_names_the_file_and_the_field(
    tmp_path: Path, change: tuple[str, str], where: str
) -> None:
    path = write(tmp_path, GOOD.replace(*change))
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    message = str(caught.value)
    # file:line: field: reason, the line being the field's (or its item's) own
    assert re.search(rf"^{re.escape(str(path))}:\d+: {re.escape(where)}[:.\[]", message, re.M), (
        message
    )


def test_unreadable_files_are_scenario_errors(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="not valid YAML"):
        load_scenario(write(tmp_path, "name: [unclosed"))
    with pytest.raises(ScenarioError, match="a scenario is a YAML mapping"):
        load_scenario(write(tmp_path, "- just\n- a list\n"))
    with pytest.raises(ScenarioError, match="cannot read"):
        load_scenario(tmp_path / "missing.yaml")


def test_a_fault_for_an_unknown_device_is_named(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        GOOD.replace("seed: 1", "seed: 1\nfaults: [{fault: spikes, devices: [sl-nk-09999]}]"),
    )
    with pytest.raises(ScenarioError, match=r"faults\[0\]\.devices: no such devices: sl-nk-09999"):
        expand(load_scenario(path))
