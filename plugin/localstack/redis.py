"""A local ``redis-server`` (Feast's online store and the plan cache in the local stack)."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import redis
from pydantic import SecretStr
from redis.backoff import NoBackoff
from redis.retry import Retry

from plugin.localstack.process import (
    LocalServer,
    RunDirectory,
    ServerError,
    UpResult,
    free_port,
    port_open,
)
from plugin.security import ServerTLS


def redis_server_binary() -> str:
    """The ``redis-server`` on PATH, or a :class:`ServerError` that says how to install it."""
    found = shutil.which("redis-server")
    if found is None:
        raise ServerError("redis-server is not on PATH; run `make system-deps` (apt-get)")
    return found


# The files a durable redis-server keeps in its ``--dir``: the append-only file's folder (Redis 7
# writes a base and incremental files there plus a manifest) and any RDB snapshot
# (``SHUTDOWN SAVE``, ``BGSAVE``).
AOF_DIRNAME = "appendonlydir"
RDB_FILENAME = "dump.rdb"


def remove_redis_files(data_dir: Path) -> list[Path]:
    """Delete what a durable redis-server keeps in ``data_dir`` (its AOF folder, ``dump.rdb``
    and the temporary files of a rewrite in progress); the paths deleted. Only for a server
    that is stopped: a running one would write them again."""
    if not data_dir.is_dir():
        return []
    doomed = [data_dir / AOF_DIRNAME, data_dir / RDB_FILENAME]
    # Left behind by a rewrite or save that was killed half-way (``temp-<pid>.rdb`` and so on).
    doomed += sorted(data_dir.glob("temp-*.rdb")) + sorted(data_dir.glob("temp-*.aof"))
    removed = []
    for path in doomed:
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        else:
            continue
        removed.append(path)
    return removed


class RedisServer(LocalServer):
    """``redis-server`` on 127.0.0.1, durable in ``data_dir`` or without persistence.

    With a ``data_dir`` the server keeps an append-only file there (``appendonly yes``,
    ``appendfsync everysec``: at most about a second of writes lost on a crash) and reloads it
    at the next start; that is the local stack's store. Without one it persists nothing and
    starts empty (the tests' and private stacks' servers): its ``--dir`` is then a private
    temporary folder, so that even a ``SHUTDOWN SAVE`` writes nowhere near the shell's current
    directory and no old ``dump.rdb`` is ever loaded. The folder is removed when an attached
    server stops.

    A ``password`` is passed to the server on stdin (``redis-server -``), so it appears
    neither in the process table nor in the log or the state file. With ``tls`` the server
    listens on ``port`` with TLS only (its plaintext port is off).
    """

    default_name = "redis"

    def __init__(
        self,
        port: int | None = None,
        password: SecretStr | None = None,
        *,
        tls: ServerTLS | None = None,
        data_dir: Path | None = None,
        name: str | None = None,
        log_path: Path | None = None,
        start_timeout: float = 10.0,
        stop_timeout: float = 5.0,
    ) -> None:
        super().__init__(
            name=name, log_path=log_path, start_timeout=start_timeout, stop_timeout=stop_timeout
        )
        self.port = port or free_port(self.host)
        self.password = password
        self.tls = tls
        # Not ``self.data_dir``: subclasses in the fault tests use that name for their own
        # snapshot folder, passed as flags after these.
        self.durable_dir = data_dir
        self._scratch_dir: Path | None = None

    @property
    def durable(self) -> bool:
        """Whether the server keeps its data (an append-only file in ``data_dir``)."""
        return self.durable_dir is not None

    def _working_dir(self) -> Path:
        if self.durable_dir is not None:
            self.durable_dir.mkdir(parents=True, exist_ok=True)
            return self.durable_dir.resolve()
        if self._scratch_dir is None:
            self._scratch_dir = Path(tempfile.mkdtemp(prefix=f"{self.name}-"))
        return self._scratch_dir

    def persistence(self) -> list[str]:
        """The flags that say where and whether the server keeps its data."""
        where = ["--dir", str(self._working_dir()), "--dbfilename", RDB_FILENAME]
        if self.durable_dir is None:
            return [*where, "--save", "", "--appendonly", "no"]
        return [
            *where,
            # The append-only file is the durability; no periodic snapshots besides it.
            "--save", "",
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--appenddirname", AOF_DIRNAME,
            # A torn last write after a crash is cut off at load rather than refusing to start.
            "--aof-load-truncated", "yes",
        ]  # fmt: skip

    def command(self) -> list[str]:
        if self.tls is None:
            listen = ["--port", str(self.port)]
        else:
            listen = [
                "--port", "0",
                "--tls-port", str(self.port),
                "--tls-cert-file", str(self.tls.certfile),
                "--tls-key-file", str(self.tls.keyfile),
                "--tls-auth-clients", "yes" if self.tls.require_client_cert else "no",
            ]  # fmt: skip
            if self.tls.ca_certs is not None:
                listen += ["--tls-ca-cert-file", str(self.tls.ca_certs)]
        return [
            redis_server_binary(),
            "-",  # read config from stdin first; the flags below are applied after it
            *listen,
            "--bind", self.host,
            *self.persistence(),
            "--daemonize", "no",
        ]  # fmt: skip

    def stop(self) -> None:
        """Stop an attached server; a non-durable one's scratch folder goes with it."""
        super().stop()
        if self._scratch_dir is not None and not self.running:
            shutil.rmtree(self._scratch_dir, ignore_errors=True)
            self._scratch_dir = None

    def up(self, run_dir: RunDirectory) -> UpResult:
        """Start detached (see :meth:`LocalServer.up`). A non-durable server's scratch folder
        is then ``<run_dir>/<name>.scratch``, emptied before a start, rather than a temporary
        folder that nothing would remove."""
        fresh = self.durable_dir is None and self._scratch_dir is None
        if fresh and run_dir.status(self.name) is None:
            scratch = run_dir.path / f"{self.name}.scratch"
            # Emptied: an old run's dump.rdb there would be loaded into this "empty" server.
            shutil.rmtree(scratch, ignore_errors=True)
            scratch.mkdir(parents=True)
            self._scratch_dir = scratch
        return super().up(run_dir)

    def stdin_data(self) -> bytes:
        if self.password is None:
            return b""
        # Hex escapes inside a quoted config string carry any byte, quotes and newlines included.
        escaped = "".join(f"\\x{byte:02x}" for byte in self.password.get_secret_value().encode())
        return f'requirepass "{escaped}"\n'.encode()

    def client(self, **kwargs: Any) -> redis.Redis:
        """A redis-py client for this server (``kwargs`` go to :class:`redis.Redis`)."""
        password = self.password.get_secret_value() if self.password is not None else None
        if self.tls is not None:
            # The server's own files make a trusted client (a client certificate where the
            # server asks for one): the readiness probe and tests need no other material.
            kwargs.setdefault("ssl", True)
            kwargs.setdefault("ssl_ca_certs", str(self.tls.ca_certs or self.tls.certfile))
            if self.tls.require_client_cert:
                kwargs.setdefault("ssl_certfile", str(self.tls.certfile))
                kwargs.setdefault("ssl_keyfile", str(self.tls.keyfile))
        return redis.Redis(host=self.host, port=self.port, password=password, **kwargs)

    def is_ready(self) -> bool:
        # No retries: redis-py's default backoff would stretch one failed probe to seconds.
        probe = self.client(
            socket_connect_timeout=0.5, socket_timeout=0.5, retry=Retry(NoBackoff(), 0)
        )
        with probe as client:
            return bool(client.ping())

    def ports(self) -> list[int]:
        return [self.port]

    def endpoints(self) -> dict[str, Any]:
        found: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "auth": self.password is not None,
        }
        if self.tls is not None:
            found["tls"] = True
        if self.durable_dir is not None:
            found["aof"] = str(self._working_dir() / AOF_DIRNAME)
        return found

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT``, ``rediss://`` with TLS (without the password)."""
        scheme = "redis" if self.tls is None else "rediss"
        return f"{scheme}://{self.host}:{self.port}"


