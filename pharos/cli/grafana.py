"""``pharos grafana``: build the boards' JSON, push them into a Grafana, make embed links."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from grafana.boards import BOARDS
from grafana.build import DASHBOARDS_DIR, stale, write_all
from grafana.embed import EmbedError, Theme, find_panel, panels, solo_url
from grafana.push import PushError, push
from pharos.cli.common import EXIT_USAGE, fail, render_table, settings_of

app = typer.Typer(help="Grafana boards for the IOC: build, push, embed.", no_args_is_help=True)


@app.command("build")
def build(
    ctx: typer.Context,
    out: Annotated[
        Path, typer.Option(help="Directory for the boards' JSON (one file per board).")
    ] = DASHBOARDS_DIR,
    check: Annotated[
        bool, typer.Option("--check", help="Write nothing; exit 1 if a file is out of date.")
    ] = False,
) -> None:
    """Write every board's JSON (built from code and grafana.boards settings) into OUT.

    Example: pharos grafana build --check
    """
    options = settings_of(ctx).grafana.boards
    if check:
        outdated = stale(out, options)
        if outdated:
            fail(f"out of date in {out}: {', '.join(outdated)}; run `pharos grafana build`")
        typer.echo(f"{len(BOARDS)} boards in {out} are up to date")
        return
    for path in write_all(out, options):
        typer.echo(str(path))


@app.command("push")
def push_command(
    ctx: typer.Context,
    url: Annotated[str | None, typer.Option(help="Grafana's URL (default: grafana.url).")] = None,
    token: Annotated[
        str | None,
        typer.Option(
            envvar="PHAROS_GRAFANA__TOKEN",
            help="Service account token, Editor role (default: grafana.token).",
        ),
    ] = None,
    org: Annotated[int | None, typer.Option(min=1, help="Organisation id.")] = None,
) -> None:
    """Create the folders (one per domain) and save every board, overwriting by uid.

    Running it again changes the same boards. Example:
    pharos grafana push --url https://grafana.ioc.local --token glsa_…
    """
    settings = settings_of(ctx).grafana
    target = url or (str(settings.url) if settings.url else None)
    secret = token or (settings.token.get_secret_value() if settings.token else None)
    if not target:
        fail("no Grafana URL: give --url or set PHAROS_GRAFANA__URL", EXIT_USAGE)
    if not secret:
        fail("no token: give --token or set PHAROS_GRAFANA__TOKEN", EXIT_USAGE)
    try:
        report = push(
            target,
            secret,
            org_id=org or settings.org_id,
            timeout_s=settings.timeout_s,
            options=settings.boards,
        )
    except PushError as exc:
        fail(str(exc))
    for folder in report.folders_created:
        typer.echo(f"folder created: {folder}")
    for line in report.boards:
        typer.echo(f"saved {line}")


@app.command("panels")
def list_panels(board: Annotated[str | None, typer.Argument(help="A board's uid.")] = None) -> None:
    """List the boards and their panels (the ids `embed` takes)."""
    rows = [
        [ref.board_uid, str(ref.panel_id), ref.panel_title]
        for known in BOARDS
        if board in (None, known.uid)
        for ref in panels(known)
    ]
    if not rows:
        fail(f"no board {board!r}; boards: {', '.join(b.uid for b in BOARDS)}")
    typer.echo(render_table(["board", "panel", "title"], rows))


def _variables(values: list[str]) -> dict[str, list[str]]:
    chosen: dict[str, list[str]] = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise typer.BadParameter(f"expected NAME=VALUE, got {item!r}", param_hint="--var")
        chosen.setdefault(name, []).append(value)
    return chosen


@app.command("embed")
def embed(
    ctx: typer.Context,
    board: Annotated[str, typer.Argument(help="Board uid, e.g. ioc-flood.")],
    panel: Annotated[str, typer.Argument(help="Panel id or exact title (see `panels`).")],
    theme: Annotated[Theme, typer.Option(help="dark or light.")] = "dark",
    time_from: Annotated[str, typer.Option("--from", help="now-6h, now/d, epoch ms.")] = "now-24h",
    time_to: Annotated[str, typer.Option("--to", help="now, epoch ms.")] = "now",
    refresh: Annotated[str, typer.Option(help="Refresh interval, e.g. 1m.")] = "1m",
    var: Annotated[
        list[str] | None, typer.Option(help="Locked variable NAME=VALUE; repeat for several.")
    ] = None,
    public_url: Annotated[
        str | None, typer.Option(help="Grafana as screens reach it (default: grafana.public_url).")
    ] = None,
) -> None:
    """Print the d-solo URL of one panel, theme, kiosk, time and variables locked.

    Example: pharos grafana embed ioc-flood 1 --from now-12h --var "district=Ninh Kiều"
    """
    settings = settings_of(ctx).grafana
    base = public_url or (str(settings.public_url) if settings.public_url else None)
    if not base:
        fail("no public URL: give --public-url or set PHAROS_GRAFANA__PUBLIC_URL", EXIT_USAGE)
    try:
        ref = find_panel(board, panel)
        url = solo_url(
            base,
            ref,
            org_id=settings.org_id,
            theme=theme,
            time_from=time_from,
            time_to=time_to,
            refresh=refresh,
            variables=_variables(var or []),
            timezone=settings.boards.timezone,
        )
    except EmbedError as exc:
        fail(str(exc), EXIT_USAGE)
    typer.echo(url)
