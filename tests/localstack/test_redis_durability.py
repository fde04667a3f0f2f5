"""The local stack's Redis is durable (an append-only file under ``var/``), ``--reset`` empties
it, nothing lands in the shell's directory, and a ``stack up`` that fails part-way leaves no
server behind."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from typer.testing import CliRunner

from plugin.cli.app import app
from plugin.localstack import RedisServer, RunDirectory, free_port
from plugin.localstack.redis import remove_redis_files

pytestmark = pytest.mark.integration

RUNNER = CliRunner()


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty current directory, as the shell a user types the commands in."""
    cwd = tmp_path / "shell"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd


def test_a_durable_server_keeps_its_data_across_a_stop_and_a_kill(
    tmp_path: Path, elsewhere: Path
) -> None:
    data = tmp_path / "var" / "run" / "redis"
    log = tmp_path / "redis.log"

    def server() -> RedisServer:
        return RedisServer(port=free_port(), data_dir=data, log_path=log)

    with server() as first:
        first.client().set("user:1", "stopped cleanly")
    assert (data / "appendonlydir").is_dir()
    with server() as second:
        client = second.client()
        assert client.get("user:1") == b"stopped cleanly"
        assert client.config_get("appendfsync") == {"appendfsync": "everysec"}
        client.set("user:2", "killed")
        time.sleep(1.5)  # appendfsync everysec: a write older than a second is on disk
        assert second.pid is not None
        os.kill(second.pid, signal.SIGKILL)
        second.stop()
    with server() as third:
        assert third.client().mget("user:1", "user:2") == [b"stopped cleanly", b"killed"]
    assert remove_redis_files(data) == [data / "appendonlydir"]
    with server() as emptied:
        assert emptied.client().dbsize() == 0
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize("durable", [True, False])
def test_shutdown_save_writes_nothing_in_the_current_directory(
    tmp_path: Path, elsewhere: Path, durable: bool
) -> None:
    """``SHUTDOWN SAVE`` used to drop ``dump.rdb`` wherever the shell was, and the next start
    loaded it. Non-durable servers (the tests') save into a scratch folder that goes with them."""
    data = tmp_path / "data" if durable else None
    with RedisServer(data_dir=data, log_path=tmp_path / "redis.log") as server:
        server.client().set("k", "v")
        with pytest.raises(redis.ConnectionError):
            server.client().execute_command("SHUTDOWN", "SAVE")
    assert list(elsewhere.iterdir()) == []
    if data is not None:
        assert (data / "dump.rdb").is_file()
    with RedisServer(data_dir=data, log_path=tmp_path / "redis.log") as again:
        assert again.client().get("k") == (b"v" if durable else None)


def _env(tmp_path: Path) -> dict[str, str]:
    return {
        "EXPLORE_VAR_DIR": str(tmp_path / "var"),
        "EXPLORE_FEAST__REGISTRY_PATH": str(tmp_path / "registry.db"),
        "EXPLORE_KAFKA__PARTITIONS": "1",
    }


@pytest.fixture
def stack_ports(tmp_path: Path) -> Iterator[tuple[int, int]]:
    """A tansu and a Redis port for one test's stack, brought down at the end."""
    yield free_port(), free_port()
    RUNNER.invoke(app, ["stack", "down"], env=_env(tmp_path))


def test_stack_down_and_up_keep_redis_state_until_reset(
    tmp_path: Path, elsewhere: Path, stack_ports: tuple[int, int]
) -> None:
    env = _env(tmp_path)
    kafka_port, redis_port = stack_ports
    up = ["stack", "up", "--no-triton", "--kafka-port", str(kafka_port)]
    up += ["--redis-port", str(redis_port)]
    client = redis.Redis(host="127.0.0.1", port=redis_port)

    def cycle(*down_args: str, up_args: tuple[str, ...] = ()) -> None:
        down = RUNNER.invoke(app, ["stack", "down", *down_args], env=env)
        assert down.exit_code == 0, down.output
        started = RUNNER.invoke(app, [*up, *up_args], env=env)
        assert started.exit_code == 0, started.output

    started = RUNNER.invoke(app, up, env=env)
    assert started.exit_code == 0, started.output
    client.set("probe", "kept")
    cycle()
    assert client.get("probe") == b"kept"  # Redis reloaded its append-only file
    assert (tmp_path / "var" / "run" / "redis" / "appendonlydir").is_dir()

    cycle("--reset")
    assert client.get("probe") is None

    client.set("probe", "again")
    cycle(up_args=("--reset",))
    assert client.get("probe") is None
    assert list(elsewhere.iterdir()) == []


def test_stack_up_that_fails_late_stops_what_it_started(
    tmp_path: Path, elsewhere: Path, stack_ports: tuple[int, int]
) -> None:
    env = _env(tmp_path)
    kafka_port, redis_port = stack_ports
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        up = ["stack", "up", "--kafka-port", str(kafka_port), "--redis-port", str(redis_port)]
        result = RUNNER.invoke(app, [*up, "--triton-http-port", str(taken)], env=env)
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert str(taken) in lines[0] and "triton" in lines[0]
    run_dir = RunDirectory(tmp_path / "var" / "run")
    assert {n: run_dir.status(n) for n in ("tansu", "redis", "triton")} == dict.fromkeys(
        ("tansu", "redis", "triton")
    )
    assert run_dir.running() == []
