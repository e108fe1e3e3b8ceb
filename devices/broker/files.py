"""Mosquitto's password and ACL files: rendering, atomic writing, and the SIGHUP reload.

Pharos owns both files: after every credential change the registry hands the full
list of accounts to ``BrokerAccessWriter.sync``, which rewrites them and tells the
running broker to reload. Device access comes from ``pattern`` lines keyed on the
username (``%u``), so adding a device never changes the ACL file.
"""

from __future__ import annotations

import contextlib
import grp
import logging
import os
import re
import signal
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from devices.wire.topics import TOPIC_ROOT, Channel

log = logging.getLogger(__name__)

Role = Literal["device", "service"]
FILE_MODE = 0o640
_BROKER_GROUP = "mosquitto"

# A username ends up in a line of each file: no whitespace (the ACL file splits on
# spaces and lines), no ':' (the password file's separator), and none of '+#/' which
# Mosquitto refuses in pattern ACLs (CVE-2017-7650). Devices are stricter still (topics).
_USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_HASH = re.compile(r"\$[0-9]+\$[A-Za-z0-9+/=$]+")

# What each device may do on its own branch of the tree, and nothing else.
_DEVICE_WRITES = (Channel.TELEMETRY, Channel.STATE, Channel.STATUS, Channel.CMD_ACK)
_DEVICE_READS = (Channel.CMD,)


@dataclass(frozen=True, slots=True)
class BrokerAccount:
    """One line of the password file: a device or a backend service."""

    username: str
    password_hash: str
    role: Role

    def __post_init__(self) -> None:
        _check_username(self.username)
        if _HASH.fullmatch(self.password_hash) is None:
            raise ValueError(f"account {self.username!r}: not a Mosquitto password hash")
        if self.role not in ("device", "service"):
            raise ValueError(f"account {self.username!r}: unknown role {self.role!r}")


def _check_username(username: str) -> None:
    if _USERNAME.fullmatch(username) is None:
        raise ValueError(
            f"broker username {username!r} must be 1-128 letters, digits, '.', '_' or '-'"
        )


def _unique(accounts: Iterable[BrokerAccount]) -> list[BrokerAccount]:
    """The accounts sorted by username; a username given twice is an error."""
    by_name: dict[str, BrokerAccount] = {}
    for account in accounts:
        if account.username in by_name:
            raise ValueError(f"broker username {account.username!r} appears twice")
        by_name[account.username] = account
    return [by_name[name] for name in sorted(by_name)]


def render_password_file(accounts: Iterable[BrokerAccount]) -> str:
    """``username:hash`` lines sorted by username (a stable file diffs cleanly)."""
    return "".join(f"{a.username}:{a.password_hash}\n" for a in _unique(accounts))


def _device_pattern(access: Literal["read", "write"], channel: Channel) -> str:
    return f"pattern {access} {TOPIC_ROOT}/dev/%u/{channel.value}"


def render_acl_file(service_usernames: Iterable[str]) -> str:
    """The ACL: per-device patterns, then one ``user`` block per backend service.

    Order matters in Mosquitto's ACL file: ``topic`` lines before the first ``user``
    line apply to anonymous clients only, and ``pattern`` lines apply to every user
    wherever they stand. So the file opens with the patterns and has no ``topic``
    line outside a ``user`` block (anonymous clients are refused anyway).

    Mosquitto 2.0's ACL file never checks SUBSCRIBE (not even ``deny``): it checks
    each message on delivery with the subscriber's ``read`` rights. A shared
    subscription (``$share/group/filter``) is delivered on its plain topic, so the
    services' ``pharos/v1/#`` already covers it; no ``$share`` rule is needed.
    """
    names = sorted(set(service_usernames))
    for name in names:
        _check_username(name)
    lines = [
        "# Written by Pharos (`pharos broker sync`); edits by hand are overwritten.",
        "# Devices: each may touch only its own branch, keyed on its username (%u).",
        *(_device_pattern("write", channel) for channel in _DEVICE_WRITES),
        *(_device_pattern("read", channel) for channel in _DEVICE_READS),
    ]
    for name in names:
        lines += ["", f"user {name}", f"topic readwrite {TOPIC_ROOT}/#"]
    return "\n".join(lines) + "\n"


