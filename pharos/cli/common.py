"""What every ``pharos`` command shares: settings, the runtime, errors, actor, tables.

Settings are read when a command runs (never at import, and not for ``--help``), so
a broken setting stops only the commands that need it, with exit code 1 and each
problem as ``file:line: field: reason`` (or ``PHAROS_…: field: reason``). Expected
failures (a refused transition, an unknown id, a database that is not there) print one
line to stderr and exit 1, never a traceback.
"""

from __future__ import annotations

import asyncio
import getpass
import logging
import os
import signal
from collections.abc import Coroutine, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from sqlalchemy.exc import SQLAlchemyError

from devices.registry.service import Registry, RegistryError
from pharos.database import current_revision, head_revision
from pharos.runtime import Runtime, build_runtime
from pharos.services import ServiceConfigurationError
from pharos.settings import Settings, SettingsError, load_settings
from pharos_core.source_file import FileError
from telemetry.influx import InfluxConfigurationError
from telemetry.ingest import MqttConfigurationError
from telemetry.spool import SpoolError

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


def report_file_error(error: FileError, outcome: str) -> NoReturn:
    """A file's problems, one ``file:line: field: reason`` each, then exit 1."""
    count = len(error.problems)
    typer.echo(f"{error.source}: {count} problem{'s' if count != 1 else ''}, {outcome}:", err=True)
    for line in error.lines():
        typer.echo(line, err=True)
    raise typer.Exit(EXIT_FAILED)


def settings_of(ctx: typer.Context) -> Settings:
    state = ctx.find_object(CliState) or CliState()
    try:
        return load_settings(state.config_file)
    except SettingsError as exc:
        report_file_error(exc, "nothing was done")


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
    head = head_revision()
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


def configure_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for chatty in ("httpx", "alembic"):  # a line per write request / per schema check
        logging.getLogger(chatty).setLevel(max(level, logging.WARNING))
    # pymodbus dumps raw frames on every bad reply; our client reports each failure itself.
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)


# What stops the services for a reason a person must fix (exit 1 with the message).
_EXPECTED = (
    MqttConfigurationError,
    InfluxConfigurationError,
    SpoolError,
    ServiceConfigurationError,
)


def run_or_fail(main: Coroutine[Any, Any, None]) -> None:
    """``asyncio.run(main)``; a configuration problem exits 1 with its message, no traceback."""
    try:
        asyncio.run(main)
    except Exception as exc:
        problems = _expected_failures(exc)
        if problems is None:
            raise
        fail("; ".join(problems))


def _expected_failures(exc: BaseException) -> list[str] | None:
    """The messages of ``exc`` (a task group's too) if all are expected, else None."""
    if isinstance(exc, BaseExceptionGroup):
        found: list[str] = []
        for inner in exc.exceptions:
            messages = _expected_failures(inner)
            if messages is None:
                return None
            found += messages
        return found
    return [str(exc)] if isinstance(exc, _EXPECTED) else None


def stop_on_signals() -> asyncio.Event:
    """An event set by Ctrl-C or SIGTERM (call inside the running loop)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    return stop
