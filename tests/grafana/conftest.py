"""Fixtures: a filled city per module (broker, InfluxDB, simulator run, derived points)
and a recording Grafana API server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fixtures.influx import InfluxDB
from tests.grafana.fake_grafana import FakeGrafana, serving
from tests.grafana.scenario import City, running_city


@pytest.fixture(scope="module")
def city(influxdb: InfluxDB, tmp_path_factory: pytest.TempPathFactory) -> Iterator[City]:
    yield from running_city(influxdb, tmp_path_factory)


@pytest.fixture
def grafana() -> Iterator[tuple[FakeGrafana, str]]:
    yield from serving()
