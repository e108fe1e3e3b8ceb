"""VN_AQI against Decision 1459/QĐ-TCMT: the formula, NowCast, categories, its examples."""

from __future__ import annotations

import pytest

from rules.aqi import (
    Category,
    category,
    daily_aqi,
    hourly_aqi,
    nowcast,
    nowcast_rounded,
    round_half_up,
    sub_index,
)


def test_the_decisions_no2_example_is_a_misprint_the_formula_gives_59_35() -> None:
    # Printed as 60 in the decision; (100 - 50) / (200 - 100) × (118.7 - 100) + 50.
    assert sub_index("no2", 118.7) == pytest.approx(59.35)
    result = hourly_aqi({"no2": 118.7}, {"pm25": [10.0, 10.0, 10.0]})
    assert result is not None
    assert result.sub_indices["no2"] == pytest.approx(59.35)
    assert result.aqi == 59  # the highest sub-index, rounded half up: not 60


def test_nowcast_is_printed_to_one_decimal_half_up_as_in_the_decision() -> None:
    assert round_half_up(20.27, 1) == 20.3
    assert round_half_up(20.25, 1) == 20.3  # half up, where round() would give 20.2
    # A series whose NowCast is 20.27 to two decimals: 20.3 as the decision prints it.
    # w* = 19/21 → (19 + w·21 + w²·21) / (1 + w + w²) = 20.2656…
    hours = [19.0, 21.0, 21.0]
    value = nowcast(hours)
    assert value is not None
    assert nowcast_rounded(hours) == round_half_up(value, 1)
    assert f"{value:.2f}" == "20.27"
    assert nowcast_rounded(hours) == 20.3


def test_nowcast_weights_by_the_ratio_of_min_to_max() -> None:
    # w* = 10/40 = 0.25 ≤ 0.5 → w = 0.5: (40 + 0.5·20 + 0.25·10) / (1 + 0.5 + 0.25)
    assert nowcast([40.0, 20.0, 10.0]) == pytest.approx((40 + 10 + 2.5) / 1.75)
    # w* = 30/40 = 0.75 > 0.5 → w = 0.75
    assert nowcast([40.0, 30.0]) == pytest.approx((40 + 0.75 * 30) / 1.75)


def test_nowcast_missing_hours_weigh_zero_and_two_of_three_are_needed() -> None:
    assert nowcast([40.0, None, None, 20.0]) is None
    assert nowcast([None, 40.0, None]) is None
    # A missing second hour: its weight term drops out, the third keeps w².
    assert nowcast([40.0, None, 20.0]) == pytest.approx((40 + 0.25 * 20) / 1.25)
    # Only the first 12 hours count.
    assert nowcast([10.0] * 12 + [1000.0]) == pytest.approx(10.0)


def test_sub_index_breakpoints_and_segments() -> None:
    assert sub_index("pm25", 25) == 50
    assert sub_index("pm25", 50) == 100
    assert sub_index("pm25", 65) == pytest.approx(125)
    assert sub_index("pm10", 420) == 300
    assert sub_index("co", 10000) == 50
    assert sub_index("o3_8h", 500) is None  # no 8-hour breakpoint above 400
    with pytest.raises(ValueError, match="pm25"):
        sub_index("pm25", -1)


def test_categories_follow_the_decisions_ranges() -> None:
    assert [category(a) for a in (0, 50, 51, 100, 101, 150, 151, 200, 201, 300, 301, 500)] == [
        Category.GOOD,
        Category.GOOD,
        Category.MODERATE,
        Category.MODERATE,
        Category.POOR,
        Category.POOR,
        Category.BAD,
        Category.BAD,
        Category.VERY_BAD,
        Category.VERY_BAD,
        Category.HAZARDOUS,
        Category.HAZARDOUS,
    ]
    assert Category.POOR.rgb == (255, 126, 0)
    assert int(Category.HAZARDOUS) == 6


def test_hourly_aqi_needs_a_pm_nowcast_and_takes_the_highest_sub_index() -> None:
    assert hourly_aqi({"no2": 300.0}, {}) is None
    assert hourly_aqi({"no2": 300.0}, {"pm25": [30.0, None, None]}) is None
    result = hourly_aqi({"no2": 150.0, "co": 5000.0}, {"pm25": [60.0, 60.0], "pm10": [40.0]})
    assert result is not None
    assert result.pm25_nowcast == 60.0
    assert result.pm10_nowcast is None  # one hour only: no NowCast
    assert result.dominant == "pm25"
    assert result.aqi == round(sub_index("pm25", 60.0) or 0)
    assert result.category is Category.POOR


def test_daily_aqi_drops_the_o3_8h_term_above_400() -> None:
    result = daily_aqi(pm_24h={"pm25": 20.0}, max_1h={"o3": 170.0}, o3_max_8h=450.0)
    assert result is not None
    assert result.sub_indices["o3"] == pytest.approx(sub_index("o3_1h", 170.0) or 0)
    both = daily_aqi(pm_24h={"pm10": 30.0}, max_1h={"o3": 100.0}, o3_max_8h=110.0)
    assert both is not None
    assert both.sub_indices["o3"] == pytest.approx(75.0)  # the 8-hour term is higher
    assert daily_aqi(pm_24h={}, max_1h={"no2": 50.0}) is None
