"""schemathesis against the served API: no 5xx, every answer as the OpenAPI documents it.

The app is served by uvicorn on a free loopback port (as ``pharos serve`` serves it)
around a real database seeded with the sample Cần Thơ inventory and an embedded
time-series store. schemathesis (its ``st run`` command) reads ``/openapi.json`` and
sends generated requests to every operation with the admin key, checking: no server
error, the status code is one the operation documents, the body matches the
documented schema. On SQLite it runs the coverage phase (boundary and invalid values
of every parameter: offsets past 2**63, ids, strings with NUL, wrong types, missing
fields) and ``EXAMPLES`` fuzzed cases per operation; on PostgreSQL (stricter types:
32-bit ids, no NUL in text) the fuzzed cases again. A run takes about a minute each.

Routes that drive a live service (commands, the rules engine) answer 503 here, by
design: this process runs no control plane or rules engine. For those operations
(``LIVE_SERVICE_ONLY``) a 503 naming the missing service is the expected answer,
checked against its documented schema; any other 5xx still fails.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from devices.registry.csv_import import import_devices
from devices.registry.db import make_engine, make_session_factory, transaction
from devices.registry.schemas import GroupCreate
from pharos.api import create_app
from pharos.apikeys import Role, create_api_key
from pharos.database import upgrade
from pharos.runtime import Runtime
from telemetry.store import open_store
from tests.fixtures.db import _postgres_database
from tests.pharos.api.conftest import BrokerFiles, make_runtime

EXAMPLES = 12
PHASES = {"sqlite": "examples,coverage,fuzzing", "postgres": "fuzzing"}
INVENTORY = Path(__file__).parents[3] / "examples" / "inventory-can-tho.csv"
LIVE_SERVICE_ONLY = frozenset(
    {
        "POST /api/v1/commands",
        "POST /api/v1/commands/{command_id}/cancel",
        "POST /api/v1/rules/reload",
    }
)
# A 500 at an exact hour (`at=2000-01-01T00:00:00Z`: "end must be after start" in the
# AQI part) that issue 12 gives to the day-core work (the one clock in the IOC summary);
# it is left out of this run until that lands (`--exclude-name`).
KNOWN_ELSEWHERE = frozenset({"GET /api/v1/ioc/summary"})
CHECKS = ("not_a_server_error", "status_code_conformance", "response_schema_conformance")


# The `st` command, in this venv. grafana-client brings niquests, whose urllib3-future
# installs itself as `urllib3`; schemathesis counts a requests pool's connections
# through urllib3's own pool container, which urllib3-future replaced (AttributeError on
# every request). The count only decides whether a dropped keep-alive request is sent
# again; without it the request is sent again once, which is what it wants anyway.
ST_RUN = """
import sys
import schemathesis.transport.requests as transport
transport._count_opened_connections = lambda session: 0
from schemathesis.cli import schemathesis
sys.argv[0] = "st"
sys.exit(schemathesis())
"""


class _Server(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # the test process keeps its own
        pass


def _seed(runtime: Runtime) -> str:
    with runtime.registry("seed") as registry:
        for group in ("lights-ninh-kieu", "hoa-binh"):
            registry.create_group(GroupCreate(id=group, name=group, type="street"))
        import_devices(registry, INVENTORY.read_text(encoding="utf-8"))
    with transaction(runtime.sessions) as session:
        return create_api_key(session, "admin@schemathesis", Role.ADMIN)


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str, str]]:
    """``(database, base URL, admin key)`` of the API served by uvicorn on a free port."""
    tmp = tmp_path_factory.mktemp("schemathesis")
    databases: Iterator[str] | None = None
    if request.param == "sqlite":
        url = f"sqlite:///{tmp / 'pharos.db'}"
    else:
        databases = _postgres_database(request.getfixturevalue("postgres_admin"))
        url = next(databases)
    engine = make_engine(url)
    upgrade(engine)
    sessions = make_session_factory(engine)
    runtime = make_runtime(engine, sessions, BrokerFiles(tmp / "passwd", tmp / "acl"))
    runtime.timeseries = open_store(
        influx_url=None, database="pharos", embedded_path=tmp / "ts.db", sessions=sessions
    )
    key = _seed(runtime)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    server = _Server(
        uvicorn.Config(
            create_app(runtime),
            log_level="warning",
            # schemathesis keeps its connection open between cases, which may be slow
            # to come on a loaded machine: no idle close racing a request on the wire.
            timeout_keep_alive=120,
        )
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    try:
        yield request.param, f"http://127.0.0.1:{port}", key
    finally:
        server.should_exit = True
        thread.join(10)
        listener.close()
        engine.dispose()
        if databases is not None:
            for _ in databases:
                pass


def _config(path: Path) -> Path:
    operations = ", ".join(f'"{name}"' for name in sorted(LIVE_SERVICE_ONLY))
    path.write_text(
        f"""
[checks]
not_a_server_error.enabled = true
status_code_conformance.enabled = true
response_schema_conformance.enabled = true

[generation]
allow-x00 = true

[phases.coverage]
unexpected-methods = []

[[operations]]
include-name = [{operations}]
checks.not_a_server_error.expected-statuses = ["2xx", "3xx", "4xx", "503"]
""",
        encoding="utf-8",
    )
    return path


def test_every_operation_answers_as_documented(
    served: tuple[str, str, str], tmp_path: Path
) -> None:
    database, base_url, key = served
    config = _config(tmp_path / "schemathesis.toml")
    command = [
        sys.executable, "-c", ST_RUN,
        "--config-file", str(config), "--no-color",
        "run", f"{base_url}/openapi.json",
        "--header", f"X-API-Key: {key}",
        "--checks", ",".join(CHECKS),
        "--max-examples", str(EXAMPLES),
        "--phases", PHASES[database],
        "--seed", "12",
        "--workers", "1",
        "--request-timeout", "30",
        "--suppress-health-check", "all",
        "--generation-database", "none",  # each run fresh: no replay of an older run
        *(arg for name in sorted(KNOWN_ELSEWHERE) for arg in ("--exclude-name", name)),
    ]  # fmt: skip
    # In tmp_path: schemathesis writes its cache and reports into the working directory.
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=600, check=False, cwd=tmp_path
    )
    assert done.returncode == 0, done.stdout[-20000:] + done.stderr[-5000:]
