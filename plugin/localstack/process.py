"""Start, watch and stop the local servers this project runs (redis-server, tansu, tritonserver).

A server runs in one of two ways:

* **attached**: ``with RedisServer() as redis: ...``. The child lives as long as the block (tests,
  benchmarks, the embedded demo), and dies with this process even if it is killed.
* **detached**: ``server.up(RunDirectory(var_dir / "run"))`` starts it in its own session and
  records a pidfile plus a JSON state file with its endpoints, so that ``status`` and ``down``
  from a later process (``explore stack status``, ``explore stack down``) find it again.

Every server binds to 127.0.0.1 only. Output goes to a log file, and a start that fails or
times out raises :class:`ServerStartError` carrying the tail of that log.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import fcntl
import json
import os
import signal
import socket
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from plugin.errors import MissingPrerequisite
from plugin.settings import PROJECT_ROOT

LOCALHOST = "127.0.0.1"
DEFAULT_VAR_DIR = PROJECT_ROOT / "var"


class ServerError(MissingPrerequisite, RuntimeError):
    """A local server could not be found, started, reached or stopped: the message says what
    to run or free first, so the command line shows it as one line."""


class ServerStartError(ServerError):
    """A server exited or did not become ready in time; the message ends with its log tail."""


def free_port(host: str = LOCALHOST) -> int:
    """A TCP port on ``host`` that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def default_log_path(name: str, var_dir: Path | None = None) -> Path:
    """``<var_dir>/logs/<name>.log``, with the project's ``var/`` by default."""
    return (var_dir or DEFAULT_VAR_DIR) / "logs" / f"{name}.log"


