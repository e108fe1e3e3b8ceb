"""Settings come from the environment over a file, and errors name every bad field."""

from __future__ import annotations

from pathlib import Path

import pytest

from pharos.settings import SettingsError, load_settings


def test_defaults_are_can_tho(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(__import__("os").environ):
        if name.startswith("PHAROS_"):
            monkeypatch.delenv(name)
    settings = load_settings()
    assert settings.site.timezone == "Asia/Ho_Chi_Minh"
    assert (settings.site.latitude, settings.site.longitude) == (10.0452, 105.7469)
    assert "Ninh Kiều" in settings.site.districts
    assert settings.influx.url is None  # embedded store by default


def test_environment_wins_over_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "pharos.yaml"
    config.write_text("broker:\n  port: 1884\n  host: broker.local\napi:\n  port: 9000\n")
    monkeypatch.setenv("PHAROS_BROKER__PORT", "1885")
    settings = load_settings(config)
    assert settings.broker.port == 1885
    assert settings.broker.host == "broker.local"
    assert settings.api.port == 9000


def test_toml_file(tmp_path: Path) -> None:
    config = tmp_path / "pharos.toml"
    config.write_text('[database]\nurl = "sqlite:///x.db"\n')
    assert load_settings(config).database.url == "sqlite:///x.db"


def test_errors_name_every_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PHAROS_API__PORT", "abc")
    config = tmp_path / "pharos.yaml"
    config.write_text("site:\n  latitude: 95\nbroker:\n  colour: blue\n")
    with pytest.raises(SettingsError) as caught:
        load_settings(config)
    message = str(caught.value)
    assert "api.port" in message
    assert "site.latitude" in message
    assert "broker.colour" in message and "Extra inputs" in message


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings(tmp_path / "nope.yaml")
