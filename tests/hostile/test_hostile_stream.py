"""The hostile corpus through the real path: tansu, the worker process, Feast on redis-server.

A slice of MovieLens goes in first; then every case of the corpus, aimed at a user who has
state, mixed with more valid events. Every hostile message must come out on the dead-letter
topic with its reason and its exact bytes, the worker must keep running, and the final state
must equal the embedded replay of the valid events alone: the corpus changed nothing.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

import pytest

from plugin.adapters.kafka_io import (
    DeadLetter,
    event_messages,
    produce,
    read_topic,
    wait_for_commits,
)
from plugin.core.events import MAX_PAYLOAD_BYTES
from plugin.localstack import KafkaBroker, RedisServer
from plugin.localstack.worker import WorkerProcess
from tests.hostile.corpus import Target, hostile_cases
from tests.support.workbench import (
    assert_matches,
    final_state,
    make_workbench,
    reference_state,
    stack_settings,
)

pytestmark = pytest.mark.integration


def test_every_hostile_message_is_dead_lettered_and_state_is_untouched(
    kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    bench = make_workbench(tmp_path / "bench", events=600)
    before, after = bench.events[:400], bench.events[400:]
    user = Counter(e.user_id for e in before).most_common(1)[0][0]
    last = [e for e in before if e.user_id == user][-1]
    items = sorted({e.item_id for e in before})
    target = Target(user, items[0], items[1], last, datetime.now(tz=UTC))
    cases = hostile_cases(target)
    hostile = [case for case in cases if case.reason is not None]
    corpus = [(case.key.decode() if case.key else None, case.value) for case in cases]

    with RedisServer(log_path=tmp_path / "redis.log") as redis:
        settings = stack_settings(bench, kafka_broker.bootstrap_servers, redis.port, tmp_path)
        with WorkerProcess(settings, tmp_path / "worker.log") as worker:
            worker.wait_assigned(timeout_s=120)
            alive = lambda: worker.alive  # noqa: E731
            produced = produce(settings, event_messages(before))
            wait_for_commits(settings, produced.end_offsets, timeout_s=60, alive=alive)
            produce(settings, cast(list[tuple[str | None, bytes]], corpus))
            produced = produce(settings, event_messages(after))
            wait_for_commits(settings, produced.end_offsets, timeout_s=60, alive=alive)
            assert worker.stop() == 0, worker.log_tail()
        stats = worker.stats()
        actual = final_state(settings, bench.users)
        letters = [
            DeadLetter.model_validate_json(r.value)
            for r in read_topic(settings, settings.kafka.dead_letter_topic, idle_s=0.5)
        ]

    unmatched = list(letters)
    missing = []
    for case in hostile:
        raw = (case.value or b"")[:MAX_PAYLOAD_BYTES]
        found = next(
            (
                letter
                for letter in unmatched
                if letter.raw_payload() == raw and letter.reason.startswith(case.reason or "")
            ),
            None,
        )
        if found is None:
            missing.append(case.name)
        else:
            unmatched.remove(found)
    assert not missing, f"no dead letter with the expected reason for {missing}"
    assert not unmatched, [letter.reason for letter in unmatched]
    assert all(letter.source.topic == settings.kafka.events_topic for letter in letters)

    assert stats["rejected"] == len(hostile)
    assert stats["events"] == len(bench.events) + len(cases)
    assert stats["stale_events"] == len(cases) - len(hostile)  # the duplicates
    assert_matches(actual, reference_state(bench, tmp_path / "reference", bench.events))
    assert worker.log_path.read_text(errors="replace").count('"worker starting"') == 1
