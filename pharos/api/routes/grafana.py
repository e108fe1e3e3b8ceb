"""Grafana for IOC screens: the boards and their panels, and embed links to one panel.

``GET /api/v1/grafana/boards`` lists the boards as code with their panels' ids;
``GET /api/v1/grafana/embed`` gives the ``d-solo`` URL of a panel with theme, kiosk
mode, time range and variables locked (``grafana.embed``), on ``grafana.public_url``.
Anyone with a key may read them: they reveal nothing the screens do not show.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, status
from pydantic import BaseModel, ConfigDict, Field

from grafana.boards import BOARDS
from grafana.embed import EmbedError, find_panel, panels, solo_url
from pharos.api.deps import RuntimeDep
from pharos.api.errors import invalid_at, responses

router = APIRouter(prefix="/grafana", tags=["grafana"])


class PanelPublic(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: int = Field(description="the panelId of embed links")
    title: str


class BoardPublic(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    uid: str
    title: str
    folder: str = Field(description="the Grafana folder `pharos grafana push` puts it in")
    variables: list[str] = Field(description="template variables an embed link may lock")
    panels: list[PanelPublic]


class EmbedPublic(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(description="d-solo URL for an iframe on an IOC screen")
    board: str
    panel_id: int
    panel_title: str


@router.get("/boards")
def list_boards() -> list[BoardPublic]:
    """The IOC boards, their variables and panels."""
    found = []
    for board in BOARDS:
        refs = panels(board)
        found.append(
            BoardPublic(
                uid=board.uid,
                title=refs[0].board_title if refs else board.uid,
                folder=board.folder,
                variables=list(refs[0].variables) if refs else [],
                panels=[PanelPublic(id=r.panel_id, title=r.panel_title) for r in refs],
            )
        )
    return found


@router.get(
    "/embed",
    responses=responses(409, meanings={409: "grafana.public_url is not set"}),
)
def embed_link(
    runtime: RuntimeDep,
    board: Annotated[str, Query(max_length=40, description="board uid, e.g. ioc-flood")],
    panel: Annotated[str, Query(max_length=200, description="panel id or exact title")],
    theme: Annotated[Literal["dark", "light"], Query(description="panel theme")] = "dark",
    time_from: Annotated[
        str, Query(alias="from", max_length=32, description="now-6h, now/d, epoch ms")
    ] = "now-24h",
    time_to: Annotated[str, Query(alias="to", max_length=32, description="now, epoch ms")] = "now",
    refresh: Annotated[str, Query(pattern=r"^\d{1,4}[smhd]$", description="e.g. 1m")] = "1m",
    district: Annotated[list[str] | None, Query(description="lock $district (repeat)")] = None,
    group: Annotated[list[str] | None, Query(description="lock $group (repeat)")] = None,
    device: Annotated[list[str] | None, Query(description="lock $device (repeat)")] = None,
    kind: Annotated[list[str] | None, Query(description="lock $kind (repeat)")] = None,
) -> EmbedPublic:
    """The ``d-solo`` URL of one panel: theme, kiosk, time range and variables locked.

    Variables not given are locked to "All". Grafana must allow embedding: see the
    README, "Grafana boards".
    """
    settings = runtime.settings.grafana
    if settings.public_url is None:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            "grafana.public_url is not set (PHAROS_GRAFANA__PUBLIC_URL): the screens' "
            "Grafana address is needed for links",
        )
    chosen = {"district": district, "group": group, "device": device, "kind": kind}
    try:
        ref = find_panel(board, panel)
        url = solo_url(
            str(settings.public_url),
            ref,
            org_id=settings.org_id,
            theme=theme,
            time_from=time_from,
            time_to=time_to,
            refresh=refresh,
            variables={name: values for name, values in chosen.items() if values},
            timezone=settings.boards.timezone,
        )
    except EmbedError as exc:
        raise invalid_at(("query", exc.field), exc.reason) from exc
    return EmbedPublic(
        url=url, board=ref.board_uid, panel_id=ref.panel_id, panel_title=ref.panel_title
    )
