"""The IOC's Grafana boards, one per domain, built with grafana-foundation-sdk.

``BOARDS`` lists them with their uid (stable: pushes and embeds find a board by it)
and the Grafana folder each goes into.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from grafana_foundation_sdk.builders.dashboard import Dashboard
from grafana_foundation_sdk.models import dashboard as model

from grafana.boards import buildings, environment, fleet, flood, lighting
from grafana.settings import BoardOptions


@dataclass(frozen=True, slots=True)
class Board:
    uid: str
    folder: str
    folder_uid: str
    make: Callable[[BoardOptions], Dashboard]

    @property
    def file_name(self) -> str:
        return f"{self.uid}.json"

    def build(self, options: BoardOptions) -> model.Dashboard:
        """The board's model, its panels numbered 1, 2, … in order (embed links use them)."""
        built = self.make(options).build()
        for number, panel in enumerate(built.panels or [], start=1):
            if isinstance(panel, model.Panel | model.RowPanel):
                panel.id_val = number
        return built


BOARDS: tuple[Board, ...] = (
    Board(lighting.UID, "Lighting and energy", "pharos-lighting-energy", lighting.board),
    Board(environment.UID, "Environment", "pharos-environment", environment.board),
    Board(flood.UID, "Flood", "pharos-flood", flood.board),
    Board(buildings.UID, "Buildings", "pharos-buildings", buildings.board),
    Board(fleet.UID, "Fleet health", "pharos-fleet-health", fleet.board),
)


def board_by_uid(uid: str) -> Board:
    """The board with ``uid``; ``KeyError`` names the known ones."""
    for board in BOARDS:
        if board.uid == uid:
            return board
    known = ", ".join(b.uid for b in BOARDS)
    raise KeyError(f"no board {uid!r}; boards: {known}")
