"""`explore stack up|status|down` and `explore produce` against real, detached servers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import streams.runner as runner_module
from plugin.adapters.kafka_io import read_topic
from plugin.cli.app import app
from plugin.jobs import prerequisites
from plugin.localstack import free_port
from plugin.settings import Settings, load_settings

pytestmark = pytest.mark.integration


def test_stack_up_produce_status_down(tmp_path: Path) -> None:
    runner = CliRunner()
    kafka_port, redis_port = free_port(), free_port()
    env = {
        "EXPLORE_VAR_DIR": str(tmp_path / "var"),
        "EXPLORE_FEAST__REGISTRY_PATH": str(tmp_path / "registry.db"),
        "EXPLORE_KAFKA__PARTITIONS": "3",
    }
    up = ["stack", "up", "--no-triton", "--kafka-port", str(kafka_port)]
    try:
        result = runner.invoke(app, [*up, "--redis-port", str(redis_port)], env=env)
        assert result.exit_code == 0, result.output
        assert "watch-events (3), watch-events-dead-letter (1), exploration-plans (1)" in (
            result.output
        )
        exports = (tmp_path / "var" / "run" / "stack.env").read_text()
        assert f"EXPLORE_KAFKA__BOOTSTRAP_SERVERS=127.0.0.1:{kafka_port}" in exports
        serving = tmp_path / "var" / "run" / "feature_store.yaml"
        assert f"127.0.0.1:{redis_port}" in serving.read_text()
        assert serving.stat().st_mode & 0o077 == 0

        # A second `up` finds everything running and changes nothing.
        again = runner.invoke(app, [*up, "--redis-port", str(redis_port)], env=env)
        assert again.exit_code == 0 and "already running" in again.output

        stack_env = {
            **env,
            "EXPLORE_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{kafka_port}",
            "EXPLORE_REDIS__PORT": str(redis_port),
        }
        report = tmp_path / "produce.json"
        produced = runner.invoke(
            app, ["produce", "--limit", "120", "-q", "--json", str(report)], env=stack_env
        )
        assert produced.exit_code == 0, produced.output
        assert sum(json.loads(report.read_text())["end_offsets"].values()) == 120
        settings = load_settings(kafka={"bootstrap_servers": f"127.0.0.1:{kafka_port}"})
        records = read_topic(settings, "watch-events", idle_s=0.5)
        assert len(records) == 120
        # Keyed by user: each user's events sit in one partition.
        partitions: dict[bytes | None, set[int]] = {}
        for record in records:
            partitions.setdefault(record.key, set()).add(record.partition)
        assert all(len(found) == 1 for found in partitions.values())

        status = runner.invoke(app, ["stack", "status"], env=stack_env)
        assert "tansu: running" in status.output and "redis: running" in status.output
        assert "p0=0" in status.output  # no worker has committed anything
    finally:
        down = runner.invoke(app, ["stack", "down"], env=env)
    assert down.exit_code == 0
    assert "tansu: stopped" in down.output and "redis: stopped" in down.output
    after = runner.invoke(app, ["stack", "status"], env=env)
    assert "tansu: not running" in after.output


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        ([], {}, "triton"),  # the README's deployment: plans come from Triton
        (["--planner", "best-of-n"], {}, "best-of-n"),
        ([], {"EXPLORE_PLANNER__KIND": "frequency"}, "frequency"),
    ],
)
def test_explore_worker_plans_on_triton_unless_told_otherwise(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    args: list[str],
    env: dict[str, str],
    expected: str,
) -> None:
    seen: list[Settings] = []
    monkeypatch.delenv("EXPLORE_PLANNER__KIND", raising=False)
    monkeypatch.setattr(prerequisites, "require_worker_stack", lambda config: None)
    monkeypatch.setattr(runner_module, "run_worker", seen.append)
    result = CliRunner().invoke(
        app, ["worker", *args], env={"EXPLORE_VAR_DIR": str(tmp_path / "var"), **env}
    )
    assert result.exit_code == 0, result.output
    [config] = seen
    assert config.planner.kind == expected
    assert config.feast.online_store == "redis"