# Redis Cluster: a node also listens on its port + 10000 (the cluster bus).
CLUSTER_BUS_OFFSET = 10000
CLUSTER_SLOTS = 16384


def free_cluster_port(host: str = "127.0.0.1", attempts: int = 50) -> int:
    """A port that is free, as is its cluster bus port (port + 10000)."""
    for _ in range(attempts):
        port = free_port(host)
        if port + CLUSTER_BUS_OFFSET < 65536 and not port_open(host, port + CLUSTER_BUS_OFFSET):
            return port
    raise ServerError(f"no free port pair (port, port + {CLUSTER_BUS_OFFSET}) on {host}")


class RedisClusterNode(RedisServer):
    """One ``redis-server --cluster-enabled yes`` without persistence; its ``nodes.conf``
    lives in the node's private scratch folder, so a restart never rejoins an old cluster."""

    default_name = "redis-cluster-node"

    def __init__(self, port: int | None = None, **kwargs: Any) -> None:
        super().__init__(port or free_cluster_port(), **kwargs)

    def command(self) -> list[str]:
        return [
            *super().command(),
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            # Short: a test cluster on one machine; failures should show up fast.
            "--cluster-node-timeout", "2000",
        ]  # fmt: skip

    def ports(self) -> list[int]:
        return [self.port, self.port + CLUSTER_BUS_OFFSET]


