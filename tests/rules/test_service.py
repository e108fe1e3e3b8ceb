"""The rules service without the simulator: reloads, webhooks, escalation, the full queue.

Batches are handed to ``observe`` as ingest would; the alert store is real (SQLite
here, both databases in ``test_alerts``); webhooks go to a real local HTTP server.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from devices.wire import DeviceStatus
from pharos_core.clock import SteppedClock
from rules.actions import WebhookSender
from rules.alerts import AlertFilter, AlertState, AlertStore
from rules.catalog import StaticCatalog
from rules.derived import DeviceFacts
from rules.service import RulesService
from rules.settings import RulesSettings
from rules.spec import RuleFileError
from telemetry.deadletters import DeadLetterStore
from telemetry.ingest import ParsedBatch, StatusReport
from telemetry.points import Point
from tests.rules.conftest import SITE_SUN

T0 = datetime(2026, 10, 22, 11, 0, tzinfo=UTC)
GAUGE = DeviceFacts("fg-1", "flood_gauge", "Ninh Kiều")
RULES = """\
rules:
  - id: high
    name: River high
    severity: minor
    escalate_after: 10m
    scope: {kind: flood_gauge}
    when: {value: water_level_m, above: 1.8}
    clear: {value: water_level_m, below: 1.7}
    actions:
      - {webhook: "URL"}
"""


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'pharos.db'}"


class Recorder(BaseHTTPRequestHandler):
    bodies: list[dict[str, Any]]
    status = 200

    def do_POST(self) -> None:
        length = int(self.headers["content-length"])
        type(self).bodies.append(json.loads(self.rfile.read(length)))
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture
def http_server() -> Iterator[tuple[str, type[Recorder]]]:
    handler = type("Handler", (Recorder,), {"bodies": [], "status": 200})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", handler
    finally:
        server.shutdown()
        server.server_close()


def reading(minutes: float, level: float) -> ParsedBatch:
    point = Point(
        "flood_gauge",
        {"device_id": "fg-1"},
        {"water_level_m": level},
        T0 + timedelta(minutes=minutes),
    )
    return ParsedBatch((point,), (), ())


def write_rules(tmp_path: Path, url: str, text: str = RULES) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(text.replace("URL", url))
    return path


def service(
    sessions: sessionmaker[Session],
    rules_file: Path,
    clock: SteppedClock,
    **options: Any,
) -> RulesService:
    settings = RulesSettings(files=[rules_file], webhook_backoff_s=0.01, **options)
    letters = DeadLetterStore(sessions)
    return RulesService(
        settings=settings,
        catalog=StaticCatalog([GAUGE]),
        alerts=AlertStore(sessions),
        clock=clock,
        sun=SITE_SUN,
        webhooks=WebhookSender(letters, clock, attempts=3, backoff_s=0.01),
    )


async def test_webhook_posts_each_event_and_a_refused_file_keeps_the_rules(
    sessions: sessionmaker[Session], tmp_path: Path, http_server: tuple[str, type[Recorder]]
) -> None:
    url, recorder = http_server
    path = write_rules(tmp_path, url)
    clock = SteppedClock(T0)
    async with service(sessions, path, clock) as rules:
        rules.observe(reading(0, 1.85))
        await rules.wait_idle()
        assert [b["event"] for b in recorder.bodies] == ["raised"]
        assert recorder.bodies[0]["alert"]["device_id"] == "fg-1"
        # A broken file is refused with file, line and reason; the rules keep running.
        path.write_text(RULES.replace("above: 1.8", "above: high").replace("URL", url))
        with pytest.raises(RuleFileError) as caught:
            await rules.reload()
        assert f"{path}:7: rules[0].when.above: Input should be a valid number" in str(caught.value)
        rules.observe(reading(1, 1.65))
        await rules.wait_idle()
        assert [b["event"] for b in recorder.bodies] == ["raised", "cleared"]
        # A good file is taken at once.
        write_rules(tmp_path, url, RULES.replace("above: 1.8", "above: 1.6"))
        loaded = await rules.reload()
        assert [r.id for r in loaded] == ["high"]
        rules.observe(reading(2, 1.65))
        await rules.wait_idle()
        assert [b["event"] for b in recorder.bodies] == ["raised", "cleared", "repeated"]
    alerts, total = AlertStore(sessions).list(AlertFilter())
    assert total == 1 and alerts[0].repeats == 1


async def test_a_webhook_that_keeps_failing_is_dead_lettered_with_the_reason(
    sessions: sessionmaker[Session], tmp_path: Path, http_server: tuple[str, type[Recorder]]
) -> None:
    url, recorder = http_server
    recorder.status = 503
    clock = SteppedClock(T0)
    async with service(sessions, write_rules(tmp_path, url), clock) as rules:
        rules.observe(reading(0, 1.9))
        await rules.wait_idle()
    assert len(recorder.bodies) == 3  # three attempts
    letters, total = await DeadLetterStore(sessions).list(source="webhook")
    assert total == 1
    assert letters[0].reason.startswith(f"webhook: {url} failed 3 times; last: HTTP 503")
    assert letters[0].device_id == "fg-1"
    kept = json.loads(base64.b64decode(letters[0].payload_base64))
    assert kept["event"] == "raised" and kept["alert"]["rule_id"] == "high"


async def test_escalation_and_silence_on_the_injected_clock(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    text = RULES.replace('      - {webhook: "URL"}\n', "      []\n").replace(
        "    actions:\n      []\n", ""
    )
    text += "  - {id: quiet, name: quiet, severity: major, when: {silent: 10m}}\n"
    clock = SteppedClock(T0)
    async with service(sessions, write_rules(tmp_path, "-", text), clock) as rules:
        rules.observe(reading(0, 1.9))
        await rules.wait_idle()
        clock.advance(9 * 60)
        await rules.tick()
        await rules.wait_idle()
        store = AlertStore(sessions)
        high = store.list(AlertFilter(rule_id="high"))[0][0]
        assert high.severity == "minor" and store.list(AlertFilter(rule_id="quiet"))[1] == 0
        clock.advance(60)
        await rules.tick()
        await rules.wait_idle()
        high = store.list(AlertFilter(rule_id="high"))[0][0]
        assert high.severity == "major" and high.escalations == 1
        assert store.list(AlertFilter(rule_id="quiet"))[1] == 1
        # The Last Will of a device heard from earlier: silent at once.
        rules.observe(ParsedBatch((), (StatusReport("fg-1", DeviceStatus.OFFLINE, T0),), ()))
        await rules.wait_idle()
        assert store.list(AlertFilter(rule_id="quiet"))[0][0].state is AlertState.OPEN


async def test_a_full_queue_is_counted_never_blocks(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    text = RULES.replace('      - {webhook: "URL"}\n', "").replace("    actions:\n", "")
    rules = service(sessions, write_rules(tmp_path, "-", text), SteppedClock(T0), queue_size=2)
    for minute in range(5):  # not started: nothing takes from the queue
        rules.observe(reading(minute, 1.0))
    assert rules.stats.dropped_batches == 3 and rules.stats.dropped_points == 3
    async with rules:
        await rules.wait_idle()
        await asyncio.sleep(0)
        # Shedding is an alert of its own, cleared once evaluation has caught up.
        overloaded, total = AlertStore(sessions).list(AlertFilter(rule_id="rules-overloaded"))
        assert total == 1 and overloaded[0].state is AlertState.CLEARED
        assert overloaded[0].device_id == "pharos-rules"
        assert not rules.stats.overloaded
    assert rules.stats.batches == 2
