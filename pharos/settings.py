"""The one typed settings tree, read from ``PHAROS_…`` variables and an optional file.

Nested fields use ``__`` (``PHAROS_BROKER__PORT=1884``). A config file (YAML or TOML)
sits below the environment: the environment wins. Settings are built by
``load_settings`` and passed to what needs them; nothing reads them at import time.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
    YamlConfigSettingsSource,
)

from control.settings import ControlSettings
from grafana.settings import GrafanaSettings
from pharos_core.source_file import (
    FileError,
    FileProblem,
    LineMap,
    field_name,
    line_for,
    reason_of,
    yaml_with_lines,
)
from rules.settings import RulesSettings


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BrokerSettings(_Section):
    host: str = Field("127.0.0.1", description="MQTT broker host")
    port: Annotated[int, Field(ge=1, le=65535)] = Field(1883, description="MQTT port")
    username: str = Field("pharos-backend", description="the backend's own broker account")
    password: SecretStr | None = Field(None, description="its secret (see `pharos broker`)")
    password_file: Path = Field(
        Path("/etc/mosquitto/pharos/passwd"), description="Mosquitto password file Pharos writes"
    )
    acl_file: Path = Field(
        Path("/etc/mosquitto/pharos/acl"), description="Mosquitto ACL file Pharos writes"
    )
    pid_file: Path | None = Field(
        Path("/run/mosquitto/mosquitto.pid"),
        description="the broker's pid file: Pharos sends SIGHUP to reload credentials",
    )
    hash_iterations: Annotated[int, Field(ge=101, le=1_000_000)] = Field(
        101, description="PBKDF2-SHA512 iterations of password hashes (Mosquitto's default 101)"
    )


class InfluxSettings(_Section):
    url: str | None = Field(None, description="InfluxDB URL; unset means the embedded store")
    api: Literal["v1", "v2"] = Field("v1", description="v1 `/write` or v2 `/api/v2/write`")
    database: str = Field("pharos", description="1.x database (v2: bucket)")
    org: str | None = Field(None, description="2.x organisation")
    token: SecretStr | None = Field(None, description="2.x token or 1.x 'user:password'")


class TelemetrySettings(_Section):
    batch_size: Annotated[int, Field(ge=1, le=100_000)] = Field(
        5000, description="points per InfluxDB write"
    )
    batch_interval_s: Annotated[float, Field(gt=0, le=60)] = Field(
        0.5, description="longest a point waits for its batch to fill"
    )
    spool_dir: Path | None = Field(None, description="durable spool; default data_dir/spool")
    spool_max_bytes: Annotated[int, Field(ge=1_000_000)] = Field(
        1_000_000_000, description="when full, ingest stops acknowledging (broker holds data)"
    )
    share_group: str | None = Field(
        None,
        description="MQTT 5 shared-subscription group for several ingest workers; make it "
        "unguessable: Mosquitto's ACL cannot stop a device joining a known group",
    )
    max_future_s: Annotated[float, Field(ge=0)] = Field(
        300, description="a ts further ahead than this is replaced by server time, flagged"
    )
    max_past_s: Annotated[float, Field(ge=0)] = Field(
        7 * 86_400, description="a ts older than this is replaced by server time, flagged"
    )
    raw_retention: str = Field("30d", description="InfluxDB retention of raw points")
    hourly_retention: str = Field("730d", description="retention of hourly means")


class DatabaseSettings(_Section):
    url: str = Field(
        "sqlite:///var/pharos.db",
        description="SQLAlchemy URL: sqlite:///path or postgresql+psycopg://user@host/db",
    )
    echo: bool = Field(False, description="log every SQL statement")


class SiteSettings(_Section):
    name: str = Field("Cần Thơ", description="city shown on the IOC")
    latitude: Annotated[float, Field(ge=-90, le=90)] = 10.0452
    longitude: Annotated[float, Field(ge=-180, le=180)] = 105.7469
    timezone: str = Field("Asia/Ho_Chi_Minh", description="IANA time zone of the site")
    districts: list[str] = Field(
        default_factory=lambda: [
            "Ninh Kiều",
            "Bình Thủy",
            "Cái Răng",
            "Ô Môn",
            "Thốt Nốt",
            "Phong Điền",
            "Cờ Đỏ",
            "Thới Lai",
            "Vĩnh Thạnh",
        ],
        description="districts (quận/huyện) a device may belong to",
    )


class ApiSettings(_Section):
    host: str = Field("127.0.0.1", description="address the API listens on")
    port: Annotated[int, Field(ge=1, le=65535)] = 8000
    page_size_max: Annotated[int, Field(ge=1, le=10_000)] = 500


class ConsoleSettings(_Section):
    session_secret: SecretStr | None = Field(
        None,
        description="signs the web console's session cookies; unset: a random secret per "
        "process (sessions end when Pharos restarts; set it when several processes serve)",
    )
    session_max_age_s: Annotated[int, Field(ge=60, le=30 * 86_400)] = Field(
        8 * 3600, description="a console session ends this long after sign-in"
    )
    secure_cookie: bool = Field(
        False, description="mark the session cookie Secure (set it when served over HTTPS)"
    )
    tile_url: str | None = Field(
        None,
        description="map tiles on the IOC network, e.g. http://tiles.ioc/{z}/{x}/{y}.png; "
        "unset: maps are drawn without tiles",
    )


class Settings(BaseSettings):
    """Everything Pharos can be told. See README, 'Configuration'."""

    model_config = SettingsConfigDict(
        env_prefix="PHAROS_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
        env_parse_none_str="",  # PHAROS_BROKER__PID_FILE= means "none", not Path(".")
    )

    data_dir: Path = Field(Path("var"), description="where local state (spool, demo files) lives")
    broker: BrokerSettings = Field(default_factory=BrokerSettings)
    influx: InfluxSettings = Field(default_factory=InfluxSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)
    site: SiteSettings = Field(default_factory=SiteSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    console: ConsoleSettings = Field(default_factory=ConsoleSettings)
    grafana: GrafanaSettings = Field(default_factory=GrafanaSettings)
    rules: RulesSettings = Field(default_factory=RulesSettings)
    control: ControlSettings = Field(default_factory=ControlSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if settings_cls.model_config.get("yaml_file"):
            sources.append(YamlConfigSettingsSource(settings_cls))
        if settings_cls.model_config.get("toml_file"):
            sources.append(TomlConfigSettingsSource(settings_cls))
        return tuple(sources)


class SettingsError(FileError):
    """Settings that do not validate: every field and reason, each at its line of the
    config file (``pharos.toml:4: broker.port: …``) or named by its environment variable
    (``PHAROS_API__PORT: api.port: …``)."""


def _env_name(path: tuple[Any, ...]) -> str:
    return "PHAROS_" + "__".join(str(part).upper() for part in path)


def _toml_lines(text: str) -> LineMap:
    """The line of each ``[table]`` and ``key = value`` of a TOML file (plain and dotted
    keys; enough to point at a setting, which is all this is for)."""
    lines: LineMap = {}
    table: tuple[Any, ...] = ()
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if header := re.fullmatch(r"\[\s*([A-Za-z0-9_.\s-]+?)\s*\]", line):
            table = tuple(part.strip() for part in header.group(1).split("."))
            lines.setdefault(table, number)
        elif key := re.match(r"([A-Za-z0-9_.\s-]+?)\s*=", line):
            path = (*table, *(part.strip() for part in key.group(1).split(".")))
            lines.setdefault(path, number)
    return lines


def _read_config(config_file: Path) -> LineMap:
    """The file's line map; ``SettingsError`` when it cannot be read or parsed."""
    source = str(config_file)
    try:
        text = config_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(source, [FileProblem(None, "file", f"cannot read: {exc}")]) from None
    if config_file.suffix == ".toml":
        try:
            tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            at = re.search(r"\(at line (\d+)", str(exc))
            reason = f"not valid TOML: {str(exc).split(' (at line')[0]}"
            line = int(at.group(1)) if at else None
            raise SettingsError(source, [FileProblem(line, "toml", reason)]) from None
        return _toml_lines(text)
    try:
        document, lines = yaml_with_lines(text, source)
    except FileError as exc:
        raise SettingsError(source, exc.problems) from None
    if document is not None and not isinstance(document, dict):
        reason = "expected a mapping of sections (broker:, database:, …)"
        raise SettingsError(source, [FileProblem(1, "file", reason)])
    return lines


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Settings from the environment, over ``config_file`` (.yaml/.yml/.toml) if given."""
    settings_cls: type[Settings] = Settings
    lines: LineMap = {}
    if config_file is not None:
        if not config_file.is_file():
            raise SettingsError(
                str(config_file), [FileProblem(None, "file", "the config file does not exist")]
            )
        lines = _read_config(config_file)
        key = "toml_file" if config_file.suffix == ".toml" else "yaml_file"
        settings_cls = type(
            "FileSettings",
            (Settings,),
            {"model_config": {**Settings.model_config, key: config_file}},
        )
    try:
        return settings_cls(**overrides)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            path = tuple(error["loc"])
            field, reason = field_name(path).replace("[", ".").replace("]", ""), error["msg"]
            env = next(
                (_env_name(path[:n]) for n in range(len(path), 0, -1)
                 if _env_name(path[:n]) in os.environ),
                None,
            )  # fmt: skip
            if env is not None or config_file is None:
                problems.append(FileProblem(None, field, reason_of(reason), env or "environment"))
            else:
                problems.append(FileProblem(line_for(path, lines), field, reason_of(reason)))
        raise SettingsError(str(config_file or "environment"), problems) from None
