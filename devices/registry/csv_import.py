"""The field inventory: a CSV a technician fills in a spreadsheet, imported all or nothing.

One row per device, a header row naming the columns (``id``, ``kind`` and ``name`` are
required, the others optional; an empty cell means "not given"). Excel's UTF-8 BOM and
its ``;`` delimiter (used where ``,`` is the decimal separator) are accepted. A file
with any bad row is rejected as a whole, with one ``RowError`` per problem naming the
physical line and the column, so the technician fixes everything in one pass.

The file goes back into spreadsheets, so a text cell that a spreadsheet would run as a
formula (starting with ``=``, ``+``, ``-``, ``@``, tab or CR: ``=HYPERLINK(…)``,
``@SUM(…)``) is refused with its line and column rather than stored; number columns
keep their signs (a longitude of ``-10.5`` is a number, not a formula). Control
characters (NUL, escape, line breaks inside a cell, …) are refused in every cell.
(The CSV Pharos writes holds slug ids, dates and numbers only, so it needs no escaping;
the broker secrets file must keep its secrets exact, a leading ``-`` included.)
"""

from __future__ import annotations

import _csv
import csv
import io
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from devices.registry.schemas import DeviceCreate
from devices.registry.service import ImportOutcome, InvalidError, Registry, RegistryError
from devices.wire import DeviceKind

COLUMNS = (
    "id", "kind", "name", "latitude", "longitude", "district", "ward", "street", "pole",
    "cabinet_id", "cabinet_circuit", "groups", "rated_power_w", "modbus_host", "modbus_port",
    "modbus_unit", "register_map", "modbus_word_order", "poll_interval_s", "firmware",
)  # fmt: skip
REQUIRED_COLUMNS = ("id", "kind", "name")
_DECIMAL_COLUMNS = frozenset({"latitude", "longitude", "rated_power_w"})
_DECIMAL_COMMA = re.compile(r"-?[0-9]+,[0-9]+")
_GROUP_SEPARATORS = re.compile(r"[;,]")
_NUMBER_COLUMNS = _DECIMAL_COLUMNS | {
    "cabinet_circuit",
    "modbus_port",
    "modbus_unit",
    "poll_interval_s",
}
# What spreadsheet programs take as the start of a formula (OWASP "CSV injection").
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_HEADER_LINE = 1


@dataclass(frozen=True, slots=True)
class RowError:
    """One problem in the file: its physical line (header = 1), the column if known, why."""

    line: int
    column: str | None
    reason: str

    def __str__(self) -> str:
        where = f"line {self.line}" + (f", column {self.column}" if self.column else "")
        return f"{where}: {self.reason}"


class CsvImportError(ValueError):
    """The whole file is rejected; ``errors`` lists every problem, in line order."""

    def __init__(self, errors: Iterable[RowError]) -> None:
        self.errors = sorted(errors, key=lambda e: (e.line, e.column or ""))
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(str(error) for error in self.errors)


@dataclass(frozen=True, slots=True)
class CsvRow:
    """A validated row and the line it started on, so later errors can still name it."""

    line: int
    device: DeviceCreate


def parse_device_csv(text: str) -> list[DeviceCreate]:
    """The devices of an inventory file; ``CsvImportError`` if any row is bad."""
    return [row.device for row in parse_device_rows(text)]


def parse_device_rows(text: str) -> list[CsvRow]:
    """Like ``parse_device_csv`` but each device keeps its line number."""
    rows, errors = _parse(text)
    if errors:
        raise CsvImportError(errors)
    return rows


def import_devices(registry: Registry, text: str) -> ImportOutcome:
    """Parse and upsert every row; any problem raises ``CsvImportError`` naming its line.

    Rows that validate alone are still checked against the registry (groups, district,
    cabinet) even when others failed, so one pass reports everything. Raising inside
    ``registry_session`` rolls the transaction back: nothing of a bad file is stored.
    """
    rows, errors = _parse(text)
    outcome = ImportOutcome()
    # Cabinets first: a lamp names the cabinet that feeds it, wherever it sits in the file.
    for row in sorted(rows, key=lambda r: r.device.kind != DeviceKind.LIGHTING_CABINET):
        try:
            _merge(outcome, registry.upsert_devices([row.device]))
        except RegistryError as exc:
            errors.append(_registry_row_error(row.line, exc))
    if errors:
        raise CsvImportError(errors)
    return outcome


# -- parsing -----------------------------------------------------------------


def _parse(text: str) -> tuple[list[CsvRow], list[RowError]]:
    read = _read(text)
    if isinstance(read, RowError):
        return [], [read]
    header, records = read
    columns, errors = _check_header(header)
    if any(e.column in REQUIRED_COLUMNS for e in errors):
        return [], errors  # without a required column every row would fail the same way
    rows, row_errors = _validate_records(columns, records)
    return rows, errors + row_errors


def _read(text: str) -> tuple[list[str], list[tuple[int, list[str]]]] | RowError:
    """The header and the records, or why the text is not a CSV with a header."""
    text = text.removeprefix("\ufeff")
    header_line = text.splitlines()[0] if text.strip() else ""
    if not header_line.strip():
        reason = "no header row: the first line must name the columns: " + ", ".join(COLUMNS)
        return RowError(_HEADER_LINE, None, reason)
    reader = csv.reader(
        io.StringIO(text, newline=""), delimiter=_delimiter(header_line), strict=True
    )
    try:
        return next(reader), _records(reader)
    except csv.Error as exc:
        return RowError(reader.line_num, None, f"malformed CSV: {exc}")