def _broker_gid(target: Path) -> int | None:
    """The group the broker reads the file as: the old file's, else ``mosquitto``'s."""
    with contextlib.suppress(FileNotFoundError):
        return target.stat().st_gid
    try:
        return grp.getgrnam(_BROKER_GROUP).gr_gid
    except KeyError:
        return None


def _atomic_write(target: Path, text: str) -> None:
    """Replace ``target`` in one step: the broker never reads a half-written file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.chmod(FILE_MODE)
        _give_to_broker_group(tmp, target)
        tmp.replace(target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _give_to_broker_group(tmp: Path, target: Path) -> None:
    # With mode 0640 the broker (which drops to the `mosquitto` user) reads the file
    # through its group; a file left in root's group would lock it out on reload.
    gid = _broker_gid(target)
    if gid is None or gid == tmp.stat().st_gid:
        return
    if os.geteuid() != 0 and gid not in os.getgroups():
        # Not ours to give; a broker run by this same user (tests, a laptop) reads it.
        log.debug("leaving %s in our own group (not a member of group %d)", target, gid)
        return
    try:
        os.chown(tmp, -1, gid)
    except PermissionError:
        log.warning("cannot give %s to group %d: the broker may not read it", target, gid)


def write_broker_files(
    accounts: Iterable[BrokerAccount], password_file: Path, acl_file: Path
) -> None:
    """Render and atomically write both files (mode 0640, parent directories made)."""
    ordered = _unique(accounts)
    services = [a.username for a in ordered if a.role == "service"]
    # ACL first: a removed service loses its rights before its login, and a new
    # service's rights are in place before it can log in.
    _atomic_write(acl_file, render_acl_file(services))
    _atomic_write(password_file, render_password_file(ordered))


def _read_pid(pid_file: Path) -> int | None:
    try:
        text = pid_file.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        log.warning("broker not reloaded: cannot read pid file %s (%s)", pid_file, exc)
        return None
    if not text.isdigit() or int(text) <= 1:
        log.warning("broker not reloaded: pid file %s holds %r, not a pid", pid_file, text)
        return None
    return int(text)


def _is_mosquitto(pid: int) -> bool:
    """Whether ``pid`` runs Mosquitto, so a stale pid file never signals a stranger."""
    try:
        comm = Path(f"/proc/{pid}/comm").read_text(encoding="utf-8").strip()
    except OSError:
        # No such process, or no /proc (not Linux): let os.kill decide.
        return True
    return comm.startswith("mosquitto")


def reload_broker(pid_file: Path | None) -> bool:
    """SIGHUP the broker named by ``pid_file``; ``False`` (logged) when it cannot be.

    A missing pid file or a dead broker is normal (the broker is down, or runs
    elsewhere and is reloaded by its own supervisor), so this never raises for it:
    the files are written and the next broker start reads them.
    """
    if pid_file is None:
        log.warning("broker not reloaded: no pid file configured")
        return False
    pid = _read_pid(pid_file)
    if pid is None:
        return False
    if not _is_mosquitto(pid):
        log.warning("broker not reloaded: pid %d in %s is not mosquitto (stale)", pid, pid_file)
        return False
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        log.warning("broker not reloaded: no process %d (pid file %s is stale)", pid, pid_file)
        return False
    except PermissionError:
        log.warning("broker not reloaded: not allowed to signal pid %d", pid)
        return False
    log.info("broker (pid %d) told to reload its password and ACL files", pid)
    return True


class BrokerAccessWriter:
    """What the registry calls after every credential change: write both files, reload."""

    def __init__(self, password_file: Path, acl_file: Path, pid_file: Path | None) -> None:
        self.password_file = password_file
        self.acl_file = acl_file
        self.pid_file = pid_file

    def sync(self, accounts: Iterable[BrokerAccount]) -> None:
        """Make the broker's view equal ``accounts`` (the complete list, not a delta)."""
        write_broker_files(accounts, self.password_file, self.acl_file)
        reload_broker(self.pid_file)
