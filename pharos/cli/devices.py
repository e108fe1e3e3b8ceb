"""``pharos devices …``: register, list, show, import, re-key and move devices through their life.

Every change runs in one registry transaction under an actor (``--actor``, default
``cli:$USER``), so it is audited and the broker's password and ACL files follow it.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from devices.registry.csv_import import CsvImportError, import_devices
from devices.registry.lifecycle import ALLOWED
from devices.registry.models import LifecycleState
from devices.registry.schemas import BrokerCredentials, DeviceCreate, DevicePublic, Page
from devices.registry.service import DeviceFilter, device_public
from devices.wire import DeviceKind
from pharos.cli.common import (
    EXIT_FAILED,
    EXIT_USAGE,
    ActorOption,
    changing_registry,
    fail,
    opened_runtime,
    render_table,
)

app = typer.Typer(
    help="Register, list, show and import devices; rotate their MQTT secrets; move them "
    "through their lifecycle (registered, installed, commissioned, in_service, "
    "maintenance, decommissioned).",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)

# How each DeviceCreate field is spelled on the command line, to name it in errors.
_OPTION_OF = {
    "id": "ID", "kind": "--kind", "name": "--name", "latitude": "--lat",
    "longitude": "--lon", "district": "--district", "ward": "--ward", "street": "--street",
    "pole": "--pole", "cabinet_id": "--cabinet", "cabinet_circuit": "--circuit",
    "groups": "--group", "rated_power_w": "--rated-power", "modbus_host": "--modbus-host",
    "modbus_port": "--modbus-port", "modbus_unit": "--modbus-unit",
    "register_map": "--register-map", "modbus_word_order": "--word-order",
    "poll_interval_s": "--poll-interval", "firmware": "--firmware",
}  # fmt: skip

DeviceId = Annotated[str, typer.Argument(metavar="ID", help="The device id, e.g. sl-nk-hb-001.")]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


# -- add -----------------------------------------------------------------------


@app.command("add")
def add(
    ctx: typer.Context,
    device_id: DeviceId,
    kind: Annotated[DeviceKind, typer.Option(help="What the device is.")],
    name: Annotated[str, typer.Option(help="A name people recognise, e.g. 'Đèn HB-012'.")],
    lat: Annotated[float | None, typer.Option(help="Latitude (WGS 84), e.g. 10.0342.")] = None,
    lon: Annotated[float | None, typer.Option(help="Longitude (WGS 84), e.g. 105.7826.")] = None,
    district: Annotated[str | None, typer.Option(help="District, e.g. 'Ninh Kiều'.")] = None,
    ward: Annotated[str | None, typer.Option(help="Ward (phường), e.g. 'Tân An'.")] = None,
    street: Annotated[str | None, typer.Option(help="Street, e.g. 'Đại lộ Hòa Bình'.")] = None,
    pole: Annotated[str | None, typer.Option(help="Pole number painted on the pole.")] = None,
    cabinet: Annotated[
        str | None, typer.Option(help="Id of the lighting cabinet that feeds this lamp.")
    ] = None,
    circuit: Annotated[
        int | None, typer.Option(help="Circuit number (1-16) in that cabinet.")
    ] = None,
    group: Annotated[
        list[str] | None, typer.Option("--group", help="A group id; repeat for several.")
    ] = None,
    rated_power: Annotated[
        float | None, typer.Option(help="Lamp rated power in W (streetlights, smart poles).")
    ] = None,
    modbus_host: Annotated[
        str | None, typer.Option(help="IP address of a Modbus device (meters, cabinets).")
    ] = None,
    modbus_port: Annotated[int | None, typer.Option(help="Modbus TCP port (502).")] = None,
    modbus_unit: Annotated[int | None, typer.Option(help="Modbus unit id (1).")] = None,
    register_map: Annotated[
        str | None, typer.Option(help="sdm630, sdm120 or lighting_cabinet.")
    ] = None,
    word_order: Annotated[
        str | None, typer.Option(help="Meter float word order: ABCD (Eastron), BADC, CDAB, DCBA.")
    ] = None,
    poll_interval: Annotated[
        float | None, typer.Option(help="Seconds between Modbus polls (default: settings).")
    ] = None,
    firmware: Annotated[str | None, typer.Option(help="Firmware version on the label.")] = None,
    actor: ActorOption = None,
) -> None:
    """Register one device and, for an MQTT device, print its broker secret ONCE.

    Example: a 150 W streetlight on Đại lộ Hòa Bình, on circuit 1 of cabinet
    cab-nk-hb-01 (register the cabinet first):

        pharos devices add sl-nk-hb-001 --kind streetlight \\
            --name "Đèn HB-012" --rated-power 150 \\
            --lat 10.0342 --lon 105.7826 --district "Ninh Kiều" \\
            --street "Đại lộ Hòa Bình" --pole HB-012 \\
            --cabinet cab-nk-hb-01 --circuit 1

    Write the printed secret into the device (or its provisioning sheet) straight away:
    Pharos keeps only a hash of it. Lost it? Run `pharos devices rotate-credentials ID`.
    """
    given: dict[str, Any] = {
        "id": device_id, "kind": kind, "name": name, "latitude": lat, "longitude": lon,
        "district": district, "ward": ward, "street": street, "pole": pole,
        "cabinet_id": cabinet, "cabinet_circuit": circuit, "groups": group or None,
        "rated_power_w": rated_power, "modbus_host": modbus_host, "modbus_port": modbus_port,
        "modbus_unit": modbus_unit, "register_map": register_map,
        "modbus_word_order": word_order, "poll_interval_s": poll_interval, "firmware": firmware,
    }  # fmt: skip
    data = _device_create({k: v for k, v in given.items() if v is not None})
    with opened_runtime(ctx) as runtime, changing_registry(runtime, actor) as registry:
        device, credentials = registry.create_device(data)
        public = device_public(device)
    typer.echo(f"registered {public.id}")
    typer.echo(_device_text(public))
    if credentials is not None:
        _print_secrets([credentials])


def _device_create(values: dict[str, Any]) -> DeviceCreate:
    try:
        return DeviceCreate.model_validate(values)
    except ValidationError as exc:
        for err in exc.errors():
            reason = err["msg"].removeprefix("Value error, ")
            # A whole-record rule ("rated_power_w is required for a streetlight") names its
            # field first; show the option to add or fix.
            field = str(err["loc"][0]) if err["loc"] else reason.split(" ", 1)[0]
            where = f"{_OPTION_OF[field]}: " if field in _OPTION_OF else ""
            typer.echo(f"error: {where}{reason}", err=True)
        raise typer.Exit(EXIT_USAGE) from None


# -- list and show -------------------------------------------------------------


@app.command("list")
def list_devices(
    ctx: typer.Context,
    kind: Annotated[DeviceKind | None, typer.Option(help="Only this kind.")] = None,
    district: Annotated[str | None, typer.Option(help="Only this district.")] = None,
    group: Annotated[str | None, typer.Option(help="Only members of this group id.")] = None,
    state: Annotated[LifecycleState | None, typer.Option(help="Only this state.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="At most this many.")] = 100,
    offset: Annotated[int, typer.Option(min=0, help="Skip this many first.")] = 0,
    as_json: JsonFlag = False,
) -> None:
    """List devices, sorted by id, optionally filtered.

    Example: the streetlights of Ninh Kiều still waiting to be installed:

        pharos devices list --kind streetlight \\
            --district "Ninh Kiều" --state registered
    """
    filters = DeviceFilter(kind=kind, district=district, group=group, state=state)
    with opened_runtime(ctx) as runtime, runtime.registry("cli:read") as registry:
        rows, total = registry.list_devices(filters, offset=offset, limit=limit)
        devices = [device_public(d) for d in rows]
    if as_json:
        page = Page[DevicePublic](items=devices, total=total, offset=offset, limit=limit)
        typer.echo(page.model_dump_json(indent=2))
        return
    if not devices:
        typer.echo(f"no devices match ({total} in total with these filters)")
        return
    table = [
        [d.id, d.kind.value, d.state.value, d.district or "-", d.street or "-", d.name]
        for d in devices
    ]
    typer.echo(render_table(["ID", "KIND", "STATE", "DISTRICT", "STREET", "NAME"], table))
    typer.echo(f"{offset + 1}-{offset + len(devices)} of {total} devices")


@app.command("show")
def show(ctx: typer.Context, device_id: DeviceId, as_json: JsonFlag = False) -> None:
    """Show one device, its commissioning checklist, and what is still missing.

    Example: pharos devices show sl-nk-hb-001
    """
    with opened_runtime(ctx) as runtime, runtime.registry("cli:read") as registry:
        public = device_public(registry.get_device(device_id))
    typer.echo(public.model_dump_json(indent=2) if as_json else _device_text(public))


def _device_text(d: DevicePublic) -> str:
    def row(label: str, value: object) -> str:
        return f"{label + ':':<15}{'-' if value in (None, '', []) else value}"

    position = f"{d.latitude}, {d.longitude}" if d.latitude is not None else None
    cabinet = f"{d.cabinet_id} circuit {d.cabinet_circuit or '?'}" if d.cabinet_id else None
    modbus = (
        f"{d.modbus_host}:{d.modbus_port} unit {d.modbus_unit} ({d.register_map})"
        if d.modbus_host
        else None
    )
    next_states = ", ".join(sorted(s.value for s in ALLOWED[d.state])) or "none (final)"
    lines = [
        row("id", d.id), row("kind", d.kind.value), row("name", d.name),
        row("state", f"{d.state.value} (next: {next_states})"), row("position", position),
        row("district", d.district), row("ward", d.ward), row("street", d.street),
        row("pole", d.pole), row("cabinet", cabinet), row("groups", ", ".join(d.groups)),
        row("rated power", f"{d.rated_power_w:g} W" if d.rated_power_w else None),
        row("modbus", modbus), row("firmware", d.firmware),
        row("updated", d.updated_at.isoformat(timespec="seconds")),
    ]  # fmt: skip
    return "\n".join(lines + _checklist_lines(d))


def _checklist_lines(d: DevicePublic) -> list[str]:
    c = d.commissioning

    def item(done: object, label: str) -> str:
        return f"  {'[x]' if done else '[ ]'} {label}"

    lines = [
        "commissioning:",
        item(c.position_set, "position set (latitude and longitude)"),
        item(c.first_telemetry_at, "first telemetry seen"),
        item(c.self_test_ok_at, "self-test acknowledged"),
    ]
    if c.signed_off_at is not None:
        lines.append(f"  signed off by {c.signed_off_by} at {c.signed_off_at:%Y-%m-%d %H:%M} UTC")
    elif c.missing:
        lines.append("  missing: " + ", ".join(c.missing))
    else:
        lines.append("  ready: `pharos devices transition ID commissioned` signs it off")
    return lines


# -- import ------------------------------------------------------------------


@app.command("import")
def import_csv(
    ctx: typer.Context,
    file: Annotated[
        Path,
        typer.Argument(
            metavar="FILE.csv", exists=True, dir_okay=False, help="The inventory CSV (UTF-8)."
        ),
    ],
    secrets_out: Annotated[
        Path | None,
        typer.Option(
            "--secrets-out",
            metavar="FILE",
            dir_okay=False,
            help="Write new devices' MQTT secrets to this CSV (mode 0600; must not exist) "
            "instead of printing them.",
        ),
    ] = None,
    actor: ActorOption = None,
) -> None:
    """Create or update devices from a field-inventory CSV, all or nothing.

    The first row names the columns: id, kind, name (required), latitude, longitude,
    district, ward, street, pole, cabinet_id, cabinet_circuit, groups, rated_power_w,
    modbus_host, modbus_port, modbus_unit, register_map, modbus_word_order,
    poll_interval_s, firmware. An empty cell means "not given". Groups
    (semicolon-separated ids) must exist first. Excel's "CSV UTF-8" with ',' or ';' works.
    A file with any bad row changes nothing and every problem is listed
    with its line and column. Importing the same file again changes nothing.

    Example:

        pharos devices import examples/inventory-can-tho.csv \\
            --secrets-out secrets.csv
    """
    text = _read_inventory(file)
    if secrets_out is not None and secrets_out.exists():
        fail(f"{secrets_out} exists and may hold earlier secrets; choose another file")
    try:
        with opened_runtime(ctx) as runtime, changing_registry(runtime, actor) as registry:
            outcome = import_devices(registry, text)
            if secrets_out is not None and outcome.credentials:
                # Inside the transaction: if the secrets cannot be written, nothing is saved.
                _write_secrets(secrets_out, outcome.credentials)
    except CsvImportError as exc:
        typer.echo(
            f"{file}: rejected, nothing was imported ({len(exc.errors)} problems):", err=True
        )
        for error in exc.errors:
            typer.echo(f"  {error}", err=True)
        _hint_missing_groups(exc)
        raise typer.Exit(EXIT_FAILED) from None
    except OSError as exc:
        fail(f"cannot write the secrets file, nothing was imported: {exc}")
    typer.echo(
        f"{file}: {len(outcome.created)} created, {len(outcome.updated)} updated, "
        f"{len(outcome.unchanged)} unchanged"
    )
    if secrets_out is not None and outcome.credentials:
        typer.echo(f"{len(outcome.credentials)} MQTT secrets written to {secrets_out} (mode 0600)")
    elif outcome.credentials:
        _print_secrets(outcome.credentials)


def _hint_missing_groups(exc: CsvImportError) -> None:
    """The groups the file names that do not exist, and the commands that create them."""
    missing = sorted(
        {
            found
            for error in exc.errors
            if error.column == "groups"
            for found in re.findall(r"no group '([^']+)'", error.reason)
        }
    )
    if missing:
        typer.echo(
            f"groups missing ({len(missing)}): {', '.join(missing)}; create them first:", err=True
        )
        for group_id in missing:
            typer.echo(f"  pharos groups create {group_id} --name {group_id!r}", err=True)


def _read_inventory(file: Path) -> str:
    try:
        return file.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        fail(f"{file} is not UTF-8 text (byte {exc.start}); in Excel save as 'CSV UTF-8'")
    except OSError as exc:
        fail(f"cannot read {file}: {exc}")


def _write_secrets(path: Path, credentials: Sequence[BrokerCredentials]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["username", "client_id", "secret"])
    writer.writerows([c.username, c.client_id, c.secret] for c in credentials)
    # O_EXCL: never overwrite a file that may hold the only copy of earlier secrets.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(buffer.getvalue())


def _print_secrets(credentials: Sequence[BrokerCredentials]) -> None:
    typer.echo("")
    typer.echo("MQTT credentials, shown only this once: store them now (Pharos keeps only a hash).")
    typer.echo("The username is also the MQTT client id.")
    rows = [[c.username, c.secret] for c in credentials]
    typer.echo(render_table(["USERNAME", "SECRET"], rows))


# -- credentials and lifecycle ---------------------------------------------------


@app.command("rotate-credentials")
def rotate_credentials(ctx: typer.Context, device_id: DeviceId, actor: ActorOption = None) -> None:
    """Give an MQTT device a new broker secret and print it ONCE; the old one stops working.

    Use it when a secret is lost or leaked, or a device is replaced. The broker is
    told to reload, so a device still using the old secret is disconnected.

    Example: pharos devices rotate-credentials sl-nk-hb-001
    """
    with opened_runtime(ctx) as runtime, changing_registry(runtime, actor) as registry:
        credentials = registry.rotate_credentials(device_id)
    typer.echo(f"new secret for {device_id}; the old one no longer works")
    _print_secrets([credentials])


@app.command("transition")
def transition(
    ctx: typer.Context,
    device_id: DeviceId,
    state: Annotated[LifecycleState, typer.Argument(metavar="STATE", help="The new state.")],
    note: Annotated[str | None, typer.Option(help="Why, kept in the audit log.")] = None,
    actor: ActorOption = None,
) -> None:
    """Move a device to another lifecycle state, or say why it may not.

    The order is registered → installed → commissioned → in_service ⇄ maintenance;
    any device may be decommissioned (final). Commissioning needs the checklist done:
    position set, first telemetry seen, self-test acknowledged (see `pharos devices show`).

    Example:

        pharos devices transition sl-nk-hb-001 installed --note "on pole HB-012"
    """
    with opened_runtime(ctx) as runtime, changing_registry(runtime, actor) as registry:
        before = LifecycleState(registry.get_device(device_id).state)
        registry.transition(device_id, state, note)
    typer.echo(f"{device_id}: {before.value} → {state.value}")
