"""The settings file of a running demo (``data_dir/demo/pharos.toml``), for the CLI beside it.

The demo runs on settings of its own (its broker's port, password, ACL and pid files
under ``data_dir/demo/broker``, the services' fresh broker secrets, the widened
future-timestamp window); ``pharos --config data_dir/demo/pharos.toml …`` gives any
command exactly those, so a device added or a secret rotated there reaches the demo's
broker (it gets SIGHUP through the demo's pid file) and never the system broker's
``/etc/mosquitto`` files. The file holds secrets: it is written with mode 0600.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import SecretStr
from sqlalchemy.engine import make_url

from pharos.settings import Settings

Scalar = str | int | float | bool


def _toml_value(value: Scalar) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    # A JSON string is a TOML basic string, except that TOML also wants DEL escaped.
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")


def render_toml(tables: dict[str, dict[str, Scalar | None]], top: dict[str, Scalar]) -> str:
    """Top-level keys, then one ``[table]`` per section; ``None`` values are left out."""
    lines = [f"{key} = {_toml_value(value)}" for key, value in top.items()]
    for name, values in tables.items():
        kept = {k: v for k, v in values.items() if v is not None}
        if kept:
            lines += ["", f"[{name}]"]
            lines += [f"{key} = {_toml_value(value)}" for key, value in kept.items()]
    return "\n".join(lines) + "\n"


def _absolute_database_url(url: str) -> str:
    """A SQLite URL with an absolute path, so the file works from any directory."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return url
    if parsed.database == ":memory:":
        return url
    # Written as the settings' own default is (sqlite:///path), not percent-encoded.
    query = url.partition("?")[2]
    return f"sqlite:///{Path(parsed.database).resolve()}" + (f"?{query}" if query else "")


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None


def demo_settings_toml(settings: Settings) -> str:
    """The TOML of what the CLI needs to act on the running demo."""
    broker, influx = settings.broker, settings.influx
    header = (
        "# Written by `pharos demo` for the CLI beside it; rewritten by every demo run.\n"
        "# Use: pharos --config THIS_FILE devices list\n"
    )
    return header + render_toml(
        {
            "database": {"url": _absolute_database_url(settings.database.url)},
            "broker": {
                "host": broker.host,
                "port": broker.port,
                "username": broker.username,
                "password": _secret(broker.password),
                "password_file": str(broker.password_file.resolve()),
                "acl_file": str(broker.acl_file.resolve()),
                "pid_file": str(broker.pid_file.resolve()) if broker.pid_file else None,
                "hash_iterations": broker.hash_iterations,
            },
            "influx": {
                "url": influx.url,
                "api": influx.api if influx.url else None,
                "database": influx.database if influx.url else None,
                "org": influx.org,
                "token": _secret(influx.token),
            },
            "telemetry": {"max_future_s": settings.telemetry.max_future_s},
            "control": {
                "broker_username": settings.control.broker_username,
                "broker_password": _secret(settings.control.broker_password),
            },
            "rules": {
                "broker_username": settings.rules.broker_username,
                "broker_password": _secret(settings.rules.broker_password),
            },
            "api": {"host": settings.api.host, "port": settings.api.port},
        },
        {"data_dir": str(settings.data_dir.resolve())},
    )


def write_demo_settings(path: Path, settings: Settings) -> Path:
    """Write ``demo_settings_toml`` to ``path`` (mode 0600, replaced atomically)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(demo_settings_toml(settings))
    partial.replace(path)
    return path


def shown_path(path: Path) -> str:
    """``path`` relative to the working directory when under it (shorter to type)."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path.resolve())


__all__ = ["demo_settings_toml", "render_toml", "shown_path", "write_demo_settings"]
