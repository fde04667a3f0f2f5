"""The process supervisor and the real local servers: redis-server, tansu and tritonserver."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import uuid4

import numpy as np
import pytest
import redis
from pydantic import SecretStr
from redis.backoff import NoBackoff
from redis.retry import Retry

from plugin.adapters.kafka_io import list_topics, quiet_kafka, topic_partitions
from plugin.jobs.private_stack import private_stack
from plugin.localstack import (
    KafkaBroker,
    ManagedProcess,
    RedisServer,
    RunDirectory,
    ServerError,
    ServerStartError,
    TritonInstall,
    TritonServer,
    free_port,
    port_open,
)
from plugin.settings import PROJECT_ROOT, load_settings

TritonFactory = Callable[..., TritonServer]


# --- ManagedProcess and RunDirectory, with plain Python children ---------------------------


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


def test_free_port_is_bindable() -> None:
    port = free_port()
    assert 1024 <= port <= 65535
    assert not port_open("127.0.0.1", port)


def test_child_that_exits_early_reports_its_log_tail(tmp_path: Path) -> None:
    log = tmp_path / "boom.log"
    process = ManagedProcess(
        "boom",
        _python("print('no config found'); raise SystemExit(3)"),
        lambda: False,
        log_path=log,
    )
    with pytest.raises(ServerStartError, match="exited with code 3") as failure:
        process.start()
    assert "no config found" in str(failure.value)
    assert not process.running


def test_child_never_ready_times_out_and_is_stopped(tmp_path: Path) -> None:
    process = ManagedProcess(
        "sleepy",
        _python("import time; print('still starting', flush=True); time.sleep(60)"),
        lambda: False,
        log_path=tmp_path / "sleepy.log",
        start_timeout=0.5,
    )
    with pytest.raises(ServerStartError, match="not ready after") as failure:
        process.start()
    assert "still starting" in str(failure.value)
    assert not process.running


def test_stop_escalates_to_sigkill_when_sigterm_is_ignored(tmp_path: Path) -> None:
    log = tmp_path / "stubborn.log"
    code = """
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print('up', flush=True)
        time.sleep(60)
    """
    process = ManagedProcess(
        "stubborn", _python(code), lambda: "up" in log.read_text(), log_path=log, stop_timeout=0.3
    )
    with process:
        pid = process.pid
        assert pid is not None and process.running
    assert not process.running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_stale_pidfile_is_ignored_and_removed(tmp_path: Path) -> None:
    run_dir = RunDirectory(tmp_path / "run")
    gone = subprocess.Popen(["true"])
    gone.wait()
    run_dir.path.mkdir()
    run_dir.pidfile("ghost").write_text(f"{gone.pid}\n")
    run_dir.statefile("ghost").write_text(json.dumps({"name": "ghost"}))
    assert run_dir.status("ghost") is None
    assert run_dir.stop("ghost") is None
    assert not run_dir.pidfile("ghost").exists()
    assert not run_dir.statefile("ghost").exists()


def test_port_already_in_use_is_refused_before_starting() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        server = RedisServer(port=holder.getsockname()[1])
        with pytest.raises(ServerError, match="already in use"):
            server.start()
    assert server.pid is None


# --- redis-server -------------------------------------------------------------------------


@pytest.mark.integration
def test_redis_ping_set_get(redis_server: RedisServer) -> None:
    assert redis_server.host == "127.0.0.1"
    client = redis_server.client()
    assert client.ping() is True
    client.set("servers:greeting", "hello")
    assert client.get("servers:greeting") == b"hello"
    assert redis_server.startup_seconds is not None and redis_server.startup_seconds < 10


@pytest.mark.integration
def test_redis_password_is_required_and_never_shown(tmp_path: Path) -> None:
    secret = "s3cret-" + uuid4().hex
    log = tmp_path / "redis.log"
    with RedisServer(password=SecretStr(secret), log_path=log) as server:
        anonymous = redis.Redis(host=server.host, port=server.port, retry=Retry(NoBackoff(), 0))
        with pytest.raises(redis.AuthenticationError):
            anonymous.ping()
        assert server.client().ping() is True
        assert secret.encode() not in Path(f"/proc/{server.pid}/cmdline").read_bytes()
    assert secret not in log.read_text()


# --- tansu --------------------------------------------------------------------------------


@pytest.mark.integration
def test_tansu_creates_topic_and_round_trips_a_message(kafka_broker: KafkaBroker) -> None:
    topic = f"servers-{uuid4().hex[:8]}"
    assert kafka_broker.create_topics({topic: 3}) == [topic]
    assert kafka_broker.create_topics({topic: 3}) == []  # idempotent

    with quiet_kafka():
        from kafka import KafkaConsumer, KafkaProducer, TopicPartition

        producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap_servers)
        producer.send(topic, key=b"user-1", value=b"watched:42", partition=1).get(timeout=10)
        producer.close()

        # Assigned partitions, no group: a group join on tansu waits about session_timeout/2.
        consumer = KafkaConsumer(
            bootstrap_servers=kafka_broker.bootstrap_servers, enable_auto_commit=False
        )
        try:
            assert consumer.partitions_for_topic(topic) == {0, 1, 2}
            partition = TopicPartition(topic, 1)
            consumer.assign([partition])
            consumer.seek_to_beginning(partition)
            records: list[Any] = []
            deadline = time.monotonic() + 10
            while not records and time.monotonic() < deadline:
                records = consumer.poll(timeout_ms=500).get(partition, [])
        finally:
            consumer.close()
    assert [(r.key, r.value) for r in records] == [(b"user-1", b"watched:42")]


@pytest.mark.integration
def test_tansu_refuses_a_different_partition_count(kafka_broker: KafkaBroker) -> None:
    topic = f"servers-{uuid4().hex[:8]}"
    kafka_broker.create_topics({topic: 2})
    with pytest.raises(ServerError, match="exists with 2 partitions, not 4"):
        kafka_broker.create_topics({topic: 4})


# --- tritonserver -------------------------------------------------------------------------


def test_triton_not_unpacked_says_what_to_run(tmp_path: Path) -> None:
    server = TritonServer(tmp_path, install=TritonInstall(tmp_path / "missing"))
    with pytest.raises(ServerError, match="make triton"):
        server.start()


@pytest.mark.integration
def test_triton_starts_live_on_an_empty_repository(
    triton_server_factory: TritonFactory, tmp_path: Path
) -> None:
    repo = tmp_path / "models"
    repo.mkdir()
    server = triton_server_factory(repo)
    assert server.is_ready()
    with urllib.request.urlopen(f"http://{server.http_url}/v2", timeout=5) as response:
        metadata = json.load(response)
    assert metadata["version"] == "2.51.0"
    assert port_open(server.host, server.grpc_port)
    server.stop()
    assert not server.running
    assert not port_open(server.host, server.http_port)


DOUBLE_CONFIG = """
name: "double"
backend: "python"
max_batch_size: 0
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]
instance_group [ { kind: KIND_CPU count: 1 } ]
"""

# Tensors cross the stub boundary with DLPack: its numpy path returns empty outputs under
# numpy 2. (numpy arrays work but make the stub print a harmless capsule-name traceback.)
DOUBLE_MODEL = """
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = np.from_dlpack(pb_utils.get_input_tensor_by_name(request, "INPUT0"))
            y = np.ascontiguousarray(x * 2, dtype=np.float32)
            out = pb_utils.Tensor.from_dlpack("OUTPUT0", y)
            responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
        return responses
