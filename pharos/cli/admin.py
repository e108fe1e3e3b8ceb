"""``pharos db``, ``pharos apikeys`` and ``pharos broker``: the administrator's commands."""

from __future__ import annotations

import re
from typing import Annotated

import typer

from devices.broker import reload_broker, write_broker_files
from devices.registry.db import transaction
from pharos.apikeys import Role, create_api_key, list_api_keys, revoke_api_key
from pharos.cli.common import (
    ActorOption,
    changing_registry,
    fail,
    opened_runtime,
    render_table,
)
from pharos.database import current_revision, upgrade

db_app = typer.Typer(help="The database schema.", no_args_is_help=True, rich_markup_mode="markdown")
apikeys_app = typer.Typer(
    help="API keys for people and programs calling the HTTP API.", no_args_is_help=True
)
broker_app = typer.Typer(
    help="Mosquitto accounts: backend service accounts and the password/ACL files.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)

# A service account name lands in the broker's password and ACL files (no spaces, no ':').
_SERVICE_ACCOUNT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


# -- db ------------------------------------------------------------------------


@db_app.command("upgrade")
def db_upgrade(ctx: typer.Context) -> None:
    """Create or migrate the database tables to the latest revision and print it.

    Safe to run again: an up-to-date database is left as it is. Run it after
    installing or upgrading Pharos, before any other command.

    Example: pharos db upgrade
    """
    with opened_runtime(ctx, require_schema=False) as runtime:
        upgrade(runtime.engine)
        revision = current_revision(runtime.engine)
        url = runtime.engine.url.render_as_string(hide_password=True)
    typer.echo(f"database {url} is at revision {revision}")


# -- apikeys -------------------------------------------------------------------


@apikeys_app.command("create")
def apikeys_create(
    ctx: typer.Context,
    name: Annotated[
        str, typer.Argument(metavar="NAME", help="Who or what uses the key, e.g. 'ioc-wall'.")
    ],
    role: Annotated[Role, typer.Option(help="What the key may do.")],
) -> None:
    """Create an API key and print it ONCE (only its hash is stored).

    Roles, least to most: viewer (read), technician (register and commission
    devices), energy_manager (lighting programs), operator (commands, alerts), admin.

    Example: pharos apikeys create ioc-wall --role viewer
    """
    with opened_runtime(ctx) as runtime, transaction(runtime.sessions) as session:
        try:
            key = create_api_key(session, name, role)
        except ValueError as exc:
            fail(str(exc))
    typer.echo(f"API key {name!r} ({role.value}), shown only this once; store it now:")
    typer.echo(key)


@apikeys_app.command("list")
def apikeys_list(ctx: typer.Context) -> None:
    """List API keys: name, role, the first characters of the key, and whether revoked.

    Example: pharos apikeys list
    """
    with opened_runtime(ctx) as runtime, transaction(runtime.sessions) as session:
        rows = [
            [
                k.name,
                k.role,
                k.prefix + "…",
                f"{k.created_at:%Y-%m-%d %H:%M}",
                f"revoked {k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "active",
            ]
            for k in list_api_keys(session)
        ]
    if not rows:
        typer.echo("no API keys yet: `pharos apikeys create NAME --role ROLE`")
        return
    typer.echo(render_table(["NAME", "ROLE", "KEY", "CREATED (UTC)", "STATUS"], rows))


@apikeys_app.command("revoke")
def apikeys_revoke(
    ctx: typer.Context,
    name: Annotated[
        str, typer.Argument(metavar="NAME", help="The key's name, as in `pharos apikeys list`.")
    ],
) -> None:
    """Revoke an API key: requests with it are refused from now on.

    Example: pharos apikeys revoke ioc-wall
    """
    with opened_runtime(ctx) as runtime, transaction(runtime.sessions) as session:
        revoked = revoke_api_key(session, name)
    if not revoked:
        fail(f"no active API key named {name!r}")
    typer.echo(f"API key {name!r} revoked")


# -- broker --------------------------------------------------------------------


@broker_app.command("service-account")
def broker_service_account(
    ctx: typer.Context,
    name: Annotated[
        str, typer.Argument(metavar="NAME", help="Account name, e.g. pharos-ingest-1.")
    ],
    actor: ActorOption = None,
) -> None:
    """Create a backend broker account, or give an existing one a new secret; print it ONCE.

    Each backend process that keeps an MQTT session (every ingest worker, the command
    service) needs its own account. Put the secret in that process's settings
    (broker.username / broker.password, or PHAROS_BROKER__PASSWORD).

    Example: pharos broker service-account pharos-ingest-1
    """
    if _SERVICE_ACCOUNT.fullmatch(name) is None:
        fail(
            f"{name!r}: use 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    with opened_runtime(ctx) as runtime, changing_registry(runtime, actor) as registry:
        credentials = registry.ensure_service_account(name)
    typer.echo(f"broker account {name!r}: secret shown only this once; store it now:")
    typer.echo(credentials.secret)


@broker_app.command("sync")
def broker_sync(ctx: typer.Context) -> None:
    """Rewrite the broker's password and ACL files from the registry and reload the broker.

    Every credential change already does this; run it by hand after restoring a
    backup, moving the files, or when a change reported that the files were not
    written. The paths come from broker.password_file, broker.acl_file and
    broker.pid_file.

    Example: pharos broker sync
    """
    with opened_runtime(ctx) as runtime:
        with runtime.registry("cli:read") as registry:
            accounts = registry.broker_accounts()
        broker = runtime.settings.broker
        try:
            write_broker_files(accounts, broker.password_file, broker.acl_file)
        except OSError as exc:
            fail(f"cannot write the broker files: {exc}")
        reloaded = reload_broker(broker.pid_file)
    devices = sum(1 for a in accounts if a.role == "device")
    typer.echo(
        f"wrote {len(accounts)} accounts (devices: {devices}, services: {len(accounts) - devices})"
        f" to {broker.password_file} and {broker.acl_file}"
    )
    if reloaded:
        typer.echo("broker reloaded")
    else:
        typer.echo(
            f"broker not reloaded (no running broker found through {broker.pid_file}); "
            "it reads the files when it starts"
        )
