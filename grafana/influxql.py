"""The InfluxQL target of Grafana's InfluxDB datasource, as a typed model for the SDK.

``grafana-foundation-sdk`` ships query types for many datasources but not for
InfluxDB, so this module adds one the way the SDK's own are made: a ``Dataquery``
variant with ``to_json``/``from_json`` and a builder. ``register()`` makes the SDK's
runtime decode ``"datasource": {"type": "influxdb"}`` targets into ``InfluxQLQuery``
when a board is loaded back from JSON (call it before ``Dashboard.from_json``).
Every query is raw InfluxQL (``rawQuery``), which InfluxDB 1.x, 2.x (v1 API) and 3.x
all answer.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Self

from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import runtime as cogruntime
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models.dashboard import DataSourceRef

DATASOURCE_TYPE = "influxdb"


class ResultFormat(StrEnum):
    TIME_SERIES = "time_series"
    TABLE = "table"


class InfluxQLQuery(cogvariants.Dataquery):
    """One raw InfluxQL target of a panel."""

    def __init__(
        self,
        ref_id: str = "A",
        query: str = "",
        result_format: ResultFormat = ResultFormat.TIME_SERIES,
        alias: str | None = None,
        datasource: DataSourceRef | None = None,
        hide: bool | None = None,
    ) -> None:
        self.ref_id = ref_id
        self.query = query
        self.result_format = result_format
        self.alias = alias
        self.datasource = datasource
        self.hide = hide

    def to_json(self) -> dict[str, object]:
        payload: dict[str, object] = {
            "refId": self.ref_id,
            "query": self.query,
            "rawQuery": True,
            "resultFormat": self.result_format.value,
        }
        if self.alias is not None:
            payload["alias"] = self.alias
        if self.datasource is not None:
            payload["datasource"] = self.datasource
        if self.hide is not None:
            payload["hide"] = self.hide
        return payload

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        source = data.get("datasource")
        return cls(
            ref_id=str(data.get("refId", "A")),
            query=str(data.get("query", "")),
            result_format=ResultFormat(data.get("resultFormat", ResultFormat.TIME_SERIES)),
            alias=data.get("alias"),
            datasource=DataSourceRef.from_json(source) if isinstance(source, dict) else None,
            hide=data.get("hide"),
        )


class InfluxQL(cogbuilder.Builder[cogvariants.Dataquery]):
    """Builder of an ``InfluxQLQuery`` (the SDK's builder style)."""

    def __init__(self, query: str, ref_id: str = "A") -> None:
        self._internal = InfluxQLQuery(ref_id=ref_id, query=query)

    def build(self) -> InfluxQLQuery:
        return self._internal

    def ref_id(self, ref_id: str) -> Self:
        self._internal.ref_id = ref_id
        return self

    def table(self) -> Self:
        self._internal.result_format = ResultFormat.TABLE
        return self

    def alias(self, alias: str) -> Self:
        self._internal.alias = alias
        return self

    def datasource(self, datasource: DataSourceRef) -> Self:
        self._internal.datasource = datasource
        return self


def register() -> None:
    """Teach the SDK's runtime to decode InfluxDB targets (idempotent)."""
    cogruntime.Runtime().register_dataquery_variant(
        cogruntime.DataqueryConfig(
            identifier=DATASOURCE_TYPE, from_json_hook=InfluxQLQuery.from_json
        )
    )
