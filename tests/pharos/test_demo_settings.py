"""The demo's settings file reads back, through ``pharos --config``'s loader, as written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import SecretStr

from pharos.demo_settings import write_demo_settings
from pharos.settings import Settings, load_settings


@pytest.fixture(autouse=True)
def _no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("PHAROS_"):
            monkeypatch.delenv(name)


def test_the_file_reads_back_with_every_value_and_odd_characters(tmp_path: Path) -> None:
    odd = tmp_path / 'dir "quoted" \\ back\x7fslash Cần Thơ'
    settings = Settings().model_copy(
        update={
            "data_dir": odd,
            "database": Settings().database.model_copy(
                update={"url": f"sqlite:///{odd / 'pharos.db'}"}
            ),
            "broker": Settings().broker.model_copy(
                update={
                    "port": 18830,
                    "password": SecretStr('s3cr"et\\'),
                    "password_file": odd / "passwd",
                    "acl_file": odd / "acl",
                    "pid_file": odd / "mosquitto.pid",
                }
            ),
            "control": Settings().control.model_copy(
                update={"broker_password": SecretStr("commands-secret")}
            ),
        }
    )
    path = write_demo_settings(tmp_path / "demo" / "pharos.toml", settings)
    assert path.stat().st_mode & 0o777 == 0o600
    loaded = load_settings(path)
    assert loaded.data_dir == odd
    assert loaded.database.url == f"sqlite:///{odd / 'pharos.db'}"
    assert loaded.broker.port == 18830
    assert loaded.broker.password is not None
    assert loaded.broker.password.get_secret_value() == 's3cr"et\\'
    assert (loaded.broker.password_file, loaded.broker.pid_file) == (
        odd / "passwd",
        odd / "mosquitto.pid",
    )
    assert loaded.control.broker_password is not None
    assert loaded.control.broker_password.get_secret_value() == "commands-secret"
    assert loaded.rules.broker_password is None  # not given: left out, not "None"
    assert loaded.influx.url is None


def test_a_relative_sqlite_path_is_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings().model_copy(update={"data_dir": Path("var")})
    loaded = load_settings(write_demo_settings(tmp_path / "pharos.toml", settings))
    assert loaded.database.url == f"sqlite:///{tmp_path / 'var' / 'pharos.db'}"
    assert loaded.data_dir == tmp_path / "var"
