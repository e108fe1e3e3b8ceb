"""The ``pharos`` command line against a real database and real broker files.

Each test points the settings (environment variables, as an operator would) at a
database and broker files of its own; nothing is mocked.
"""

from __future__ import annotations

import csv
import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner, Result

from devices.broker import verify_password
from devices.registry.db import make_engine, make_session_factory
from devices.registry.models import AuditEntry
from pharos.apikeys import authenticate
from pharos.cli import app
from pharos.database import head_revision

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "examples" / "inventory-can-tho.csv"
LAMP = ["--kind", "streetlight", "--name", "Đèn HB-012", "--rated-power", "150"]


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Settings of an operator's machine, all inside ``tmp_path``."""
    for name in list(os.environ):
        if name.startswith("PHAROS_") and name != "PHAROS_TEST_POSTGRES_URL":
            monkeypatch.delenv(name)
    values = {
        "PHAROS_DATABASE__URL": f"sqlite:///{tmp_path / 'x.db'}",
        "PHAROS_BROKER__PASSWORD_FILE": str(tmp_path / "broker" / "passwd"),
        "PHAROS_BROKER__ACL_FILE": str(tmp_path / "broker" / "acl"),
        # No broker runs here: a pid file that does not exist means "not reloaded".
        "PHAROS_BROKER__PID_FILE": str(tmp_path / "broker" / "no-such.pid"),
        "PHAROS_DATA_DIR": str(tmp_path / "var"),
        "USER": "lan",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


def run(*args: str) -> Result:
    return CliRunner().invoke(app, list(args), prog_name="pharos")


def ok(*args: str) -> str:
    result = run(*args)
    assert result.exit_code == 0, result.output
    return result.stdout


def failed(code: int, *args: str) -> str:
    """Run a command that must fail with ``code``; its stderr, checked for a traceback."""
    result = run(*args)
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    return result.stderr


@pytest.fixture
def migrated(env: dict[str, str]) -> dict[str, str]:
    ok("db", "upgrade")
    return env


def password_hashes(env: dict[str, str]) -> dict[str, str]:
    lines = Path(env["PHAROS_BROKER__PASSWORD_FILE"]).read_text().splitlines()
    return dict(line.split(":", 1) for line in lines)


def printed_secret(stdout: str, username: str) -> str:
    """The secret on the ``USERNAME  SECRET`` table row of ``username``."""
    [secret] = [line.split()[1] for line in stdout.splitlines() if line.startswith(username + " ")]
    return secret


# -- help and settings -----------------------------------------------------------

COMMANDS = [
    ["db", "upgrade"],
    ["devices", "add"],
    ["devices", "list"],
    ["devices", "show"],
    ["devices", "import"],
    ["devices", "rotate-credentials"],
    ["devices", "transition"],
    ["apikeys", "create"],
    ["apikeys", "list"],
    ["apikeys", "revoke"],
    ["broker", "service-account"],
    ["broker", "sync"],
    ["serve"],
    ["demo"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_explains_itself_with_an_example(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    monkeypatch.setenv("PHAROS_API__PORT", "abc")  # help must not need valid settings
    result = run(*command, "--help")
    assert result.exit_code == 0, result.output
    assert f"Usage: pharos {' '.join(command)}" in result.stdout
    assert "Example" in result.stdout


@pytest.mark.parametrize("group", [[], ["db"], ["devices"], ["apikeys"], ["broker"]])
def test_groups_list_their_commands(env: dict[str, str], group: list[str]) -> None:
    stdout = ok(*group, "--help")
    assert "Commands" in stdout


def test_import_help_names_every_column(env: dict[str, str]) -> None:
    from devices.registry.csv_import import COLUMNS

    stdout = ok("devices", "import", "--help")
    assert all(column in stdout for column in COLUMNS)


def test_broken_setting_exits_1_naming_the_variable_and_field(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PHAROS_API__PORT", "abc")
    stderr = failed(1, "devices", "list")
    assert "PHAROS_API__PORT: api.port: Input should be a valid integer" in stderr


def test_config_file_is_read_and_environment_wins(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "pharos.yaml"
    config.write_text(f"database:\n  url: sqlite:///{tmp_path / 'from-file.db'}\n")
    monkeypatch.delenv("PHAROS_DATABASE__URL")

    assert "from-file.db" in ok("--config", str(config), "db", "upgrade")
    monkeypatch.setenv("PHAROS_DATABASE__URL", f"sqlite:///{tmp_path / 'from-env.db'}")
    assert "from-env.db" in ok("--config", str(config), "db", "upgrade")


def test_missing_or_broken_config_file_exits_1_with_file_line_field(
    env: dict[str, str], tmp_path: Path
) -> None:
    missing = tmp_path / "nope.yaml"
    assert f"{missing}: file: the config file does not exist" in failed(
        1, "--config", str(missing), "db", "upgrade"
    )
    bad = tmp_path / "bad.toml"
    bad.write_text('# settings\n[api]\nport = 0\n\n[broker]\ncolour = "blue"\nport = "x"\n')
    stderr = failed(1, "--config", str(bad), "devices", "list")
    assert stderr.splitlines() == [
        f"{bad}: 3 problems, nothing was done:",
        f"{bad}:3: api.port: Input should be greater than or equal to 1",
        f"{bad}:6: broker.colour: Extra inputs are not permitted",
        f"{bad}:7: broker.port: Input should be a valid integer, unable to parse string as an "
        "integer",
    ]
    broken = tmp_path / "broken.toml"
    broken.write_text("[api]\nport = 1\n[broker\n")
    stderr = failed(1, "--config", str(broken), "devices", "list")
    assert f"{broken}:3: toml: not valid TOML: " in stderr
    broken_yaml = tmp_path / "broken.yaml"
    broken_yaml.write_text("api:\n  port: [1,\n")
    assert f"{broken_yaml}:3: yaml: not valid YAML: " in failed(
        1, "--config", str(broken_yaml), "devices", "list"
    )


def test_commands_before_db_upgrade_say_so(env: dict[str, str]) -> None:
    assert "pharos db upgrade" in failed(1, "devices", "list")


# -- devices ---------------------------------------------------------------------


@pytest.fixture
def on_each_database(
    env: dict[str, str], database_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, str]]:
    """The CLI on an empty SQLite database, and on an empty PostgreSQL one."""
    monkeypatch.setenv("PHAROS_DATABASE__URL", database_url)
    yield {**env, "PHAROS_DATABASE__URL": database_url}


def test_upgrade_add_list_show(on_each_database: dict[str, str]) -> None:
    assert f"at revision {head_revision()}" in ok("db", "upgrade")
    assert f"at revision {head_revision()}" in ok("db", "upgrade")  # a second run is harmless

    added = ok("devices", "add", "sl-nk-hb-001", *LAMP, "--district", "Ninh Kiều",
               "--lat", "10.0342", "--lon", "105.7826", "--street", "Đại lộ Hòa Bình")  # fmt: skip

    assert "registered sl-nk-hb-001" in added
    assert "shown only this once" in added
    secret = printed_secret(added, "sl-nk-hb-001")
    assert verify_password(secret, password_hashes(on_each_database)["sl-nk-hb-001"])

    listed = ok("devices", "list")
    assert "sl-nk-hb-001  streetlight  registered  Ninh Kiều  Đại lộ Hòa Bình" in listed
    assert "1-1 of 1 devices" in listed
    page = json.loads(ok("devices", "list", "--json", "--kind", "streetlight"))
    assert page["total"] == 1 and page["items"][0]["rated_power_w"] == 150
    assert json.loads(ok("devices", "list", "--json", "--state", "installed"))["total"] == 0

    shown = ok("devices", "show", "sl-nk-hb-001")
    assert "[x] position set" in shown and "[ ] first telemetry seen" in shown
    assert "missing: first_telemetry_seen, self_test_acknowledged" in shown
    assert secret not in shown
    detail = json.loads(ok("devices", "show", "sl-nk-hb-001", "--json"))
    assert detail["commissioning"]["missing"] == ["first_telemetry_seen", "self_test_acknowledged"]


def test_modbus_device_gets_no_secret(migrated: dict[str, str]) -> None:
    stdout = ok("devices", "add", "em-bvtw-01", "--kind", "energy_meter", "--name", "Công tơ",
                "--modbus-host", "10.20.3.21")  # fmt: skip
    assert "10.20.3.21:502 unit 1 (sdm630)" in stdout
    assert "SECRET" not in stdout


@pytest.mark.parametrize(
    ("args", "code", "named"),
    [
        (
            [
                "--kind",
                "streetlight",
                "--name",
                "x",
                "--rated-power",
                "100",
                "--lat",
                "95",
                "--lon",
                "105",
            ],
            2,
            "--lat",
        ),
        (["--kind", "streetlight", "--name", "x"], 2, "--rated-power"),
        (["--kind", "streetlamp", "--name", "x"], 2, "--kind"),
        (["--kind", "flood_gauge", "--name", "x", "--circuit", "3"], 2, "--circuit"),
        (["--kind", "flood_gauge", "--name", "x", "--district", "Quận 1"], 1, "district"),
        (["--kind", "flood_gauge", "--name", "x", "--group", "ghost"], 1, "groups"),
    ],
    ids=["latitude", "rated-power", "kind", "circuit-without-cabinet", "district", "group"],
)
def test_add_with_bad_arguments_names_the_field(
    migrated: dict[str, str], args: list[str], code: int, named: str
) -> None:
    result = run("devices", "add", "dev-01", *args)
    assert result.exit_code == code, result.output
    assert named in result.output
    assert "Traceback" not in result.output
    assert json.loads(ok("devices", "list", "--json"))["total"] == 0


def test_add_an_existing_id_is_refused(migrated: dict[str, str]) -> None:
    ok("devices", "add", "sl-01", *LAMP)
    assert "already exists" in failed(1, "devices", "add", "sl-01", *LAMP)


def test_unknown_device_is_one_line_not_a_traceback(migrated: dict[str, str]) -> None:
    assert failed(1, "devices", "show", "nope").strip() == "error: no device 'nope'"


def test_changes_are_audited_under_the_actor(migrated: dict[str, str]) -> None:
    ok("devices", "add", "sl-01", *LAMP)
    ok("devices", "add", "sl-02", *LAMP, "--actor", "tech:minh")
    engine = make_engine(migrated["PHAROS_DATABASE__URL"])
    try:
        with make_session_factory(engine)() as session:
            actors = dict(session.execute(select(AuditEntry.entity_id, AuditEntry.actor)).all())
    finally:
        engine.dispose()
    assert actors == {"sl-01": "cli:lan", "sl-02": "tech:minh"}


# -- import ----------------------------------------------------------------------


def test_import_sample_writes_secrets_file_and_reimport_changes_nothing(
    migrated: dict[str, str], tmp_path: Path
) -> None:
    secrets_file = tmp_path / "secrets.csv"

    first = ok("devices", "import", str(SAMPLE), "--secrets-out", str(secrets_file))

    assert "14 created, 0 updated, 0 unchanged" in first
    assert "12 MQTT secrets written" in first
    assert secrets_file.stat().st_mode & 0o777 == 0o600
    rows = list(csv.DictReader(io.StringIO(secrets_file.read_text())))
    assert len(rows) == 12 and rows[0].keys() == {"username", "client_id", "secret"}
    hashes = password_hashes(migrated)
    assert all(verify_password(r["secret"], hashes[r["username"]]) for r in rows)
    assert all(r["secret"] not in first for r in rows)

    again = ok("devices", "import", str(SAMPLE))
    assert "0 created, 0 updated, 14 unchanged" in again
    assert "SECRET" not in again


def test_import_prints_secrets_without_secrets_out(migrated: dict[str, str]) -> None:
    stdout = ok("devices", "import", str(SAMPLE))
    secret = printed_secret(stdout, "flood-nk-0001")
    assert verify_password(secret, password_hashes(migrated)["flood-nk-0001"])
    assert "em-nk-bvtw-01" not in stdout  # a Modbus meter has no broker account


def test_import_refuses_to_overwrite_a_secrets_file(
    migrated: dict[str, str], tmp_path: Path
) -> None:
    existing = tmp_path / "secrets.csv"
    existing.write_text("earlier secrets\n")
    assert "exists" in failed(1, "devices", "import", str(SAMPLE), "--secrets-out", str(existing))
    assert existing.read_text() == "earlier secrets\n"
    assert json.loads(ok("devices", "list", "--json"))["total"] == 0


def test_bad_csv_lists_every_problem_and_imports_nothing(
    migrated: dict[str, str], tmp_path: Path
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "id,kind,name,latitude,longitude,rated_power_w\n"
        "sl-01,streetlight,ok,10.03,105.77,100\n"
        "sl-02,streetlamp,x,10.03,105.77,100\n"
        "sl-03,streetlight,x,95,105.77,100\n",
        encoding="utf-8",
    )
    stderr = failed(1, "devices", "import", str(bad))
    assert "nothing was imported (2 problems)" in stderr
    assert "line 3, column kind:" in stderr
    assert "line 4, column latitude: Input should be less than or equal to 90" in stderr
    assert json.loads(ok("devices", "list", "--json"))["total"] == 0


def test_non_utf8_csv_is_refused_with_a_hint(migrated: dict[str, str], tmp_path: Path) -> None:
    latin = tmp_path / "latin.csv"
    latin.write_bytes("id,kind,name\nenv-01,env_monitor,Cần Thơ\n".encode("utf-16"))
    assert "CSV UTF-8" in failed(1, "devices", "import", str(latin))


# -- lifecycle and credentials ---------------------------------------------------


def test_transition_allowed_and_refused(migrated: dict[str, str]) -> None:
    ok("devices", "add", "sl-01", *LAMP, "--lat", "10.03", "--lon", "105.77")

    assert "sl-01: registered → installed" in ok(
        "devices", "transition", "sl-01", "installed", "--note", "on pole HB-012"
    )
    refused = failed(1, "devices", "transition", "sl-01", "commissioned")
    assert "missing first_telemetry_seen, self_test_acknowledged" in refused
    assert "cannot go from installed to in_service" in failed(
        1, "devices", "transition", "sl-01", "in_service"
    )
    assert "state:         installed" in ok("devices", "show", "sl-01")
    assert failed(2, "devices", "transition", "sl-01", "broken")  # not a state at all


def test_rotate_credentials_replaces_the_secret(migrated: dict[str, str]) -> None:
    old = printed_secret(ok("devices", "add", "sl-01", *LAMP), "sl-01")

    new = printed_secret(ok("devices", "rotate-credentials", "sl-01"), "sl-01")

    stored = password_hashes(migrated)["sl-01"]
    assert new != old
    assert verify_password(new, stored) and not verify_password(old, stored)


def test_rotate_credentials_of_a_modbus_device_is_refused(migrated: dict[str, str]) -> None:
    ok("devices", "add", "cab-01", "--kind", "lighting_cabinet", "--name", "Tủ điện",
       "--modbus-host", "10.20.1.11")  # fmt: skip
    assert "Modbus" in failed(1, "devices", "rotate-credentials", "cab-01")


# -- API keys and broker accounts ------------------------------------------------


def _key_row_role(env: dict[str, str], key: str) -> str | None:
    engine = make_engine(env["PHAROS_DATABASE__URL"])
    try:
        with make_session_factory(engine)() as session:
            row = authenticate(session, key)
            return None if row is None else row.role
    finally:
        engine.dispose()


def test_apikeys_create_list_revoke(migrated: dict[str, str]) -> None:
    assert "no API keys yet" in ok("apikeys", "list")
    key = ok("apikeys", "create", "ioc-wall", "--role", "viewer").splitlines()[-1]
    assert _key_row_role(migrated, key) == "viewer"
    assert "already exists" in failed(1, "apikeys", "create", "ioc-wall", "--role", "admin")

    listed = ok("apikeys", "list")
    assert "ioc-wall" in listed and "viewer" in listed and "active" in listed
    assert key not in listed and key[:12] in listed

    assert "revoked" in ok("apikeys", "revoke", "ioc-wall")
    assert _key_row_role(migrated, key) is None
    assert "revoked 20" in ok("apikeys", "list")
    assert "no active API key" in failed(1, "apikeys", "revoke", "ioc-wall")


def test_broker_service_account_and_sync(migrated: dict[str, str]) -> None:
    secret = ok("broker", "service-account", "pharos-ingest-1").splitlines()[-1]
    password_file = Path(migrated["PHAROS_BROKER__PASSWORD_FILE"])
    assert verify_password(secret, password_hashes(migrated)["pharos-ingest-1"])
    assert "user pharos-ingest-1" in Path(migrated["PHAROS_BROKER__ACL_FILE"]).read_text()

    ok("devices", "add", "sl-01", *LAMP)
    assert "is a device id" in failed(1, "broker", "service-account", "sl-01")
    assert "letters, digits" in failed(1, "broker", "service-account", "bad name")

    password_file.unlink()
    synced = ok("broker", "sync")
    assert "wrote 2 accounts (devices: 1, services: 1)" in synced
    assert "broker not reloaded" in synced
    assert set(password_hashes(migrated)) == {"pharos-ingest-1", "sl-01"}


# -- serve -----------------------------------------------------------------------


def test_serve_names_every_missing_broker_secret(env: dict[str, str]) -> None:
    message = failed(1, "serve")
    for variable in (
        "PHAROS_BROKER__PASSWORD",
        "PHAROS_CONTROL__BROKER_PASSWORD",
        "PHAROS_RULES__BROKER_PASSWORD",
    ):
        assert variable in message
    assert "pharos broker service-account pharos-commands" in message


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _get(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - local http
            return int(response.status)
    except OSError:
        return None


def test_serve_migrates_and_answers_health(env: dict[str, str], tmp_path: Path) -> None:
    port = _free_port()
    log = tmp_path / "serve.log"
    # No broker secrets here; the Modbus poller runs (no meters yet).
    command = ["serve", "--no-ingest", "--no-control", "--no-rules"]
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-c", "from pharos.cli import main; main()", *command],
            env={**os.environ, "PHAROS_API__PORT": str(port)},
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
    try:
        deadline = time.monotonic() + 30
        status = None
        while status is None and process.poll() is None and time.monotonic() < deadline:
            status = _get(f"http://127.0.0.1:{port}/healthz")
            if status is None:
                time.sleep(0.1)  # poll interval of the wait on the condition above
    finally:
        process.terminate()
        code = process.wait(timeout=10)
    assert status == 200, log.read_text()
    assert code == 0, f"SIGTERM stops it cleanly\n{log.read_text()}"
    # `serve` migrated the database itself: other commands find the schema.
    assert failed(1, "devices", "show", "nope").strip() == "error: no device 'nope'"
