"""What the feedback log says: the monitoring figures and plot (``explore monitor``) and the
log's size (``explore feedback stats``)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from plugin.core.feedback import FeedbackRecord
from plugin.errors import NothingToReport
from plugin.jobs import prerequisites
from plugin.observability.monitoring import (
    by_model_version,
    plot_series,
    sliding_series,
    window_stats,
)
from plugin.settings import Settings
from plugin.wiring import feedback_log, feedback_log_dir


def monitor_report(
    records: Sequence[FeedbackRecord], n_clusters: int, window: int, points: int = 40
) -> dict[str, Any]:
    """The monitoring figures: the latest window, the series of windows, each model version."""
    ordered = sorted(records, key=lambda r: (r.event_time, r.user_id, r.event_id))
    return {
        "records": len(ordered),
        "window": window,
        "latest": window_stats(ordered[-window:], n_clusters).as_dict(),
        "all": window_stats(ordered, n_clusters).as_dict(),
        "by_model_version": {
            version: stats.as_dict()
            for version, stats in by_model_version(ordered, n_clusters).items()
        },
        "series": [s.as_dict() for s in sliding_series(ordered, n_clusters, window, points)],
    }


@dataclass
class MonitorOutcome:
    """The figures (:func:`monitor_report`) and where their plot was drawn."""

    report: dict[str, Any]
    plot: Path


def monitor(
    settings: Settings, since: date | None = None, plot_path: Path | None = None
) -> MonitorOutcome:
    """Plan acceptance, novelty, coverage and Gini of the log's records engaged on or after
    ``since``, in windows of ``feedback.monitor_window``, drawn over event time at
    ``plot_path`` (default ``<var_dir>/monitor.png``)."""
    records = feedback_log(settings).read(since=since)
    if not records:
        raise NothingToReport(
            f"no feedback records in {feedback_log_dir(settings)}",
            hint="the worker writes them (explore worker), or run `explore demo --stack`",
        )
    n_clusters = len(prerequisites.workspace(settings).catalog)
    window = settings.feedback.monitor_window
    report = monitor_report(records, n_clusters, window)
    plot = plot_path or settings.var_dir / "monitor.png"
    plot_series(sliding_series(records, n_clusters, window), plot)
    return MonitorOutcome(report, plot)


@dataclass
class FeedbackStats:
    """The log's folder and size (dates, parts, rows, bytes), its unique records, and the
    records of each model version."""

    log_dir: Path
    size: dict[str, Any]
    unique_records: int
    by_model_version: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.size,
            "unique_records": self.unique_records,
            "by_model_version": self.by_model_version,
        }


def feedback_stats(settings: Settings) -> FeedbackStats:
    """``explore feedback stats``: how big the feedback log is and whose plans it answers."""
    log = feedback_log(settings)
    records = log.read()
    by_version = Counter(r.model_version for r in records)
    return FeedbackStats(
        feedback_log_dir(settings),
        log.stats().as_dict(),
        len(records),
        dict(sorted(by_version.items())),
    )
