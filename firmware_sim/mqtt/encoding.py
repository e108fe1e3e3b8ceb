"""What a simulated device puts on the wire: readings (plain JSON or SenML), state, status.

Plain readings are ``{"ts", "seq", "metrics"}`` with the device's local time and offset;
SenML packs (RFC 8428) carry the base name of ``devices.wire.senml_base_name`` and the
base time on their first record, and the SenML unit of each catalogue unit that has
one. Floats are rounded to three decimals (below every sensor's resolution, and
messages stay short). The retained ``status`` is ``online`` / ``offline``.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

from devices.wire import DeviceKind, kind_spec, senml_base_name

ONLINE = b"online"
OFFLINE = b"offline"
# SenML (RFC 8428) unit names of the catalogue's units; others are left out.
_SENML_UNITS = {
    "W": "W",
    "V": "V",
    "A": "A",
    "Hz": "Hz",
    "m": "m",
    "mm": "mm",
    "°C": "Cel",
    "%": "%RH",
    "µg/m³": "ug/m3",
    "dBA": "dB",
    "kWh": "kWh",
    "h": "h",
}


def local_timezone(utc_offset_h: float) -> timezone:
    return timezone(timedelta(hours=utc_offset_h))


def format_ts(when: datetime, tz: timezone) -> str:
    """ISO 8601 with the device's offset, to the second: ``2026-11-22T18:05:00+07:00``."""
    return when.astimezone(tz).isoformat(timespec="seconds")


def _wire_value(value: Any) -> Any:
    # Three decimals are below every sensor's resolution and keep messages short.
    if isinstance(value, float):
        return round(value, 3)
    return value


def encode_plain(metrics: dict[str, Any], ts: str, seq: int) -> bytes:
    body = {"ts": ts, "seq": seq, "metrics": {k: _wire_value(v) for k, v in metrics.items()}}
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def encode_senml(
    device_id: str, kind_units: dict[str, str], metrics: dict[str, Any], when: datetime
) -> bytes:
    """An RFC 8428 pack: base name and base time on the first record, one record a metric."""
    records: list[dict[str, Any]] = []
    base_time = round(when.timestamp(), 3)
    for name, value in metrics.items():
        record: dict[str, Any] = {"n": name}
        if not records:
            record = {"bn": senml_base_name(device_id), "bt": base_time, **record}
        unit = kind_units.get(name)
        if unit is not None:
            record["u"] = unit
        if isinstance(value, bool):
            record["vb"] = value
        elif isinstance(value, int | float):
            record["v"] = _wire_value(value)
        else:
            record["vs"] = str(value)
        records.append(record)
    return json.dumps(records, separators=(",", ":"), ensure_ascii=False).encode()


def senml_units(kind: DeviceKind) -> dict[str, str]:
    return {m.name: _SENML_UNITS[m.unit] for m in kind_spec(kind).metrics if m.unit in _SENML_UNITS}


def encode_state(state: dict[str, Any], ts: str) -> bytes:
    """The retained ``state``: ``{"ts", ...}`` with the model's keys (datetimes as ISO)."""
    body = {"ts": ts, **state}
    return json.dumps(body, separators=(",", ":"), default=_json_default).encode()


def _json_default(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot encode {type(value).__name__} in a state payload")