class RedisCluster:
    """A Redis Cluster of ``size`` masters on 127.0.0.1, no replicas, started attached.

    The nodes are joined with ``CLUSTER MEET`` and the 16384 slots are split into ``size``
    contiguous ranges (``CLUSTER ADDSLOTSRANGE``), which is what ``redis-cli --cluster create``
    does without replicas; :meth:`start` returns when every node reports ``cluster_state:ok``.
    Use it as a context manager; :meth:`stop` stops every node.
    """

    host = "127.0.0.1"

    def __init__(
        self,
        size: int = 3,
        *,
        name: str = "redis-cluster",
        log_dir: Path | None = None,
        start_timeout: float = 20.0,
    ) -> None:
        if size < 1:
            raise ValueError("a Redis Cluster needs at least one node")
        self.name = name
        self.start_timeout = start_timeout
        self.nodes = [
            RedisClusterNode(
                name=f"{name}-{index}",
                log_path=(log_dir / f"{name}-{index}.log") if log_dir else None,
            )
            for index in range(size)
        ]

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    @property
    def startup_nodes(self) -> str:
        """``host:port,host:port,...``: the node list of Feast's cluster connection string."""
        return ",".join(f"{self.host}:{port}" for port in self.ports)

    def start(self) -> RedisCluster:
        """Start the nodes, join them, assign the slots and wait for ``cluster_state:ok``."""
        try:
            for node in self.nodes:
                node.start()
            self._form()
        except BaseException:
            self.stop()
            raise
        return self

    def _form(self) -> None:
        first = self.nodes[0].client()
        for node in self.nodes[1:]:
            first.execute_command("CLUSTER", "MEET", self.host, node.port)
        share = CLUSTER_SLOTS // len(self.nodes)
        for index, node in enumerate(self.nodes):
            low = index * share
            high = CLUSTER_SLOTS - 1 if index == len(self.nodes) - 1 else low + share - 1
            node.client().execute_command("CLUSTER", "ADDSLOTSRANGE", low, high)
        deadline = time.monotonic() + self.start_timeout
        while not self.healthy():
            if time.monotonic() > deadline:
                raise ServerError(
                    f"{self.name}: the cluster did not reach cluster_state:ok within "
                    f"{self.start_timeout:.0f} s (node logs: {self.nodes[0].log_path.parent})"
                )
            time.sleep(0.05)

    def healthy(self) -> bool:
        """Whether every node says the cluster is ok and knows every other node."""
        for node in self.nodes:
            info = node.client().execute_command("CLUSTER", "INFO")
            text = info.decode() if isinstance(info, bytes) else str(info)
            fields = dict(line.split(":", 1) for line in text.split() if ":" in line)
            if fields.get("cluster_state") != "ok":
                return False
            if int(fields.get("cluster_known_nodes", 0)) != len(self.nodes):
                return False
        return True

    def client(self, **kwargs: Any) -> redis.RedisCluster:
        """A redis-py cluster client (``kwargs`` go to :class:`redis.RedisCluster`)."""
        return redis.RedisCluster(host=self.host, port=self.nodes[0].port, **kwargs)

    def stop(self) -> None:
        """Stop every node that runs (their scratch folders go with them)."""
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> RedisCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
