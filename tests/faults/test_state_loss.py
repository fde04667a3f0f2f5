"""Redis loses its data under a running worker; the worker notices, and `explore rebuild`
restores every user's state.

Redis runs without persistence (``--save "" --appendonly no``) and is SIGKILLed mid-stream,
then restarted empty on the same port, while more events arrive. The worker must find the
generation marker gone before it writes anything on the empty store, log one line naming
what happened and exit with status 65; a restarted worker must refuse too (its group has
committed offsets). ``explore rebuild`` then replays the retained topic, and a worker started
afterwards finishes the stream: every user's sequence and plan equal the embedded replay's,
including users who sent nothing after the loss, and ``cluster_items`` is back.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from plugin.adapters.feast_store import FeastStore
from plugin.adapters.kafka_io import committed_offsets, event_messages, produce, wait_for_commits
from plugin.cli.app import app
from plugin.localstack import KafkaBroker, RedisServer
from plugin.localstack.worker import WorkerProcess
from plugin.settings import settings_environment
from plugin.streaming.generation import EXIT_STATE_LOST
from tests.support.workbench import (
    Workbench,
    assert_matches,
    differences,
    final_state,
    reference_state,
    stack_settings,
    wait_until,
)

pytestmark = pytest.mark.integration

LOST = "online state lost"


def exit_status(worker: WorkerProcess, timeout_s: float) -> int:
    assert worker.process is not None
    return worker.process.wait(timeout=timeout_s)


def test_a_redis_that_lost_its_data_stops_the_worker_and_rebuild_restores_every_user(
    fault_bench: Workbench, kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    bench = fault_bench
    before, after = bench.events[:800], bench.events[800:]
    quiet_after = {e.user_id for e in before} - {e.user_id for e in after}
    assert quiet_after, "some users must send nothing after the loss"
    server = RedisServer(log_path=tmp_path / "redis.log").start()
    port = server.port
    settings = stack_settings(
        bench,
        kafka_broker.bootstrap_servers,
        port,
        tmp_path,
        # Retries outlast the restart, so what stops the worker is the loss, not the outage.
        worker={"batch_size": 100, "process_retries": 20, "retry_backoff_s": 0.1},
    )
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        worker.wait_assigned(timeout_s=120)
        produced = produce(settings, event_messages(before))
        wait_for_commits(settings, produced.end_offsets, timeout_s=90, alive=lambda: worker.alive)
        assert FeastStore(settings).read_sequences(bench.users), "nothing written before the loss"

        # The loss: SIGKILL, no persistence, an empty server on the same port; more events.
        assert server.pid is not None
        os.kill(server.pid, signal.SIGKILL)
        wait_until(lambda: not server.running, 10, "redis-server died")
        server = RedisServer(port=port, log_path=tmp_path / "redis-2.log").start()
        lost_at = time.monotonic()
        produced = produce(settings, event_messages(after))
        status = exit_status(worker, timeout_s=60)
        detected_s = time.monotonic() - lost_at
        log = worker.log_path.read_text(errors="replace")
        assert status == EXIT_STATE_LOST, worker.log_tail()
        assert log.count(LOST) == 1, worker.log_tail()
        assert "Traceback" not in log
        # Nothing written on the empty store, and the events after the loss not committed.
        assert FeastStore(settings).read_sequences(bench.users) == {}
        committed = committed_offsets(settings)
        assert sum(committed.values()) <= len(before)
        print(f"\nloss detected {detected_s:.1f} s after Redis came back empty")

        # A supervisor's restart refuses as well: the group has committed offsets.
        again = WorkerProcess(settings, tmp_path / "worker-again.log").start()
        assert exit_status(again, timeout_s=120) == EXIT_STATE_LOST, again.log_tail()
        assert "explore rebuild" in again.log_path.read_text(errors="replace")

        # The recovery.
        result = CliRunner().invoke(
            app, ["rebuild", "--quiet", "--json", str(tmp_path / "rebuild.json")],
            env=settings_environment(settings),
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        print(result.output.strip())
        rebuilt = final_state(settings, bench.users)
        expected = reference_state(bench, tmp_path / "reference", bench.events)
        assert_matches(rebuilt, expected)  # every user, before any worker ran again

        # Workers resume: the uncommitted events come again and are no-ops.
        resumed = WorkerProcess(settings, tmp_path / "worker-resumed.log").start()
        wait_for_commits(settings, produced.end_offsets, timeout_s=120, alive=lambda: resumed.alive)
        assert resumed.stop() == 0, resumed.log_tail()
        stats = resumed.stats()
        actual = final_state(settings, bench.users)
        clusters = FeastStore(settings).read_clusters([0, 1])
    finally:
        worker.kill()
        server.stop()

    assert stats["events"] == stats["stale_events"], "a re-delivered event changed a state"
    assert not differences(actual, expected)
    quiet = {u: s for u, s in actual[0].items() if u in quiet_after}
    assert len(quiet) == len(quiet_after)
    assert all(row["top_items"] for row in clusters), "cluster_items not rewritten"


def test_rebuild_on_the_sqlite_profile_says_what_to_run_instead(tmp_path: Path) -> None:
    env = {"EXPLORE_FEAST__ONLINE_STORE": "sqlite", "EXPLORE_VAR_DIR": str(tmp_path)}
    result = CliRunner().invoke(app, ["rebuild", "--quiet"], env=env)
    assert result.exit_code != 0
    assert "explore replay" in result.output
