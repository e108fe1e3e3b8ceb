"""Boards to JSON and back: what ``pharos grafana build`` writes and the tests compare.

``render`` is the board's JSON as Grafana takes it (keys sorted, two-space indent,
a final newline, so the committed files diff cleanly). ``load`` reads a board back
into the SDK's own model (InfluxQL targets included), which is how the tests prove
the JSON is one the SDK understands.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import Dashboard

from grafana.boards import BOARDS, Board
from grafana.influxql import register
from grafana.settings import BoardOptions

DASHBOARDS_DIR = Path(__file__).resolve().parent / "dashboards"


def render(board: Board, options: BoardOptions) -> str:
    built = board.build(options)
    return JSONEncoder(sort_keys=True, indent=2, ensure_ascii=False).encode(built) + "\n"


def board_json(board: Board, options: BoardOptions) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(render(board, options))
    return document


def load(text: str) -> Dashboard:
    """A board's JSON as the SDK's ``Dashboard`` (InfluxQL targets decoded)."""
    register()
    return Dashboard.from_json(json.loads(text))


def write_all(directory: Path, options: BoardOptions) -> list[Path]:
    """Write every board as ``<uid>.json`` into ``directory``; the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for board in BOARDS:
        path = directory / board.file_name
        path.write_text(render(board, options), encoding="utf-8")
        written.append(path)
    return written


def stale(directory: Path, options: BoardOptions) -> list[str]:
    """Boards whose file in ``directory`` is missing or differs from what the code builds."""
    found = []
    for board in BOARDS:
        path = directory / board.file_name
        if not path.is_file() or path.read_text(encoding="utf-8") != render(board, options):
            found.append(board.file_name)
    return found
