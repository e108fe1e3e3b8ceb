"""A local HTTP server that records requests and answers like Grafana's API.

No Grafana is installable here: this server implements the three calls the push
makes (``GET/POST /api/folders``, ``POST /api/dashboards/db``) with Grafana's status
codes, keeps what was saved by uid, and records every request.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TOKEN = "glsa_test_token"


@dataclass
class FakeGrafana:
    """Grafana's folder and dashboard API, in memory, with a request log."""

    token: str = TOKEN
    forbid_writes: bool = False
    requests: list[tuple[str, str, dict[str, str], Any]] = field(default_factory=list)
    folders: dict[str, str] = field(default_factory=dict)
    dashboards: dict[str, dict[str, Any]] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)

    def answer(self, method: str, path: str, headers: dict[str, str], body: Any) -> tuple[int, Any]:
        self.requests.append((method, path, headers, body))
        if headers.get("authorization") != f"Bearer {self.token}":
            return 401, {"message": "invalid API key"}
        if method == "GET" and path.startswith("/api/folders/"):
            uid = path.rsplit("/", 1)[1]
            if uid in self.folders:
                return 200, {"uid": uid, "title": self.folders[uid]}
            return 404, {"message": "folder not found"}
        if self.forbid_writes:
            return 403, {"message": "You'll need additional permissions to perform this action."}
        if method == "POST" and path == "/api/folders":
            if body["uid"] in self.folders:
                return 409, {"message": "a folder with the same uid already exists"}
            self.folders[body["uid"]] = body["title"]
            return 200, {"uid": body["uid"], "title": body["title"]}
        if method == "POST" and path == "/api/dashboards/db":
            board = body["dashboard"]
            uid = board["uid"]
            if uid in self.dashboards and not body.get("overwrite"):
                return 412, {"message": "version-mismatch", "status": "version-mismatch"}
            if body["folderUid"] not in self.folders:
                return 400, {"message": "folder not found"}
            self.dashboards[uid] = body
            self.versions[uid] = self.versions.get(uid, 0) + 1
            return 200, {
                "uid": uid,
                "status": "success",
                "url": f"/d/{uid}/x",
                "version": self.versions[uid],
            }
        return 404, {"message": "not found"}


def serving() -> Iterator[tuple[FakeGrafana, str]]:
    """A started server and its URL, stopped when the generator closes."""
    state = FakeGrafana()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            size = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(size) if size else b""
            body = json.loads(raw) if raw else None
            headers = {k.lower(): v for k, v in self.headers.items()}
            code, answer = state.answer(self.command, self.path, headers, body)
            payload = json.dumps(answer).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = _serve

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
