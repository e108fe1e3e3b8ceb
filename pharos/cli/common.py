"""What every ``pharos`` command shares: settings, the runtime, errors, actor, tables.

Settings are read when a command runs (never at import, and not for ``--help``), so
a broken setting stops only the commands that need it, with exit code 2 and the
message naming the field. Expected failures (a refused transition, an unknown id, a
database that is not there) print one line to stderr and exit 1, never a traceback.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from alembic.script import ScriptDirectory
from sqlalchemy.exc import SQLAlchemyError

from devices.registry.service import Registry, RegistryError
from pharos.database import alembic_config, current_revision
from pharos.runtime import Runtime, build_runtime
from pharos.settings import Settings, SettingsError, load_settings

EXIT_FAILED = 1
EXIT_USAGE = 2

ActorOption = Annotated[
    str | None,
    typer.Option(
        "--actor",
        help="Who is recorded in the audit log for this change. Default: cli:$USER.",
        show_default=False,
    ),
]


@dataclass(frozen=True, slots=True)
class CliState:
    """What the root command was told, handed to every subcommand through the context."""

    config_file: Path | None = None


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def settings_of(ctx: typer.Context) -> Settings:
    state = ctx.find_object(CliState) or CliState()
    try:
        return load_settings(state.config_file)
    except SettingsError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(EXIT_USAGE) from None


def actor_name(actor: str | None) -> str:
    """The audit actor: as given, else ``cli:<login name>``."""
    if actor:
        return actor
    try:
        user = os.environ.get("USER") or getpass.getuser()
    except (KeyError, OSError):  # a container user with no passwd entry
        user = f"uid{os.getuid()}"
    return f"cli:{user}"


@contextmanager
def reported_errors() -> Iterator[None]:
    """Expected failures as one line on stderr and exit code 1."""
    try:
        yield
    except RegistryError as exc:
        fail(str(exc))
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        fail(f"database: {reason}")


@contextmanager
def opened_runtime(ctx: typer.Context, *, require_schema: bool = True) -> Iterator[Runtime]:
    """The runtime for this command; the database must be migrated unless told otherwise."""
    runtime = build_runtime(settings_of(ctx))
    try:
        with reported_errors():
            if require_schema:
                _check_schema(runtime)
            yield runtime
    finally:
        runtime.close()


def _check_schema(runtime: Runtime) -> None:
    url = runtime.engine.url.render_as_string(hide_password=True)
    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    current = current_revision(runtime.engine)
    if current is None:
        fail(f"the database {url} has no Pharos tables yet: run `pharos db upgrade` first")
    if current != head:
        fail(f"the database {url} is at revision {current}, not {head}: run `pharos db upgrade`")


@contextmanager
def changing_registry(runtime: Runtime, actor: str | None) -> Iterator[Registry]:
    """A registry transaction; after commit the broker's files follow the accounts.

    When the commit succeeded but writing the broker files did not (permissions,
    a full disk), the change is kept and the fix is to run ``pharos broker sync``.
    """
    committed_body = False
    try:
        with runtime.registry(actor_name(actor)) as registry:
            yield registry
            committed_body = True
    except OSError as exc:
        if not committed_body:
            raise
        fail(
            f"the change is saved, but the broker's password/ACL files were not written ({exc});"
            " fix that and run `pharos broker sync`"
        )


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Plain aligned columns: readable on a phone's SSH client and easy to grep."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = [headers, *rows]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )
