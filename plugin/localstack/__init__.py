"""Real local servers the project starts and stops: redis-server, tansu (Kafka) and Triton.

Attached (tests, the embedded demo)::

    with RedisServer() as redis, KafkaBroker() as kafka:
        kafka.create_topics({"watch-events": 4})

Detached (``explore stack up`` / ``down``)::

    run_dir = RunDirectory.default(settings.var_dir)
    print(RedisServer(port=6379).up(run_dir).describe())
    run_dir.stop("redis")
"""

from plugin.adapters.kafka_io import quiet_kafka
from plugin.localstack.process import (
    LocalServer,
    ManagedProcess,
    RunDirectory,
    ServerError,
    ServerStartError,
    ServerState,
    UpResult,
    default_log_path,
    free_port,
    port_open,
)
from plugin.localstack.redis import RedisCluster, RedisServer
from plugin.localstack.tansu import KafkaBroker, create_topics
from plugin.localstack.triton import TritonInstall, TritonServer

__all__ = [
    "KafkaBroker",
    "LocalServer",
    "ManagedProcess",
    "RedisCluster",
    "RedisServer",
    "RunDirectory",
    "ServerError",
    "ServerStartError",
    "ServerState",
    "TritonInstall",
    "TritonServer",
    "UpResult",
    "create_topics",
    "default_log_path",
    "free_port",
    "port_open",
    "quiet_kafka",
]
