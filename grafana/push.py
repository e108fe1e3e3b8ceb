"""Push the boards into a running Grafana with grafana-client: one folder per domain.

Idempotent: folders and boards are addressed by uid; a folder is created only when
missing, and every board is saved with ``overwrite`` so a second push replaces the
first (Grafana keeps the older versions in its history). Every failure a person can
fix becomes a ``PushError`` with a message saying what to do: a refused token (401),
a token whose role may not write (403), Grafana unreachable or timing out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import niquests
from grafana_client.api import GrafanaApi
from grafana_client.client import (
    GrafanaClientError,
    GrafanaException,
    GrafanaServerError,
    GrafanaTimeoutError,
    GrafanaUnauthorizedError,
)

from grafana.boards import BOARDS, Board
from grafana.build import board_json
from grafana.settings import BoardOptions

MESSAGE = "pharos grafana push"


class PushError(Exception):
    """A push that failed for a reason a person can fix; the message says which."""


@dataclass(slots=True)
class PushReport:
    folders_created: list[str] = field(default_factory=list)
    boards: list[str] = field(default_factory=list)  # "uid -> url"


def _explain(url: str, exc: Exception) -> PushError:
    if isinstance(exc, GrafanaUnauthorizedError):
        return PushError(
            f"Grafana at {url} refused the token (401 Unauthorized): give a valid service "
            "account token with --token or PHAROS_GRAFANA__TOKEN"
        )
    if isinstance(exc, GrafanaClientError) and exc.status_code == 403:
        return PushError(
            f"Grafana at {url} refused the change (403 Forbidden): the token's service "
            "account needs the Editor role (Admin to create folders) in this organisation"
        )
    if isinstance(exc, GrafanaTimeoutError):
        return PushError(f"Grafana at {url} did not answer in time ({exc})")
    if isinstance(exc, GrafanaServerError):
        return PushError(f"Grafana at {url} failed ({exc.status_code}): {exc.message}")
    if isinstance(exc, GrafanaClientError):
        return PushError(f"Grafana at {url} refused the request ({exc.status_code}): {exc.message}")
    if isinstance(exc, niquests.exceptions.RequestException | GrafanaException):
        return PushError(f"Grafana at {url} is unreachable: {exc}")
    return PushError(f"Grafana at {url}: {exc}")


def _ensure_folder(api: GrafanaApi, board: Board, report: PushReport) -> None:
    try:
        api.folder.get_folder(board.folder_uid)  # type: ignore[no-untyped-call]
        return
    except GrafanaClientError as exc:
        if exc.status_code != 404:
            raise
    api.folder.create_folder(board.folder, uid=board.folder_uid)  # type: ignore[no-untyped-call]
    report.folders_created.append(board.folder_uid)


def _save(api: GrafanaApi, board: Board, options: BoardOptions) -> str:
    document = board_json(board, options)
    document.pop("id", None)  # a board is known by uid across Grafanas, never by id
    answer: Any = api.dashboard.update_dashboard(  # type: ignore[no-untyped-call]
        {
            "dashboard": document,
            "folderUid": board.folder_uid,
            "overwrite": True,
            "message": MESSAGE,
        }
    )
    where = answer.get("url", "") if isinstance(answer, dict) else ""
    return f"{board.uid} -> {where}"


def push(
    url: str,
    token: str,
    *,
    org_id: int = 1,
    timeout_s: float = 10.0,
    options: BoardOptions | None = None,
    boards: Sequence[Board] = BOARDS,
) -> PushReport:
    """Create missing folders and save every board (overwrite by uid). Blocking."""
    options = options or BoardOptions()
    api = GrafanaApi.from_url(url, credential=token, timeout=timeout_s)
    api.client.s.headers["X-Grafana-Org-Id"] = str(org_id)
    report = PushReport()
    try:
        for board in boards:
            _ensure_folder(api, board, report)
            report.boards.append(_save(api, board, options))
    except (GrafanaException, niquests.exceptions.RequestException) as exc:
        raise _explain(url, exc) from exc
    return report