def read_log_tail(path: Path, lines: int = 40, offset: int = 0) -> str:
    """The last ``lines`` lines of a log file from byte ``offset`` on ("" if there is none)."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            # Tails are for error messages: 64 KiB is plenty and bounds the read.
            fh.seek(max(offset, size - 65536))
            data = fh.read()
    except OSError:
        return ""
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])


def _parent_death_signal() -> Callable[[], None] | None:
    """A pre-exec hook asking Linux to SIGTERM the child when its parent dies, if available."""
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return None
    try:
        libc = ctypes.CDLL(libc_name, use_errno=True)
    except OSError:
        return None
    pr_set_pdeathsig = 1

    def hook() -> None:
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)

    return hook


def _start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (guards against pid reuse)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 2 (comm) may contain spaces; the fields after its closing parenthesis do not.
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[19])


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a running (not zombie) process; reaps it if it is our own child."""
    with suppress(ChildProcessError, OSError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state not in ("Z", "X")


def _terminate(pid: int, timeout: float) -> bool:
    """SIGTERM ``pid``, then SIGKILL its process group after ``timeout`` s; True if it had to."""
    with suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            break
        time.sleep(0.02)
    killed = _alive(pid)
    # The server leads its own session, so its group also holds helpers it spawned (Triton's
    # backend stubs); kill whatever is left of it.
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    return killed


class ManagedProcess:
    """One child process: started with a log file, checked for readiness, stopped gracefully.

    ``ready`` is called every ``poll_interval`` seconds after the start until it returns True;
    an exception from it counts as "not yet". ``stdin_data`` is written to the child's stdin
    and closed, which keeps secrets (redis' ``requirepass``) out of the process table.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str | os.PathLike[str]],
        ready: Callable[[], bool],
        *,
        log_path: Path | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        stdin_data: bytes | None = None,
        start_timeout: float = 30.0,
        stop_timeout: float = 10.0,
        poll_interval: float = 0.05,
    ) -> None:
        self.name = name
        self.argv = [os.fspath(a) for a in argv]
        self.ready = ready
        self.log_path = log_path or default_log_path(name)
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.stdin_data = stdin_data
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.poll_interval = poll_interval
        self.startup_seconds: float | None = None
        self._popen: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen is not None else None

    @property
    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        """The last lines this run wrote to its log."""
        return read_log_tail(self.log_path, lines, self._log_offset)

    def start(self, *, detached: bool = False) -> Self:
        """Start the command and block until it is ready.

        ``detached`` children outlive this process (no parent-death signal); the caller
        records their pid. Raises :class:`ServerStartError` if the child exits or is not ready
        within ``start_timeout`` seconds; the child is stopped before the error is raised.
        """
        if self.running:
            raise ServerError(f"{self.name} is already running (pid {self.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        with self.log_path.open("ab") as log:
            log.write(f"--- {_now()} starting {self.name}: {self.argv[0]}\n".encode())
            log.flush()
            self._log_offset = log.tell()
            try:
                self._popen = subprocess.Popen(
                    self.argv,
                    stdin=subprocess.PIPE if self.stdin_data is not None else subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=self.env,
                    cwd=self.cwd,
                    start_new_session=True,
                    preexec_fn=None if detached else _parent_death_signal(),
                )
            except OSError as exc:
                raise ServerStartError(f"cannot start {self.name} ({self.argv[0]}): {exc}") from exc
        if self.stdin_data is not None and self._popen.stdin is not None:
            with suppress(BrokenPipeError):
                self._popen.stdin.write(self.stdin_data)
            self._popen.stdin.close()
        self._wait_ready(started)
        self.startup_seconds = time.monotonic() - started
        return self

    def _wait_ready(self, started: float) -> None:
        assert self._popen is not None
        deadline = started + self.start_timeout
        while True:
            code = self._popen.poll()
            if code is not None:
                raise ServerStartError(
                    f"{self.name} exited with code {code} before it was ready "
                    f"(log: {self.log_path}):\n{self.log_tail()}"
                )
            ready = False
            with suppress(Exception):  # a probe that fails means "not ready yet"
                ready = self.ready()
            if ready:
                return
            if time.monotonic() >= deadline:
                self.stop()
                raise ServerStartError(
                    f"{self.name} was not ready after {self.start_timeout:.0f} s "
                    f"(log: {self.log_path}):\n{self.log_tail()}"
                )
            time.sleep(self.poll_interval)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after ``stop_timeout`` seconds. Safe to call twice."""
        if self._popen is None:
            return
        if self._popen.poll() is None:
            _terminate(self._popen.pid, self.stop_timeout)
        with suppress(subprocess.TimeoutExpired):
            self._popen.wait(timeout=1.0)

    def detach(self) -> int:
        """Forget the child without stopping it (it was started ``detached``); its pid."""
        if self._popen is None:
            raise ServerError(f"{self.name} was not started")
        pid = self._popen.pid
        # Mark the Popen as finished so its finaliser neither waits nor warns.
        self._popen.returncode = 0
        self._popen = None
        return pid

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class ServerState:
    """What a detached server's JSON state file records.

    ``command`` is the full argv: servers pass secrets on stdin, never as arguments.
    """

    name: str
    pid: int
    endpoints: dict[str, Any]
    log_path: str
    started_at: str
    start_ticks: int | None = None
    command: list[str] = field(default_factory=list)

    def describe(self, verb: str = "running") -> str:
        """One line for humans: ``redis: running, pid 123, port=6379, log var/logs/redis.log``."""
        where = "".join(f", {k}={v}" for k, v in self.endpoints.items())
        return f"{self.name}: {verb}, pid {self.pid}{where}, log {self.log_path}"


@dataclass(frozen=True)
class UpResult:
    """What :meth:`LocalServer.up` did: the running server, and whether this call started it."""

    state: ServerState
    started: bool

    def describe(self) -> str:
        return self.state.describe("started" if self.started else "already running")


class RunDirectory:
    """Pidfiles and state files of detached servers: ``<path>/<name>.pid`` and ``<name>.json``.

    Any process can ask for the ``status`` of a server or ``stop`` it by name. A pidfile whose
    process is gone (or whose pid was reused) is stale and is removed when found.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def default(cls, var_dir: Path | None = None) -> RunDirectory:
        """``<var_dir>/run``, with the project's ``var/`` by default."""
        return cls((var_dir or DEFAULT_VAR_DIR) / "run")

    def pidfile(self, name: str) -> Path:
        return self.path / f"{name}.pid"

    def statefile(self, name: str) -> Path:
        return self.path / f"{name}.json"

    @contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """Serialise ``up``/``down`` of one server across processes."""
        self.path.mkdir(parents=True, exist_ok=True)
        with (self.path / f"{name}.lock").open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def status(self, name: str) -> ServerState | None:
        """The recorded state if the server is running, else None (stale files are removed)."""
        try:
            pid = int(self.pidfile(name).read_text().strip())
        except (OSError, ValueError):
            self._forget(name)
            return None
        try:
            raw = json.loads(self.statefile(name).read_text())
            state = ServerState(**raw)
        except (OSError, ValueError, TypeError):
            state = ServerState(name, pid, {}, "", "")
        alive = _alive(pid)
        same = state.start_ticks is None or state.start_ticks == _start_ticks(pid)
        if state.pid != pid or not alive or not same:
            self._forget(name)
            return None
        return state

    def running(self) -> list[ServerState]:
        """All servers recorded here that are still running."""
        if not self.path.is_dir():
            return []
        states = (self.status(p.stem) for p in sorted(self.path.glob("*.pid")))
        return [s for s in states if s is not None]

    def record(self, process: ManagedProcess, endpoints: Mapping[str, Any]) -> ServerState:
        """Write the state of a freshly started detached ``process`` and forget its handle."""
        pid = process.detach()
        state = ServerState(
            name=process.name,
            pid=pid,
            endpoints=dict(endpoints),
            log_path=str(process.log_path),
            started_at=_now(),
            start_ticks=_start_ticks(pid),
            command=process.argv,
        )
        self.path.mkdir(parents=True, exist_ok=True)
        _write_atomic(self.statefile(process.name), json.dumps(asdict(state), indent=2) + "\n")
        _write_atomic(self.pidfile(process.name), f"{pid}\n")
        return state

    def stop(self, name: str, timeout: float = 10.0) -> ServerState | None:
        """Stop a detached server; its last state, or None if it was not running."""
        with self.lock(name):
            state = self.status(name)
            if state is not None:
                _terminate(state.pid, timeout)
                self._forget(name)
            return state

    def _forget(self, name: str) -> None:
        for path in (self.pidfile(name), self.statefile(name)):
            path.unlink(missing_ok=True)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


class LocalServer(ABC):
    """Base of the thin per-server modules: a command, a readiness probe and its endpoints.

    Use it attached (``with Server(...) as s`` or ``start``/``stop``) or detached (``up``).
    """

    default_name: str = "server"
    host: str = LOCALHOST

    def __init__(
        self,
        *,
        name: str | None = None,
        log_path: Path | None = None,
        start_timeout: float = 30.0,
        stop_timeout: float = 10.0,
    ) -> None:
        self.name = name or self.default_name
        self.log_path = log_path or default_log_path(self.name)
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._process: ManagedProcess | None = None

    @abstractmethod
    def command(self) -> list[str]:
        """The argv that runs the server in the foreground."""

    @abstractmethod
    def is_ready(self) -> bool:
        """Whether the server answers its protocol (not just that the port is open)."""

    @abstractmethod
    def endpoints(self) -> dict[str, Any]:
        """Host, ports and URLs for clients; written to the state file, so no secrets."""

    @abstractmethod
    def ports(self) -> list[int]:
        """The TCP ports the server listens on (checked to be free before a start)."""

    def environment(self) -> dict[str, str] | None:
        """The child's environment (None: inherit this process's)."""
        return None

    def stdin_data(self) -> bytes | None:
        """Bytes written to the child's stdin at start (e.g. a config with a secret)."""
        return None

    def process(self) -> ManagedProcess:
        """A fresh, unstarted :class:`ManagedProcess` for this server."""
        return ManagedProcess(
            self.name,
            self.command(),
            self.is_ready,
            log_path=self.log_path,
            env=self.environment(),
            stdin_data=self.stdin_data(),
            start_timeout=self.start_timeout,
            stop_timeout=self.stop_timeout,
        )

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.running

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def startup_seconds(self) -> float | None:
        """How long the last attached start took until the server was ready."""
        return self._process.startup_seconds if self._process is not None else None

    def _check_ports_free(self) -> None:
        # Otherwise the readiness probe could be answered by whatever already holds the port
        # while our server fails to bind it.
        taken = [port for port in self.ports() if port_open(self.host, port)]
        if taken:
            raise ServerError(
                f"cannot start {self.name}: {self.host} port(s) {taken} already in use "
                "(another instance? see `explore stack status`)"
            )

    def start(self) -> Self:
        """Start attached and wait until ready; the child dies with this process."""
        if self.running:
            raise ServerError(f"{self.name} is already running (pid {self.pid})")
        self._check_ports_free()
        self._process = self.process().start()
        return self

    def stop(self) -> None:
        """Stop an attached server (no-op if it is not running)."""
        if self._process is not None:
            self._process.stop()

    def up(self, run_dir: RunDirectory) -> UpResult:
        """Start detached unless ``run_dir`` says this server already runs (then do nothing)."""
        with run_dir.lock(self.name):
            existing = run_dir.status(self.name)
            if existing is not None:
                return UpResult(existing, started=False)
            self._check_ports_free()
            process = self.process().start(detached=True)
            return UpResult(run_dir.record(process, self.endpoints()), started=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
