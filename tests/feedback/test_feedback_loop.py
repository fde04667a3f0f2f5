"""The whole loop on MovieLens-100K: replay part of the dataset through the worker, inject
feedback in which a popular cluster turns consistently negative, refresh, and check that the
plans avoid it, that novelty and coverage hold, and that nothing published was lost."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from plugin.adapters.plan_cache import all_histories, precompute
from plugin.core.catalog import ClusterCatalog
from plugin.core.feedback import FeedbackCollector, FeedbackRecord
from plugin.core.planning import PlanRequest
from plugin.core.sequence import EPOCH
from plugin.data.workspace import open_workspace
from plugin.jobs.refresh import plan_spread, run_refresh
from plugin.localstack import RedisServer
from plugin.models.fit import train_version, training_data
from plugin.models.planner import best_of_n_planner
from plugin.models.repository import ModelRepository
from plugin.models.threads import single_threaded
from plugin.observability.metrics import WorkerMetrics
from plugin.observability.monitoring import window_stats
from plugin.settings import Settings, load_settings
from plugin.streaming.worker import Record, StreamWorker
from plugin.wiring import build_processor, feedback_log, ranking_cache
from tests.support.feedback import MemoryStore

pytestmark = [pytest.mark.slow, pytest.mark.integration]

REPLAYED = 15_000


def loop_settings(tmp_path: Path, redis_server: RedisServer, **feedback: Any) -> Settings:
    return load_settings(
        var_dir=tmp_path / "var",
        models={
            "repository": tmp_path / "model_repository",
            # Small models: the loop, not the models, is under test.
            "d_model": 32,
            "layers": 1,
            "novelty_steps": 300,
            "alignment_steps": 1000,
            "gate_min_validity": 0.5,
            # The id alignment: loading the base language model would cost about 30 s.
            "alignment_features": "id",
        },
        redis={"host": redis_server.host, "port": redis_server.port, "db": 15},
        feast={"sqlite_path": tmp_path / "online.db", "registry_path": tmp_path / "registry.db"},
        feedback={"fresh": False, **feedback},
    )


def replay(worker: StreamWorker, events: list[Any], topic: str) -> list[FeedbackRecord]:
    found = []
    for start in range(0, len(events), 500):
        batch = [
            Record(
                "watch-events", 0, start + i, e.user_id.encode(), e.model_dump_json().encode(), None
            )
            for i, e in enumerate(events[start : start + 500])
        ]
        report = worker.handle(batch)
        found += [
            FeedbackRecord.model_validate_json(m.value) for m in report.outbound if m.topic == topic
        ]
    return found


def bad_answer(
    n: int,
    history: tuple[int, ...],
    cluster: int,
    at: datetime,
    version: str,
    catalog: ClusterCatalog,
    catalog_version: str,
) -> FeedbackRecord:
    """A user shown a plan of ``cluster`` who watched it and rated it 1."""
    return FeedbackRecord(
        user_id=f"viewer{n % 400}",
        event_id=f"injected-{n}",
        item_id=catalog.clusters[cluster].top_items[0],
        event_time=at + timedelta(seconds=n),
        history=list(history),
        planned_cluster=cluster,
        engaged_cluster=cluster,
        engaged_rank=0,
        accepted=True,
        positive=False,
        novel=True,
        planned_novel=True,
        rating=1.0,
        model_version=version,
        catalog_version=catalog_version,
        planned_at=at,
        source="injected",
    )


def digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def test_negative_feedback_on_a_popular_cluster_is_learned_and_published_safely(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    redis_server.client(db=15).flushdb()
    settings = loop_settings(tmp_path, redis_server)
    workspace = open_workspace(settings)
    catalog = workspace.catalog
    repository = ModelRepository(settings.models.repository)
    with single_threaded():  # two threads on two busy cores train several times slower
        version, fitted = train_version(workspace, settings)
    assert fitted.gate.passed, fitted.gate.reasons()
    repository.prepare_serving(version)
    repository.record_published(version)
    served = best_of_n_planner(settings, catalog)
    cache = ranking_cache(settings)  # keyed by settings.planner, as the worker and refresh key it
    precompute(served, cache, all_histories(len(catalog), 2), 512, "all")

    # 1. Replay part of the dataset through the worker: its feedback lands in the log.
    store = MemoryStore()
    log = feedback_log(settings)
    collector = FeedbackCollector(store, catalog, settings.sequence, settings.data, log)
    processor = build_processor(settings, catalog, served, store, observer=collector)
    worker = StreamWorker(processor, catalog, settings, WorkerMetrics(), feedback=collector)
    streamed = replay(
        worker, list(workspace.dataset.events())[:REPLAYED], settings.kafka.feedback_topic
    )
    assert streamed and {r.key for r in log.read()} == {r.key for r in streamed}
    assert window_stats(streamed, len(catalog)).novelty_rate == 1.0

    # 2. The most planned cluster turns consistently negative: every plan of it is answered
    #    badly, five answers per move the dataset saw out of that history (at least 20).
    before = plan_spread(served, len(catalog), 2)
    popular = before["top"][0][0]
    histories = list(all_histories(len(catalog), 2))
    plans = served.plan([PlanRequest("h", h, frozenset(h), EPOCH) for h in histories])
    fed = [h for h, p in zip(histories, plans, strict=True) if p.cluster_id == popular]
    moves_out = Counter(m.history for m in training_data(workspace, settings).train_moves)
    later = workspace.dataset.interactions["event_time"].max().to_pydatetime() + timedelta(days=1)
    injected: list[FeedbackRecord] = []
    label, catalog_version = served.model_version, catalog.version
    for history in fed:
        for _ in range(max(20, 5 * moves_out[history])):
            n = len(injected)
            injected.append(bad_answer(n, history, popular, later, label, catalog, catalog_version))
    log.append(injected)
    published_files = digest(settings.models.repository)
    log_files = digest(log.root)
    pointer_before = json.loads(repository.pointer_path.read_text())
    v1_cache = cache.size(served.model_version)

    # 3. Refresh.
    report = run_refresh(settings, workspace)
    assert report.published and report.serving_before == 1 and report.serving_after == 2
    assert [s.name for s in report.steps] == [
        "serving",
        "read-feedback",
        "train-novelty",
        "train-alignment",
        "gate",
        "write-version",
        "publish",
        "plan-cache",
        "aggregates",
    ]
    selection = report.steps[1].detail
    assert selection["used"] == len(injected)  # the replay's answers are dataset events
    assert selection["already_in_data"] == len(streamed)

    # The plans avoid the cluster: across every history, and where users said so.
    after = report.after["plans"]
    share_before = before["share"][str(popular)]
    share_after = after["share"].get(str(popular), 0.0)
    assert share_after <= share_before / 4, (share_before, share_after)
    refreshed = best_of_n_planner(settings, catalog)
    assert refreshed.model_version.startswith("best-of-n-v2-")
    replanned = refreshed.plan([PlanRequest("h", h, frozenset(h), EPOCH) for h in fed])
    still = sum(p.cluster_id == popular for p in replanned)
    assert still <= 0.15 * len(fed), (still, len(fed))
    # ... while novelty and coverage hold.
    assert report.after["heldout"]["novelty_rate"] == 1.0
    assert after["coverage"] >= before["coverage"] - 0.1
    assert after["gini"] <= before["gini"] + 0.1
    assert report.gate is not None and report.gate["passed"]

    # Nothing published before was lost or overwritten; the new version is added beside it.
    now = digest(settings.models.repository)
    assert {k: now[k] for k in published_files if k != "published.json"} == {
        k: v for k, v in published_files.items() if k != "published.json"
    }
    pointer = json.loads(repository.pointer_path.read_text())
    assert pointer["version"] == 2 and pointer["previous"] == [1]
    assert pointer["history"][: len(pointer_before["history"])] == pointer_before["history"]
    assert digest(log.root) == log_files  # the log is read, never rewritten
    assert cache.size(served.model_version) == v1_cache  # old entries expire by TTL
    assert cache.size(refreshed.model_version) == len(histories)
    assert report.steps[-1].detail["rows"] > 0

    # 4. A refresh whose gate fails writes its version and changes nothing else.
    strict = loop_settings(tmp_path, redis_server, gate_min_coverage=1.0)
    failed = run_refresh(strict, workspace)
    assert not failed.published and failed.version == 3
    assert failed.serving_before == failed.serving_after == 2
    assert failed.gate is not None and any("coverage" in r for r in failed.gate["reasons"])
    assert [s.status for s in failed.steps if s.name in ("publish", "plan-cache")] == [
        "skipped",
        "skipped",
    ]
    assert repository.published() is not None and repository.published().version == 2  # type: ignore[union-attr]
    assert not repository.gate(3)["passed"]