"""


@pytest.mark.integration
def test_triton_serves_a_python_backend_model(
    triton_server_factory: TritonFactory, tmp_path: Path
) -> None:
    import tritonclient.http as triton_http

    model_dir = tmp_path / "models" / "double"
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "config.pbtxt").write_text(DOUBLE_CONFIG)
    (model_dir / "1" / "model.py").write_text(DOUBLE_MODEL)

    server = triton_server_factory(model_dir.parent)
    assert not server.model_ready("double")  # explicit mode: nothing loads by itself
    client = triton_http.InferenceServerClient(server.http_url)
    try:
        client.load_model("double")
        assert server.model_ready("double")
        tensor = triton_http.InferInput("INPUT0", [3], "FP32")
        tensor.set_data_from_numpy(np.array([1.0, 2.0, 3.5], dtype=np.float32))
        result = client.infer("double", [tensor]).as_numpy("OUTPUT0")
    finally:
        client.close()
    np.testing.assert_array_equal(result, np.array([2.0, 4.0, 7.0], dtype=np.float32))


# --- detached servers ---------------------------------------------------------------------


def _up_in_another_process(run_dir: Path, port: int, log: Path) -> str:
    """`explore stack up` in miniature: start detached from a process that then exits."""
    code = f"""
        from pathlib import Path
        from plugin.localstack import RedisServer, RunDirectory
        server = RedisServer(port={port}, log_path=Path({str(log)!r}))
        print(server.up(RunDirectory(Path({str(run_dir)!r}))).describe())
    """
    done = subprocess.run(
        _python(code), capture_output=True, text=True, timeout=60, cwd=PROJECT_ROOT, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.integration
def test_detached_up_status_down_round_trip(tmp_path: Path) -> None:
    run_dir = RunDirectory(tmp_path / "run")
    port = free_port()
    log = tmp_path / "redis.log"

    assert _up_in_another_process(run_dir.path, port, log).startswith("redis: started, pid")
    state = run_dir.status("redis")
    try:
        assert state is not None
        assert state.endpoints == {"host": "127.0.0.1", "port": port, "auth": False}
        assert redis.Redis(host="127.0.0.1", port=port).ping() is True  # outlived its parent
        assert [s.name for s in run_dir.running()] == ["redis"]

        # A second `up` finds it and does nothing, whatever port it would have chosen.
        again = RedisServer(port=free_port(), log_path=log).up(run_dir)
        assert not again.started
        assert again.state.pid == state.pid
        assert "already running" in again.describe()
    finally:
        stopped = run_dir.stop("redis")
    assert stopped is not None and stopped.pid == state.pid
    assert run_dir.status("redis") is None
    assert run_dir.stop("redis") is None  # `down` twice says "not running"
    assert not run_dir.pidfile("redis").exists()
    assert not port_open("127.0.0.1", port)


# --- the private stack of `explore demo --stack` and the benchmarks ---------------------------


def test_private_stack_points_the_settings_at_its_own_servers(tmp_path: Path) -> None:
    settings = load_settings(var_dir=tmp_path / "var", redis={"password": "not-the-private-one"})
    with private_stack(settings, "check", triton=False) as stack:
        own = stack.settings
        assert stack.redis is not None and own.redis.port == stack.redis.port
        assert own.redis.password is None  # the private server has none
        assert redis.Redis(host=own.redis.host, port=own.redis.port).ping()
        assert own.kafka.bootstrap_servers != settings.kafka.bootstrap_servers
        assert list_topics(own) == topic_partitions(own.kafka)
        assert stack.version is None and stack.load is None
        assert set(stack.startup) == {"redis_s", "tansu_s"}
        assert (tmp_path / "var" / "logs" / "check-redis.log").exists()
        ports = [own.redis.port, int(own.kafka.bootstrap_servers.rpartition(":")[2])]
    assert not any(port_open("127.0.0.1", port) for port in ports)
