"""Shared fixtures: a settings tree under a tmp dir, and real servers started once per session.

The servers (redis-server, tansu, tritonserver) run attached to the test process on free
127.0.0.1 ports with their logs under pytest's tmp dir, and are stopped at session end.
Missing binaries fail with the make target to run (`make system-deps`, `make triton`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from plugin.adapters.kafka_io import quiet_kafka
from plugin.core.catalog import ClusterCatalog
from plugin.core.events import WatchEvent
from plugin.localstack import KafkaBroker, RedisCluster, RedisServer, TritonServer
from plugin.models.planner import BestOfNPlanner
from plugin.settings import Settings, load_settings
from tests.support.streaming import make_planner, ten_clusters, watch

# kafka-python warns ~200 times at import, half of it from importlib's own module, which
# pytest's module-based filters cannot catch; import it once here, quietly.
with quiet_kafka():
    import kafka  # noqa: F401

# The tests' own small training loops on one torch thread, as the product's trainers run
# (plugin.models.threads.single_threaded): the suite shares 2 CPUs with its servers, and two
# threads waiting at each op's barrier made a 60-step loop take 39-67 s instead of about 2 s.
torch.set_num_threads(1)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """The default settings tree with ``var_dir`` in this test's tmp dir."""
    return load_settings(var_dir=tmp_path / "var")


@pytest.fixture
def feedback_settings(tmp_path: Path) -> Settings:
    return load_settings(
        var_dir=tmp_path / "var",
        sequence={"history_length": 2, "novelty_window": 4},
        planner={"candidates": 4},
        worker={"metrics_port": 0, "plan_timeout_s": 5.0},
        feedback={"fresh": False},
    )


@pytest.fixture
def event() -> Callable[..., WatchEvent]:
    """``event(n, cluster, user="u1")``: a positive watch of cluster c at minute n."""
    return watch


@pytest.fixture
def planner_factory() -> Callable[..., BestOfNPlanner]:
    return make_planner


@pytest.fixture
def catalog() -> ClusterCatalog:
    """Ten clusters: item ``i<c>`` lives in cluster c (:mod:`tests.support.streaming`)."""
    return ten_clusters()


@pytest.fixture
def best_of_n() -> BestOfNPlanner:
    """An untrained but deterministic best-of-n planner over the ten clusters."""
    return make_planner()


@pytest.fixture(scope="session")
def server_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the session's servers write their logs."""
    return tmp_path_factory.mktemp("server-logs")


@pytest.fixture(scope="session")
def redis_server(server_logs: Path) -> Iterator[RedisServer]:
    """A redis-server for the whole session (``.host``, ``.port``, ``.client()``)."""
    with RedisServer(log_path=server_logs / "redis.log") as server:
        yield server


@pytest.fixture(scope="session")
def redis_cluster(server_logs: Path) -> Iterator[RedisCluster]:
    """A three-node Redis Cluster (masters only) for the whole session (about 2 s to form)."""
    with RedisCluster(3, log_dir=server_logs) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def kafka_broker(server_logs: Path) -> Iterator[KafkaBroker]:
    """A tansu broker for the whole session (``.bootstrap_servers``, ``.create_topics``).

    Topics live for the whole session: give each test its own topic names.
    """
    with KafkaBroker(log_path=server_logs / "tansu.log") as broker:
        yield broker


class TritonFactory:
    """Starts ``TritonServer``s on request; each is stopped by whoever asked for it (see the
    two fixtures below), and any left at session end."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.servers: list[TritonServer] = []

    def __call__(self, model_repository: Path, **kwargs: Any) -> TritonServer:
        """A started server over ``model_repository``; ``kwargs`` go to :class:`TritonServer`."""
        kwargs.setdefault("name", f"triton-{len(self.servers) + 1}")
        kwargs.setdefault("log_path", self.log_dir / f"{kwargs['name']}.log")
        server = TritonServer(model_repository, **kwargs)
        self.servers.append(server)
        return server.start()

    def stop_from(self, first: int) -> None:
        """Stop the servers started since ``first`` servers had been."""
        started, self.servers = self.servers[first:], self.servers[:first]
        for server in started:
            server.stop()


@pytest.fixture(scope="session")
def triton_servers(server_logs: Path) -> Iterator[TritonFactory]:
    """The session's factory, for module fixtures that share a Triton (they stop it)."""
    factory = TritonFactory(server_logs)
    try:
        yield factory
    finally:
        factory.stop_from(0)


@pytest.fixture
def triton_server_factory(triton_servers: TritonFactory) -> Iterator[TritonFactory]:
    """Call it with a model repository to get a running Triton; stopped when the test ends.
    A Triton holds about 1.3 GB (three Python stubs of about 420 MB each; idle, it uses 0.3%
    of a core), and the suite starts ten: all were held to its end before."""
    first = len(triton_servers.servers)
    yield triton_servers
    triton_servers.stop_from(first)
