"""The feedback loop's streaming half on the real components: the Faust worker (a child
process) over tansu and Feast on redis-server writes feedback to its topic, the Parquet log,
the online aggregates and the fresh-transition table, consistently."""

from __future__ import annotations

from itertools import islice
from pathlib import Path
from uuid import uuid4

import pytest

from plugin.adapters.feast_store import FeastStore
from plugin.adapters.kafka_io import (
    event_messages,
    produce,
    read_topic,
    topic_partitions,
    wait_for_commits,
)
from plugin.core.feedback import FeedbackRecord, aggregate
from plugin.data.workspace import open_workspace
from plugin.localstack import KafkaBroker, RedisServer, free_port
from plugin.localstack.worker import WorkerProcess
from plugin.settings import load_settings
from plugin.wiring import feedback_log

pytestmark = pytest.mark.integration

EVENTS = 3000
DB = 9


def test_the_worker_sends_logs_and_counts_each_answer_once(
    kafka_broker: KafkaBroker, redis_server: RedisServer, tmp_path: Path
) -> None:
    run = uuid4().hex[:8]
    redis_server.client(db=DB).flushdb()
    settings = load_settings(
        var_dir=tmp_path / "var",
        kafka={
            "bootstrap_servers": kafka_broker.bootstrap_servers,
            "events_topic": f"watch-events-{run}",
            "dead_letter_topic": f"dead-letters-{run}",
            "plans_topic": f"plans-{run}",
            "feedback_topic": f"feedback-{run}",
            "group_id": f"explorer-{run}",
            "partitions": 2,
            "session_timeout_s": 3.0,
        },
        redis={"host": redis_server.host, "port": redis_server.port, "db": DB},
        feast={"online_store": "redis", "registry_path": tmp_path / "registry.db"},
        planner={"kind": "frequency"},  # no trained models needed: feedback is about plans
        worker={
            "batch_size": 300,
            "metrics_port": free_port(),
            "stats_path": tmp_path / "worker-stats.json",
        },
        feedback={"fresh_key_prefix": f"fresh-{run}"},
    )
    kafka_broker.create_topics(topic_partitions(settings.kafka))
    workspace = open_workspace(settings)  # builds the catalog the worker then loads
    events = list(islice(workspace.dataset.events(), EVENTS))
    with WorkerProcess(settings, tmp_path / "worker.log") as worker:
        worker.wait_assigned(timeout_s=120)
        produced = produce(settings, event_messages(events))
        wait_for_commits(settings, produced.end_offsets, timeout_s=180, alive=lambda: worker.alive)
        assert worker.stop() == 0, worker.log_tail()
    stats = worker.stats()

    sent = [
        FeedbackRecord.model_validate_json(r.value)
        for r in read_topic(settings, settings.kafka.feedback_topic)
    ]
    assert sent, "plans were made and then answered"
    assert len({r.key for r in sent}) == len(sent)
    assert stats["feedback"]["records"] == len(sent)
    logged = feedback_log(settings).read()
    assert {r.key for r in logged} == {r.key for r in sent}
    assert all(r.catalog_version == workspace.catalog.version for r in logged)
    # The online view holds exactly the log's counts (one worker, no failures).
    exact = aggregate(logged)
    online = FeastStore(settings).read_feedback_aggregates(sorted(exact))
    assert {k: (v.answered, v.engaged_positive) for k, v in online.items()} == {
        k: (v.answered, v.engaged_positive) for k, v in exact.items()
    }
    # The fresh-transition table counted the positive novel moves.
    client = redis_server.client(db=DB)
    assert list(client.scan_iter(match=f"fresh-{run}:*", count=1000))
    assert stats["feedback"]["novel_moves"] > 0 and stats["feedback"]["fresh_errors"] == 0
