"""A real Mosquitto broker run from the project's own config, for tests and local runs.

``render_config`` rewrites only the environment-bound lines of
``mosquitto/mosquitto.conf`` (listener, file paths, log destination), so a broker
started here runs the production settings. ``MosquittoProcess`` starts it on a free
port in a working directory, waits until it accepts connections, reloads and stops it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

DEFAULT_BASE_CONF = Path(__file__).resolve().parents[1] / "mosquitto" / "mosquitto.conf"
INSTALL_HINT = "install it: apt-get install mosquitto mosquitto-clients"
_DEBIAN_PATH = Path("/usr/sbin/mosquitto")  # /usr/sbin is often not on a user's PATH
_HOST = "127.0.0.1"
_START_TIMEOUT_S = 10.0
_POLL_S = 0.02
_STOP_TIMEOUT_S = 5.0
# Logged (information level) by the main loop just before it re-reads the files;
# the loop finishes the reload before it reads any further client packet.
_RELOAD_LINE = "Reloading config."


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def port_is_free(port: int) -> bool:
    """Whether a listener could bind ``port`` on 127.0.0.1 now (as Mosquitto binds it:
    with SO_REUSEADDR, so a port a stopped broker left in TIME_WAIT counts as free)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((_HOST, port))
        except OSError:
            return False
        return True


def find_mosquitto() -> str:
    """The broker executable, or a RuntimeError saying how to install it."""
    found = shutil.which("mosquitto")
    if found:
        return found
    if _DEBIAN_PATH.is_file() and os.access(_DEBIAN_PATH, os.X_OK):
        return str(_DEBIAN_PATH)
    raise RuntimeError(
        f"mosquitto is not installed (not on PATH nor {_DEBIAN_PATH}); {INSTALL_HINT}"
    )


def _env_values(port: int, workdir: Path) -> dict[str, str]:
    """The options whose value depends on where the broker runs; all else is kept."""
    return {
        "listener": f"{port} {_HOST}",
        "password_file": str(workdir / "passwd"),
        "acl_file": str(workdir / "acl"),
        # Mosquitto joins this with the file name, so it must end with a slash.
        "persistence_location": f"{workdir / 'data'}/",
        "pid_file": str(workdir / "mosquitto.pid"),
        "log_dest": f"file {workdir / 'mosquitto.log'}",
    }


def _key(line: str) -> str | None:
    """The option a config line sets, or ``None`` for blank lines and comments."""
    stripped = line.strip()
    if not stripped or stripped.startswith("#"):
        return None
    return stripped.split()[0]


def render_config(base_conf: Path, *, port: int, workdir: Path) -> str:
    """``base_conf`` with its environment-bound lines pointed at ``workdir`` and ``port``.

    Each rewritten key keeps its place (a listener's own options follow it). A key
    the base file lacks is appended; a repeated ``log_dest`` is commented out so the
    log goes to one file. Appended: ``log_type information`` (the log then records
    reloads and client sessions) and, when running as root, ``user root``: Debian's
    broker otherwise drops to the ``mosquitto`` user and cannot read ``workdir``.
    """
    values = _env_values(port, workdir)
    if os.geteuid() == 0:
        values["user"] = "root"
    out: list[str] = []
    seen: set[str] = set()
    for line in base_conf.read_text(encoding="utf-8").splitlines():
        key = _key(line)
        if key not in values:
            out.append(line)
            continue
        if key == "listener" and key in seen:
            raise ValueError(f"{base_conf}: a test broker runs one listener, found several")
        out.append(f"# (test) {line}" if key in seen else f"{key} {values[key]}")
        seen.add(key)
    out.append("# added for this environment")
    out.extend(f"{key} {values[key]}" for key in values if key not in seen)
    # "Reloading config." and client connects are logged at information level only:
    # the harness waits for the former, and a failing test's log tail wants both.
    out.append("log_type information")
    return "\n".join(out) + "\n"