def _validate_records(
    columns: Sequence[str | None], records: Iterable[tuple[int, list[str]]]
) -> tuple[list[CsvRow], list[RowError]]:
    rows: list[CsvRow] = []
    errors: list[RowError] = []
    first_line_of: dict[str, int] = {}
    for line, cells in records:
        values, cell_errors = _row_values(line, columns, cells)
        errors += cell_errors
        if cell_errors:
            continue
        device_id = str(values.get("id", ""))
        duplicate = device_id in first_line_of
        if duplicate:
            reason = f"duplicate id {device_id!r}; first on line {first_line_of[device_id]}"
            errors.append(RowError(line, "id", reason))
        elif device_id:
            first_line_of[device_id] = line
        try:
            device = DeviceCreate.model_validate(values)
        except ValidationError as exc:
            errors += [_validation_row_error(line, err) for err in exc.errors()]
            continue
        if not duplicate:  # the first occurrence is the one imported if the file is fixed
            rows.append(CsvRow(line, device))
    return rows, errors


def _delimiter(header_line: str) -> str:
    # Excel writes ';' in locales whose decimal separator is ',' (Vietnamese among them).
    return ";" if header_line.count(";") > header_line.count(",") else ","


def _records(reader: _csv.Reader) -> list[tuple[int, list[str]]]:
    """Each non-blank record with the physical line it starts on (quoted cells may span lines)."""
    records = []
    start = reader.line_num + 1
    for cells in reader:
        if any(cell.strip() for cell in cells):
            records.append((start, cells))
        start = reader.line_num + 1
    return records


def _check_header(header: Sequence[str]) -> tuple[list[str | None], list[RowError]]:
    """The column of each position and the header's problems.

    ``None`` marks a column already reported (unknown, twice); ``""`` an unnamed one,
    which spreadsheets add after the last column and which must stay empty.
    """
    columns: list[str | None] = []
    errors: list[RowError] = []
    for raw in header:
        name = raw.strip().lower()
        if not name:
            columns.append("")
        elif name not in COLUMNS:
            columns.append(None)
            known = ", ".join(COLUMNS)
            errors.append(RowError(_HEADER_LINE, raw.strip(), f"unknown column; known: {known}"))
        elif name in columns:
            columns.append(None)
            errors.append(RowError(_HEADER_LINE, name, "column appears twice in the header"))
        else:
            columns.append(name)
    for required in REQUIRED_COLUMNS:
        if required not in columns:
            errors.append(
                RowError(_HEADER_LINE, required, "required column missing from the header")
            )
    return columns, errors


def _row_values(
    line: int, columns: Sequence[str | None], cells: Sequence[str]
) -> tuple[dict[str, Any], list[RowError]]:
    """The given cells of a record by column name; empty cells are left out (not given)."""
    if len(cells) > len(columns) and any(c.strip() for c in cells[len(columns) :]):
        reason = f"{len(cells)} cells but the header names {len(columns)} columns"
        return {}, [RowError(line, None, reason)]
    values: dict[str, Any] = {}
    errors: list[RowError] = []
    for position, (column, cell) in enumerate(zip(columns, cells, strict=False), start=1):
        value = unicodedata.normalize("NFC", cell.strip())
        if column == "" and value:
            reason = f"a value in column {position}, which has no name in the header"
            return {}, [RowError(line, None, reason)]
        if not column or not value:
            continue
        unsafe = _unsafe_cell(column, cell, value)
        if unsafe is not None:
            errors.append(RowError(line, column, unsafe))
        else:
            values[column] = _cell_value(column, value)
    return values, errors


def _unsafe_cell(column: str, raw: str, value: str) -> str | None:
    """Why a cell cannot be stored as it is, or ``None``."""
    control = _CONTROL.search(raw.strip(" "))
    if control is not None:
        return f"control character {control.group()!r} in the cell; remove it"
    if column not in _NUMBER_COLUMNS and value.startswith(FORMULA_PREFIXES):
        return (
            f"starts with {value[0]!r}, which spreadsheets run as a formula; "
            "remove the sign or write it after a letter"
        )
    return None


def _cell_value(column: str, value: str) -> Any:
    if column == "groups":
        return [g.strip() for g in _GROUP_SEPARATORS.split(value) if g.strip()]
    if column in _DECIMAL_COLUMNS and _DECIMAL_COMMA.fullmatch(value):
        return value.replace(",", ".")  # "10,0312" from a Vietnamese-locale spreadsheet
    return value


# -- errors ------------------------------------------------------------------


def _validation_row_error(line: int, err: ErrorDetails) -> RowError:
    reason = err["msg"].removeprefix("Value error, ")
    loc = err["loc"]
    column = str(loc[0]) if loc else _column_named_in(reason)
    return RowError(line, column, reason)


def _registry_row_error(line: int, exc: RegistryError) -> RowError:
    if isinstance(exc, InvalidError):
        column = exc.field if exc.field in COLUMNS else _column_named_in(exc.reason)
        return RowError(line, column, exc.reason)
    return RowError(line, None, str(exc))


def _column_named_in(reason: str) -> str | None:
    """The column a whole-row reason starts with ("rated_power_w is required for ...")."""
    first_word = reason.split(" ", 1)[0]
    return first_word if first_word in COLUMNS else None


def _merge(total: ImportOutcome, part: ImportOutcome) -> None:
    total.created += part.created
    total.updated += part.updated
    total.unchanged += part.unchanged
    total.credentials += part.credentials
