"""Links that put one Grafana panel on an IOC screen: ``d-solo`` URLs with everything locked.

A ``d-solo`` URL renders a single panel without Grafana's chrome. The link fixes the
organisation, the theme, the time range, the refresh and every template variable,
and asks for kiosk mode with the time picker and variables hidden, so a wall screen
shows exactly what the operator chose and nobody on the screen can change it.
Grafana must allow embedding (``allow_embedding``) and the screen's browser must be
able to view the board (anonymous viewer or an auth proxy): see the README.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlencode

from grafana.boards import BOARDS, Board
from grafana.settings import BoardOptions

Theme = Literal["dark", "light"]
_TIME = re.compile(r"^(now(-\d+[smhdwMy])?(/[smhdwMy])?|\d{10,13})$")


class EmbedError(ValueError):
    """A request for a link that cannot be made; ``field`` names what is wrong."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True, slots=True)
class PanelRef:
    board_uid: str
    board_title: str
    panel_id: int
    panel_title: str
    variables: tuple[str, ...]


def slug(title: str) -> str:
    """Grafana's URL slug of a title (the part after the uid; Grafana ignores it)."""
    plain = unicodedata.normalize("NFKD", title.replace("Đ", "D").replace("đ", "d"))
    ascii_only = plain.encode("ascii", "ignore").decode().lower()
    return re.sub(r"[^a-z0-9]+", "-", ascii_only).strip("-")


def panels(board: Board, options: BoardOptions | None = None) -> list[PanelRef]:
    built = board.build(options or BoardOptions())
    templating = built.templating.list_val if built.templating else None
    names = tuple(v.name for v in templating or [] if v.name != "datasource")
    return [
        PanelRef(board.uid, built.title or board.uid, panel.id_val or 0, panel.title or "", names)
        for panel in built.panels or []
        if panel.id_val is not None
    ]


def find_panel(board_uid: str, panel: str) -> PanelRef:
    """A panel by board uid and panel id or exact title."""
    board = next((b for b in BOARDS if b.uid == board_uid), None)
    if board is None:
        known = ", ".join(b.uid for b in BOARDS)
        raise EmbedError("board", f"no board {board_uid!r}; boards: {known}")
    found = panels(board)
    for ref in found:
        if panel == str(ref.panel_id) or panel == ref.panel_title:
            return ref
    listed = "; ".join(f"{r.panel_id} {r.panel_title}" for r in found)
    raise EmbedError("panel", f"no panel {panel!r} on {board_uid}; panels: {listed}")


def solo_url(
    public_url: str,
    ref: PanelRef,
    *,
    org_id: int = 1,
    theme: Theme = "dark",
    time_from: str = "now-24h",
    time_to: str = "now",
    refresh: str | None = "1m",
    variables: Mapping[str, Sequence[str]] | None = None,
    timezone: str | None = None,
) -> str:
    """The ``d-solo`` URL of ``ref`` with theme, kiosk, time range and variables locked.

    Variables not given are locked to "All"; an unknown variable is refused.
    """
    for name, value in (("from", time_from), ("to", time_to)):
        if not _TIME.fullmatch(value):
            raise EmbedError(
                name, f"expected now, now-6h, now/d or epoch milliseconds; got {value!r}"
            )
    chosen = dict(variables or {})
    unknown = sorted(set(chosen) - set(ref.variables))
    if unknown:
        allowed = ", ".join(ref.variables) or "none"
        raise EmbedError(unknown[0], f"not a variable of this board; it has {allowed}")
    query: list[tuple[str, str]] = [
        ("orgId", str(org_id)),
        ("panelId", str(ref.panel_id)),
        ("from", time_from),
        ("to", time_to),
        ("theme", theme),
    ]
    if timezone:
        query.append(("timezone", timezone))
    if refresh:
        query.append(("refresh", refresh))
    for name in ref.variables:
        for value in chosen.get(name) or ["$__all"]:
            query.append((f"var-{name}", value))
    query += [("kiosk", ""), ("_dash.hideTimePicker", "true"), ("_dash.hideVariables", "true")]
    base = public_url.rstrip("/")
    return f"{base}/d-solo/{ref.board_uid}/{slug(ref.board_title)}?{urlencode(query)}"
