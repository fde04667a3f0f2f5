"""Monitoring the exploration loop from feedback records, over a sliding window.

Per window of the most recent ``feedback.monitor_window`` records (plans users answered):

| figure | meaning |
| --- | --- |
| acceptance rate | the planned cluster was engaged, and positively (the plan's success) |
| engaged rate | the planned cluster was engaged at all |
| novelty rate | the planned cluster was outside the user's novelty window when answered |
| exploration rate | the user's answer was a novel move (any cluster outside the window) |
| coverage | distinct planned clusters / clusters in the catalog |
| Gini | how unevenly plans spread over the clusters (0 even, 1 all on one) |

The worker exports them as Prometheus gauges on its ``/metrics`` (:class:`FeedbackMonitor`);
``explore monitor`` computes them from the log, prints a table and draws them over time.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client import Counter as PromCounter

from plugin.core.feedback import FeedbackRecord
from plugin.core.stats import gini
from plugin.observability.metrics import _in_process_values

WINDOW_FIGURES = (
    "acceptance_rate",
    "engaged_rate",
    "novelty_rate",
    "exploration_rate",
    "coverage",
    "gini",
)


@dataclass(frozen=True)
class WindowStats:
    """The monitoring figures of one window of records."""

    records: int
    acceptance_rate: float
    engaged_rate: float
    novelty_rate: float
    exploration_rate: float
    coverage: float
    gini: float
    start: datetime | None
    end: datetime | None
    top_planned: tuple[tuple[int, int], ...] = ()

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["start"] = self.start.isoformat() if self.start else None
        out["end"] = self.end.isoformat() if self.end else None
        out["top_planned"] = [list(pair) for pair in self.top_planned]
        return out


def window_stats(records: Sequence[FeedbackRecord], n_clusters: int) -> WindowStats:
    """The figures over ``records`` (any order); zeros for an empty window."""
    total = len(records)
    if not total:
        return WindowStats(0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, None, None)
    planned = Counter(r.planned_cluster for r in records)
    return WindowStats(
        records=total,
        acceptance_rate=sum(r.accepted_positive for r in records) / total,
        engaged_rate=sum(r.accepted for r in records) / total,
        novelty_rate=sum(r.planned_novel for r in records) / total,
        exploration_rate=sum(r.novel for r in records) / total,
        coverage=len(planned) / n_clusters,
        gini=gini([planned.get(c, 0) for c in range(n_clusters)]),
        start=min(r.event_time for r in records),
        end=max(r.event_time for r in records),
        top_planned=tuple(planned.most_common(3)),
    )


def sliding_series(
    records: Sequence[FeedbackRecord], n_clusters: int, window: int, points: int = 40
) -> list[WindowStats]:
    """Window figures at up to ``points`` evenly spaced ends, over records in time order."""
    ordered = sorted(records, key=lambda r: (r.event_time, r.user_id, r.event_id))
    if not ordered:
        return []
    first_end = min(window, len(ordered))
    steps = max(1, min(points, len(ordered) - first_end + 1))
    ends = sorted(
        {
            first_end + round(i * (len(ordered) - first_end) / max(1, steps - 1))
            for i in range(steps)
        }
    )
    return [window_stats(ordered[max(0, end - window) : end], n_clusters) for end in ends]


def by_model_version(records: Sequence[FeedbackRecord], n_clusters: int) -> dict[str, WindowStats]:
    """The figures of each model version's plans (all records, not windowed)."""
    groups: dict[str, list[FeedbackRecord]] = {}
    for record in records:
        groups.setdefault(record.model_version, []).append(record)
    return {version: window_stats(rows, n_clusters) for version, rows in sorted(groups.items())}


class FeedbackMonitor:
    """Keeps the last ``window`` records and exports their figures as Prometheus gauges.

    Register it on the worker's registry so one ``/metrics`` serves both.
    """

    def __init__(
        self, n_clusters: int, window: int, registry: CollectorRegistry | None = None
    ) -> None:
        self.n_clusters = n_clusters
        self._window: deque[FeedbackRecord] = deque(maxlen=window)
        self._lock = threading.Lock()
        r = registry or CollectorRegistry()
        self.registry = r
        with _in_process_values():
            self.records = PromCounter(
                "explore_feedback_records",
                "Plans users answered, by outcome",
                ["outcome"],
                registry=r,
            )
            self.window_records = Gauge(
                "explore_feedback_window_records", "Records in the monitoring window", registry=r
            )
            self.gauges = {
                name: Gauge(
                    f"explore_plan_{name}",
                    f"Plan {name.replace('_', ' ')} over the monitoring window",
                    registry=r,
                )
                for name in WINDOW_FIGURES
            }
        for outcome in ("accepted_positive", "accepted_negative", "other"):
            self.records.labels(outcome=outcome)
        # The window's figures are computed when /metrics is read, not per batch: a pass over
        # the whole window cost the worker about 3 ms of CPU per batch (docs/BENCHMARKS.md),
        # and a scrape comes every few seconds. One computation serves every gauge of a scrape.
        self._stats: WindowStats | None = None
        self.window_records.set_function(lambda: self.current().records)
        for name, gauge in self.gauges.items():
            gauge.set_function(partial(self.figure, name))

    def observe(self, records: Sequence[FeedbackRecord]) -> None:
        for record in records:
            outcome = (
                "other"
                if not record.accepted
                else ("accepted_positive" if record.positive else "accepted_negative")
            )
            self.records.labels(outcome=outcome).inc()
        with self._lock:
            self._window.extend(records)
            self._stats = None

    def figure(self, name: str) -> float:
        """One figure of :meth:`current` (a gauge's value when /metrics is read)."""
        return float(getattr(self.current(), name))

    def current(self) -> WindowStats:
        """The window's figures, computed once per change of the window."""
        with self._lock:
            if self._stats is None:
                self._stats = window_stats(list(self._window), self.n_clusters)
            return self._stats


def plot_series(
    series: Sequence[WindowStats], path: Path, title: str = "exploration feedback"
) -> None:
    """Two panels over the windows' end times: the rates, and coverage with Gini."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ends = [s.end for s in series]
    fig, (rates, spread) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, style in (
        ("acceptance_rate", "o-"),
        ("engaged_rate", "s-"),
        ("exploration_rate", "^-"),
        ("novelty_rate", "--"),
    ):
        rates.plot(ends, [getattr(s, name) for s in series], style, label=name, markersize=3)
    rates.set_ylim(0, 1.05)
    rates.set_ylabel("share of answered plans")
    rates.set_title(f"{title}: rates (window of {series[-1].records if series else 0})")
    rates.legend(fontsize=8)
    spread.plot(ends, [s.coverage for s in series], "o-", label="coverage", markersize=3)
    spread.plot(ends, [s.gini for s in series], "s-", label="Gini", markersize=3)
    spread.set_ylim(0, 1.05)
    spread.set_title("planned clusters: coverage and Gini")
    spread.legend(fontsize=8)
    for axis in (rates, spread):
        axis.set_xlabel("event time (window end)")
        axis.tick_params(axis="x", labelrotation=30, labelsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