class MosquittoProcess:
    """A broker subprocess in ``workdir``; use as ``with MosquittoProcess(dir) as broker``."""

    def __init__(
        self, workdir: Path, port: int | None = None, base_conf: Path = DEFAULT_BASE_CONF
    ) -> None:
        self.workdir = workdir
        self._port = port if port is not None else free_port()
        self.base_conf = base_conf
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def port(self) -> int:
        return self._port

    @property
    def host(self) -> str:
        return _HOST

    @property
    def password_file(self) -> Path:
        return self.workdir / "passwd"

    @property
    def acl_file(self) -> Path:
        return self.workdir / "acl"

    @property
    def pid_file(self) -> Path:
        return self.workdir / "mosquitto.pid"

    @property
    def config_file(self) -> Path:
        return self.workdir / "mosquitto.conf"

    @property
    def log_file(self) -> Path:
        return self.workdir / "mosquitto.log"

    @property
    def stderr_file(self) -> Path:
        # Errors before the log file is opened (a bad config line) only reach stderr.
        return self.workdir / "mosquitto.stderr"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Write the config, start the broker, return once it accepts connections."""
        if self.is_running():
            return
        executable = find_mosquitto()
        self._prepare_workdir()
        with self.stderr_file.open("wb") as stderr:
            self._process = subprocess.Popen(
                [executable, "-c", str(self.config_file)],
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
            )
        self._wait_until_listening()

    def _prepare_workdir(self) -> None:
        (self.workdir / "data").mkdir(parents=True, exist_ok=True)
        for path in (self.password_file, self.acl_file):
            # Mosquitto refuses to start on a missing file; empty means nobody gets in.
            path.touch(exist_ok=True)
        self.config_file.write_text(
            render_config(self.base_conf, port=self._port, workdir=self.workdir),
            encoding="utf-8",
        )

    def _wait_until_listening(self) -> None:
        process = self._require_process()
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            if _accepts_connections(_HOST, self._port):
                self._ensure_pid_file(process.pid)
                return
            try:
                # Doubles as the poll interval and notices at once if the broker died.
                process.wait(timeout=_POLL_S)
            except subprocess.TimeoutExpired:
                continue
            raise RuntimeError(
                f"mosquitto exited with status {process.returncode} on start:\n{self.log_tail()}"
            )
        self.stop()
        raise RuntimeError(
            f"mosquitto did not accept connections on port {self._port} within "
            f"{_START_TIMEOUT_S:.0f} s:\n{self.log_tail()}"
        )

    def _ensure_pid_file(self, pid: int) -> None:
        """The pid file Pharos signals after credential changes (``broker.pid_file``).

        Mosquitto writes it before it listens (as root it may drop privileges first and
        fail to); whatever the case, the file names this broker once it accepts clients.
        """
        try:
            written = self.pid_file.read_text(encoding="ascii").strip()
        except OSError:
            written = ""
        if written != str(pid):
            self.pid_file.write_text(f"{pid}\n", encoding="ascii")

    def _require_process(self) -> subprocess.Popen[bytes]:
        if self._process is None:
            raise RuntimeError("mosquitto is not started")
        return self._process

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not exit within a few seconds."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=_STOP_TIMEOUT_S)

    def reload(self, *, wait: bool = True, timeout: float = _START_TIMEOUT_S) -> None:
        """SIGHUP: re-read the password and ACL files (and drop clients now refused)."""
        before = self.reloads_seen()
        self._require_process().send_signal(signal.SIGHUP)
        if wait:
            self.wait_for_reload(before, timeout=timeout)

    def reloads_seen(self) -> int:
        """How many reloads the broker has logged so far."""
        return self._log_text().count(_RELOAD_LINE)

    def wait_for_reload(self, before: int, timeout: float = _START_TIMEOUT_S) -> None:
        """Wait until the broker logs a reload beyond the ``before`` already seen."""
        if not _wait(lambda: self.reloads_seen() > before or not self.is_running(), timeout):
            raise TimeoutError(f"mosquitto did not reload within {timeout} s:\n{self.log_tail()}")
        if not self.is_running():
            raise RuntimeError(f"mosquitto died while reloading:\n{self.log_tail()}")

    def _log_text(self) -> str:
        try:
            return self.log_file.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the broker's stderr and log file, for error messages."""
        parts = []
        for path in (self.stderr_file, self.log_file):
            if path.is_file():
                text = path.read_text(encoding="utf-8", errors="replace").splitlines()
                parts.append(f"--- {path.name}\n" + "\n".join(text[-lines:]))
        return "\n".join(parts) or "(no broker output)"

    def __enter__(self) -> MosquittoProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _accepts_connections(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=_POLL_S * 5):
            return True
    except OSError:
        return False


def _wait(condition: Callable[[], bool], timeout: float) -> bool:
    """Poll ``condition`` every 20 ms until it holds or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_S)
    return True
