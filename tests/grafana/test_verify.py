"""The query checks the board tests rest on: they must catch what is wrong."""

from __future__ import annotations

from grafana.verify import interpolate, regex_value, schema_problems, used_variables
from telemetry.derived import store_schema

SCHEMA = store_schema()


def test_a_query_on_known_names_passes() -> None:
    query = 'SELECT mean("pm25") FROM "env_monitor", "smart_pole" WHERE "district" =~ /x/'
    assert schema_problems(query, SCHEMA) == []


def test_an_unknown_measurement_fails() -> None:
    assert schema_problems('SELECT mean("pm25") FROM "air"', SCHEMA) == [
        "unknown measurement 'air'"
    ]


def test_an_unknown_field_or_tag_fails() -> None:
    problems = schema_problems('SELECT mean("pm2_5") FROM "env_monitor" GROUP BY "ward"', SCHEMA)
    assert problems == [
        "'pm2_5' is neither a tag nor a field of env_monitor",
        "'ward' is neither a tag nor a field of env_monitor",
    ]


def test_a_field_missing_from_one_of_two_measurements_fails() -> None:
    problems = schema_problems('SELECT mean("no2") FROM "env_monitor", "smart_pole"', SCHEMA)
    assert problems == ["'no2' is neither a tag nor a field of env_monitor, smart_pole"]


def test_derived_measurements_and_subquery_aliases() -> None:
    ok = 'SELECT sum("x") FROM (SELECT last("lamps_on") AS "x" FROM "fleet" GROUP BY "kind")'
    assert schema_problems(ok, SCHEMA) == []
    bad = 'SELECT sum("x") FROM (SELECT last("lamps") AS "x" FROM "fleet")'
    assert schema_problems(bad, SCHEMA) == ["'lamps' is neither a tag nor a field of fleet"]
    assert schema_problems("SELECT 1", SCHEMA)[0].startswith("no measurement named")


def test_interpolation_like_grafana() -> None:
    query = (
        'SELECT 1 FROM "a" WHERE $timeFilter AND "district" =~ /^$district$/ '
        "GROUP BY time($__interval)"
    )
    done = interpolate(query, {"district": ["Ninh Kiều"]}, time_filter="time > 0", interval="5m")
    assert (
        done == 'SELECT 1 FROM "a" WHERE time > 0 AND "district" =~ /^Ninh Kiều$/ GROUP BY time(5m)'
    )
    assert regex_value(None) == ".*"
    assert regex_value(["a.b", "c/d"]) == r"(a\.b|c\/d)"
    assert used_variables(query) == {"district"}
    assert used_variables('"uid": "${datasource}" $group') == {"group"}
