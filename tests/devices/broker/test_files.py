"""Rendering and writing the password and ACL files, and the reload signal."""

from __future__ import annotations

import logging
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from devices.broker.files import (
    BrokerAccessWriter,
    BrokerAccount,
    reload_broker,
    render_acl_file,
    render_password_file,
    write_broker_files,
)
from devices.broker.hashing import hash_password

HASH_A = hash_password("a")
HASH_B = hash_password("b")
HASH_S = hash_password("s")


def _accounts() -> list[BrokerAccount]:
    return [
        BrokerAccount("dev-b", HASH_B, "device"),
        BrokerAccount("pharos-backend", HASH_S, "service"),
        BrokerAccount("dev-a", HASH_A, "device"),
    ]


def test_password_file_lines_sorted_by_username() -> None:
    assert render_password_file(_accounts()) == (
        f"dev-a:{HASH_A}\ndev-b:{HASH_B}\npharos-backend:{HASH_S}\n"
    )
    assert render_password_file([]) == ""


def test_duplicate_username_is_refused() -> None:
    twice = [BrokerAccount("dev-a", HASH_A, "device"), BrokerAccount("dev-a", HASH_B, "device")]
    with pytest.raises(ValueError, match="twice"):
        render_password_file(twice)


@pytest.mark.parametrize("username", ["", "dev a", "dev:a", "dev/a", "dev+a", "#", "a\nuser x"])
def test_username_that_would_break_a_file_is_refused(username: str) -> None:
    with pytest.raises(ValueError, match="username"):
        BrokerAccount(username, HASH_A, "device")
    with pytest.raises(ValueError, match="username"):
        render_acl_file([username])


def test_hash_must_look_like_one() -> None:
    with pytest.raises(ValueError, match="hash"):
        BrokerAccount("dev-a", "plaintext-secret", "device")
    with pytest.raises(ValueError, match="hash"):
        BrokerAccount("dev-a", HASH_A + "\nuser x", "device")


def _code_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def test_acl_patterns_first_then_one_block_per_service() -> None:
    lines = _code_lines(render_acl_file(["svc-2", "pharos-backend", "svc-2"]))
    assert lines == [
        "pattern write pharos/v1/dev/%u/telemetry",
        "pattern write pharos/v1/dev/%u/state",
        "pattern write pharos/v1/dev/%u/status",
        "pattern write pharos/v1/dev/%u/cmd/ack",
        "pattern read pharos/v1/dev/%u/cmd",
        "user pharos-backend",
        "topic readwrite pharos/v1/#",
        "user svc-2",
        "topic readwrite pharos/v1/#",
    ]


def test_acl_has_no_anonymous_topic_lines() -> None:
    # `topic` lines before the first `user` line would grant anonymous clients access.
    lines = _code_lines(render_acl_file(["pharos-backend"]))
    first_user = next(i for i, line in enumerate(lines) if line.startswith("user "))
    assert not any(line.startswith("topic ") for line in lines[:first_user])


def test_write_creates_dirs_and_both_files(tmp_path: Path) -> None:
    passwd = tmp_path / "etc" / "pharos" / "passwd"
    acl = tmp_path / "etc" / "pharos" / "acl"

    write_broker_files(_accounts(), passwd, acl)

    assert passwd.read_text(encoding="utf-8") == render_password_file(_accounts())
    assert acl.read_text(encoding="utf-8") == render_acl_file(["pharos-backend"])
    for path in (passwd, acl):
        assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert sorted(p.name for p in passwd.parent.iterdir()) == ["acl", "passwd"]  # no temp left


def test_write_replaces_the_file_atomically(tmp_path: Path) -> None:
    passwd, acl = tmp_path / "passwd", tmp_path / "acl"
    write_broker_files(_accounts(), passwd, acl)
    before = passwd.stat().st_ino
    # A reader holding the old file keeps reading the old content: a new inode
    # replaced it in one rename, it was never truncated and rewritten in place.
    with passwd.open(encoding="utf-8") as old_reader:
        write_broker_files(_accounts()[:1], passwd, acl)
        assert old_reader.read() == render_password_file(_accounts())
    assert passwd.stat().st_ino != before
    assert passwd.read_text(encoding="utf-8") == f"dev-b:{HASH_B}\n"


def test_failed_write_leaves_the_old_file_and_no_temp(tmp_path: Path) -> None:
    passwd, acl = tmp_path / "passwd", tmp_path / "acl"
    write_broker_files(_accounts(), passwd, acl)
    bad = [*_accounts(), BrokerAccount("dev-a", HASH_B, "device")]
    with pytest.raises(ValueError, match="twice"):
        write_broker_files(bad, passwd, acl)
    assert passwd.read_text(encoding="utf-8") == render_password_file(_accounts())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["acl", "passwd"]


def test_reload_with_missing_pid_file_returns_false(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="devices.broker.files"):
        assert reload_broker(tmp_path / "absent.pid") is False
        assert reload_broker(None) is False
    assert "not reloaded" in caplog.text


def test_reload_with_garbage_or_dead_pid_returns_false(tmp_path: Path) -> None:
    pid_file = tmp_path / "mosquitto.pid"
    pid_file.write_text("not a pid\n", encoding="ascii")
    assert reload_broker(pid_file) is False

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    pid_file.write_text(f"{dead.pid}\n", encoding="ascii")
    assert reload_broker(pid_file) is False


def test_reload_never_signals_a_process_that_is_not_mosquitto(tmp_path: Path) -> None:
    # A stale pid file whose pid now belongs to someone else: SIGHUP would kill it.
    with subprocess.Popen([sys.executable, "-c", "input()"], stdin=subprocess.PIPE) as stranger:
        try:
            pid_file = tmp_path / "mosquitto.pid"
            pid_file.write_text(f"{stranger.pid}\n", encoding="ascii")
            assert reload_broker(pid_file) is False
            assert stranger.poll() is None
        finally:
            stranger.kill()


def test_writer_sync_writes_even_when_no_broker_runs(tmp_path: Path) -> None:
    writer = BrokerAccessWriter(tmp_path / "passwd", tmp_path / "acl", tmp_path / "none.pid")
    writer.sync(_accounts())
    assert (tmp_path / "passwd").read_text(encoding="utf-8").count("\n") == 3
    assert "user pharos-backend" in (tmp_path / "acl").read_text(encoding="utf-8")
