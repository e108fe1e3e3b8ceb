"""``pharos groups …``: create, list and show groups of devices, and change their members.

A group (a street, a district's lamps, a cabinet circuit, a building) is what lighting
programs, commands and energy reports target, and what an inventory CSV's ``groups``
column names: create the groups first, then import. The same registry operations as
``/api/v1/groups`` (``Registry.create_group``, ``list_groups``, …); a membership change
is an audited device update, as ``PATCH /api/v1/devices/{id}`` with ``groups``.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from pydantic import ValidationError

from devices.registry.models import GroupType
from devices.registry.schemas import DevicePublic, GroupCreate, GroupPublic, Page
from devices.registry.service import DeviceFilter, device_public
from pharos.cli.common import (
    EXIT_USAGE,
    ActorOption,
    changing_registry,
    opened_runtime,
    render_table,
)

app = typer.Typer(
    help="Groups of devices (streets, districts, circuits, buildings): create, list, "
    "show, and add or remove members. Programs, commands and energy reports target them.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)

GroupIdArg = Annotated[str, typer.Argument(metavar="GROUP", help="The group id, e.g. hoa-binh.")]
DeviceIds = Annotated[list[str], typer.Argument(metavar="DEVICE...", help="Device ids.")]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
_OPTION_OF = {"id": "GROUP", "name": "--name", "type": "--type", "district": "--district",
              "description": "--description"}  # fmt: skip
MEMBERS_SHOWN = 1000


@app.command("create")
def create(
    ctx: typer.Context,
    group_id: GroupIdArg,
    name: Annotated[str, typer.Option(help="A name people recognise, e.g. 'Đại lộ Hòa Bình'.")],
    type_: Annotated[
        GroupType, typer.Option("--type", help="What the group is.")
    ] = GroupType.CUSTOM,
    district: Annotated[str | None, typer.Option(help="Its district, e.g. 'Ninh Kiều'.")] = None,
    description: Annotated[str | None, typer.Option(help="Free text.")] = None,
    actor: ActorOption = None,
) -> None:
    """Create a group (audited).

    Example: pharos groups create hoa-binh --name "Đại lộ Hòa Bình" --type street \\
        --district "Ninh Kiều"
    """
    values = {"id": group_id, "name": name, "type": type_, "district": district,
              "description": description}  # fmt: skip
    try:
        data = GroupCreate.model_validate({k: v for k, v in values.items() if v is not None})
    except ValidationError as exc:
        for err in exc.errors():
            field = str(err["loc"][0]) if err["loc"] else ""
            typer.echo(f"error: {_OPTION_OF.get(field, field)}: {err['msg']}", err=True)
        raise typer.Exit(EXIT_USAGE) from None
    with opened_runtime(ctx) as runtime, changing_registry(runtime, actor) as registry:
        public = registry.group_public(registry.create_group(data))
    typer.echo(f"created group {public.id} ({public.name})")


@app.command("list")
def list_groups(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="At most this many.")] = 100,
    offset: Annotated[int, typer.Option(min=0, help="Skip this many first.")] = 0,
    as_json: JsonFlag = False,
) -> None:
    """List groups, sorted by id, with how many devices each has."""
    with opened_runtime(ctx) as runtime, runtime.registry("cli:read") as registry:
        rows, total = registry.list_groups(offset=offset, limit=limit)
        groups = [registry.group_public(g) for g in rows]
    if as_json:
        page = Page[GroupPublic](items=groups, total=total, offset=offset, limit=limit)
        typer.echo(page.model_dump_json(indent=2))
        return
    if not groups:
        typer.echo(f"no groups here ({total} in all); create one: pharos groups create ID --name N")
        return
    table = [[g.id, g.type.value, str(g.device_count), g.district or "-", g.name] for g in groups]
    typer.echo(render_table(["ID", "TYPE", "DEVICES", "DISTRICT", "NAME"], table))
    typer.echo(f"{offset + 1}-{offset + len(groups)} of {total} groups")


@app.command("show")
def show(ctx: typer.Context, group_id: GroupIdArg, as_json: JsonFlag = False) -> None:
    """Show a group and its members.

    Example: pharos groups show lights-ninh-kieu
    """
    with opened_runtime(ctx) as runtime, runtime.registry("cli:read") as registry:
        public = registry.group_public(registry.get_group(group_id))
        rows, total = registry.list_devices(DeviceFilter(group=group_id), limit=MEMBERS_SHOWN)
        members = [device_public(d) for d in rows]
    if as_json:
        page = Page[DevicePublic](items=members, total=total, offset=0, limit=MEMBERS_SHOWN)
        shown = {"group": public.model_dump(mode="json"), "members": page.model_dump(mode="json")}
        typer.echo(json.dumps(shown, indent=2, ensure_ascii=False))
        return
    for label, value in (
        ("id", public.id), ("name", public.name), ("type", public.type.value),
        ("district", public.district), ("description", public.description),
        ("created", public.created_at.isoformat(timespec="seconds")),
    ):  # fmt: skip
        typer.echo(f"{label + ':':<13}{value or '-'}")
    first = f" (the first {len(members)} below)" if total > len(members) else ""
    typer.echo(f"{'members:':<13}{total}{first}")
    if members:
        table = [[d.id, d.kind.value, d.state.value, d.name] for d in members]
        typer.echo(render_table(["ID", "KIND", "STATE", "NAME"], table))


@app.command("add")
def add(
    ctx: typer.Context, group_id: GroupIdArg, device_ids: DeviceIds, actor: ActorOption = None
) -> None:
    """Put devices into a group (all or none: an unknown device changes nothing).

    Example: pharos groups add hoa-binh sl-nk-hb-001 sl-nk-hb-002
    """
    with opened_runtime(ctx) as runtime, changing_registry(runtime, actor) as registry:
        added = registry.add_members(group_id, device_ids)
    already = len(dict.fromkeys(device_ids)) - len(added)
    note = f" ({already} already members)" if already else ""
    typer.echo(f"{group_id}: {len(added)} devices added{note}")


@app.command("remove")
def remove(
    ctx: typer.Context, group_id: GroupIdArg, device_ids: DeviceIds, actor: ActorOption = None
) -> None:
    """Take devices out of a group (the devices stay registered).

    Example: pharos groups remove hoa-binh sl-nk-hb-002
    """
    with opened_runtime(ctx) as runtime, changing_registry(runtime, actor) as registry:
        removed = registry.remove_members(group_id, device_ids)
    absent = len(dict.fromkeys(device_ids)) - len(removed)
    note = f" ({absent} were not members)" if absent else ""
    typer.echo(f"{group_id}: {len(removed)} devices removed{note}")
