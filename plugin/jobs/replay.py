"""The embedded driver: stream a dataset's events, in time order and micro-batches, through
the same :class:`~plugin.core.pipeline.BatchProcessor` the Faust worker uses (``explore
replay``, and the embedded ``explore demo``)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from tqdm import tqdm

from plugin.core.events import WatchEvent
from plugin.core.pipeline import BatchProcessor, BatchTimings
from plugin.core.sequence import BatchStats
from plugin.data.workspace import Workspace
from plugin.jobs import prerequisites
from plugin.jobs.lookup import lookup_plans, natural_order
from plugin.settings import Settings
from plugin.wiring import build_processor, online_store


@dataclass
class ReplayReport:
    events: int = 0
    batches: int = 0
    seconds: float = 0.0
    users: set[str] = field(default_factory=set)
    planned_users: set[str] = field(default_factory=set)
    stats: BatchStats = field(default_factory=BatchStats)
    timings: BatchTimings = field(default_factory=BatchTimings)

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "events": self.events,
            "batches": self.batches,
            "seconds": round(self.seconds, 3),
            "events_per_second": round(self.events_per_second, 1),
            "users": len(self.users),
            "planned_users": len(self.planned_users),
            "replans": self.stats.replans,
            "stale_events": self.stats.stale,
            "unknown_items": self.stats.unknown_items,
            "debounced": self.stats.debounced,
            "seconds_by_step": {
                "read": round(self.timings.read, 3),
                "core": round(self.timings.core, 3),
                "plan": round(self.timings.plan, 3),
                "write": round(self.timings.write, 3),
            },
        }


def batched(events: Iterable[WatchEvent], size: int) -> Iterator[list[WatchEvent]]:
    iterator = iter(events)
    while batch := list(islice(iterator, size)):
        yield batch


def replay(
    events: Iterable[WatchEvent],
    processor: BatchProcessor,
    batch_size: int,
    total: int | None = None,
    progress: bool = True,
) -> ReplayReport:
    """Feed events through the processor in batches of ``batch_size``; returns the summary."""
    report = ReplayReport()
    started = time.perf_counter()
    with tqdm(total=total, unit="ev", disable=not progress, desc="replay") as bar:
        for batch in batched(events, batch_size):
            outcome = processor.process(batch)
            report.events += len(batch)
            report.batches += 1
            report.users.update(event.user_id for event in batch)
            report.planned_users.update(plan.user_id for plan in outcome.plans)
            report.stats.add(outcome.stats)
            report.timings.add(outcome.timings)
            bar.update(len(batch))
    report.seconds = time.perf_counter() - started
    return report


def replay_dataset(
    settings: Settings,
    limit: int | None = None,
    samples: int = 5,
    progress: bool = False,
    version: int | None = None,
    workspace: Workspace | None = None,
) -> dict[str, Any]:
    """Replay the settings' dataset (its first ``limit`` events) through the core into the
    Feast online store with the configured planner (best-of-n: ``version`` or the published
    one). Returns the summary (events/s, users, replans, time per step) with ``samples`` users'
    plans as a ranker reads them."""
    workspace = workspace or prerequisites.workspace(settings, progress=progress)
    planner = prerequisites.planner(settings, workspace, version)
    store = online_store(settings, workspace.catalog)
    processor = build_processor(settings, workspace.catalog, planner, store)
    events: Iterable[WatchEvent] = workspace.dataset.events()
    total = len(workspace.dataset.interactions)
    if limit is not None:
        events, total = islice(events, limit), min(limit, total)
    report = replay(events, processor, settings.replay.batch_size, total=total, progress=progress)
    summary: dict[str, Any] = {
        "dataset": workspace.dataset.name,
        "catalog_version": workspace.catalog.version,
        "clusters": len(workspace.catalog),
        "planner": planner.model_version,
        "online_store": settings.feast.online_store,
        **report.as_dict(),
    }
    sample_users = sorted(report.planned_users, key=natural_order)[:samples]
    summary["sample_plans"] = lookup_plans(store, sample_users)
    return summary
