"""``explore rebuild``: the online state rebuilt from the events Kafka still retains.

For a Redis that lost its data (restarted without persistence, flushed, failed over to an
empty or lagging replica): the workers stopped with status 65 when they found the generation
marker gone (:mod:`plugin.streaming.generation`), and refuse to start until this has run.

1. The marker is removed first, so a worker still running on the damaged store stops at its
   next batch, and one starting meanwhile with committed offsets refuses.
2. The Feast views are registered again and ``cluster_items`` rewritten from the catalog.
3. Every retained message of the events topic, from the earliest offset until the topic is
   idle (at least to the end offsets read at the start), is validated as the worker validates
   it (dead letters are skipped; the plausible-time window is taken at the message's Kafka
   timestamp, when the worker saw it) and applied through the same batch processor with the
   configured planner, each user's partition recorded for owed replans. States that survived
   are kept: an event at or below a user's watermark is a no-op, so what a lagging replica
   kept is caught up, not duplicated.
4. A new marker is written; workers then start, resume from their group's committed offsets
   (a message applied here and again by a worker is a no-op) and take the messages produced
   since step 3 began.

The state is exact when the topic still holds every event since the online state began (a
retention shorter than that loses the oldest users' history). Feedback aggregates are not
replayed (their increments are not idempotent): ``explore refresh`` rewrites them from the
feedback log.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from tqdm import tqdm

from plugin.adapters.retained_events import RetainedTopic
from plugin.core.events import WatchEvent
from plugin.core.sequence import BatchStats
from plugin.errors import InvalidInput
from plugin.jobs import prerequisites
from plugin.jobs.progress import say
from plugin.settings import Settings
from plugin.streaming.worker import Record, accept_record, event_time_bounds
from plugin.wiring import build_processor, generation_marker, online_store


def rebuild_online_state(settings: Settings, progress: bool = False) -> dict[str, Any]:
    """Rebuild sequences, plans, ``cluster_items``, the record of owed replans and the
    generation marker from the retained events topic; returns the summary."""
    marker = generation_marker(settings)
    if marker is None:
        raise InvalidInput(
            "explore rebuild restores the Redis online store (feast.online_store=redis); "
            "the SQLite store is the embedded replay's: run `explore replay` again"
        )
    prerequisites.require_kafka(settings)
    prerequisites.require_redis(settings)
    workspace = prerequisites.workspace(settings, progress=progress)
    catalog = workspace.catalog
    planner = prerequisites.planner(settings, workspace)
    started = time.perf_counter()
    marker.remove()
    say(f"generation marker {marker.key} removed: workers stop until the rebuild ends", progress)
    store = online_store(settings, catalog)
    processor = build_processor(settings, catalog, planner, store)
    topic = settings.kafka.events_topic
    bounds = event_time_bounds(settings)
    stats = BatchStats()
    read = applied = rejected = plans = 0
    users: set[str] = set()
    read_to: dict[int, int] = {}
    with RetainedTopic(settings, topic) as retained:
        span = retained.range
        say(f"replaying {span.messages:,} retained messages of {topic}", progress)
        with tqdm(total=span.messages, unit="ev", disable=not progress, desc="rebuild") as bar:
            for batch in retained.batches(settings.replay.batch_size):
                events: list[WatchEvent] = []
                shards: dict[str, str] = {}
                for consumed in batch:
                    read_to[consumed.partition] = consumed.offset + 1
                    seen_at = consumed.timestamp_ms / 1000 if consumed.timestamp_ms > 0 else None
                    record = Record(
                        topic, consumed.partition, consumed.offset, consumed.key,
                        consumed.value, seen_at,
                    )  # fmt: skip
                    now = (
                        datetime.fromtimestamp(seen_at, tz=UTC)
                        if seen_at is not None
                        else datetime.now(tz=UTC)
                    )
                    result = accept_record(record, now, catalog, *bounds)
                    if isinstance(result, WatchEvent):
                        events.append(result)
                        shards[result.user_id] = f"{topic}:{consumed.partition}"
                    else:
                        rejected += 1
                if events:
                    owed = shards if store.keeps_owed_replans else None
                    outcome = processor.process(events, owed)
                    stats.add(outcome.stats)
                    plans += len(outcome.plans)
                    users.update(shards)
                read += len(batch)
                applied += len(events)
                bar.update(len(batch))
    generation = marker.replace("rebuild")
    return {
        "topic": topic,
        "messages": read,
        "events": applied,
        "dead_letters_skipped": rejected,
        "stale_events": stats.stale,
        "users": len(users),
        "replans": stats.replans,
        "plans": plans,
        "owed_replans": store.count_owed(sorted({f"{topic}:{p}" for p in span.end})),
        "from_offsets": span.beginning,
        "to_offsets": read_to,
        "planner": planner.model_version,
        "generation": generation,
        "generation_key": marker.key,
        "seconds": round(time.perf_counter() - started, 3),
    }
