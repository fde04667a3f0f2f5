"""Triton's Prometheus figures this project relies on, per model version.

Triton's ``/metrics`` exports cumulative counters per (model, version): request counts, and
microseconds spent end to end, waiting in the queue, and computing (input, infer, output).
:func:`scrape` reads them; :meth:`ModelMetrics.minus` turns two readings into the figures of
an interval (what ``explore bench planner`` reports), and the averages are per request.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

# Triton metric name -> our field name.
COUNTERS = {
    "nv_inference_request_success": "success",
    "nv_inference_request_failure": "failure",
    "nv_inference_count": "inferences",
    "nv_inference_exec_count": "executions",
    "nv_inference_request_duration_us": "request_us",
    "nv_inference_queue_duration_us": "queue_us",
    "nv_inference_compute_input_duration_us": "compute_input_us",
    "nv_inference_compute_infer_duration_us": "compute_infer_us",
    "nv_inference_compute_output_duration_us": "compute_output_us",
}


@dataclass(frozen=True)
class ModelMetrics:
    """Cumulative counters of one model version (or their difference over an interval)."""

    model: str
    version: str
    success: float = 0.0
    failure: float = 0.0
    inferences: float = 0.0  # batch rows
    executions: float = 0.0  # model executions (batches)
    request_us: float = 0.0
    queue_us: float = 0.0
    compute_input_us: float = 0.0
    compute_infer_us: float = 0.0
    compute_output_us: float = 0.0

    @property
    def requests(self) -> float:
        return self.success + self.failure

    @property
    def compute_us(self) -> float:
        return self.compute_input_us + self.compute_infer_us + self.compute_output_us

    def _per_request_ms(self, micros: float) -> float:
        return micros / self.success / 1000 if self.success else 0.0

    @property
    def avg_request_ms(self) -> float:
        """Mean end-to-end time in the server per successful request."""
        return self._per_request_ms(self.request_us)

    @property
    def avg_queue_ms(self) -> float:
        return self._per_request_ms(self.queue_us)

    @property
    def avg_compute_ms(self) -> float:
        return self._per_request_ms(self.compute_us)

    @property
    def avg_batch_rows(self) -> float:
        """Rows per model execution: how well dynamic batching merged requests."""
        return self.inferences / self.executions if self.executions else 0.0

    def minus(self, earlier: ModelMetrics | None) -> ModelMetrics:
        """The counters accumulated since ``earlier`` (a reading of the same model version)."""
        if earlier is None:
            return self
        values = {
            f.name: getattr(self, f.name) - getattr(earlier, f.name)
            for f in fields(self)
            if f.name not in ("model", "version")
        }
        return ModelMetrics(self.model, self.version, **values)

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "avg_request_ms": round(self.avg_request_ms, 3),
            "avg_queue_ms": round(self.avg_queue_ms, 3),
            "avg_compute_ms": round(self.avg_compute_ms, 3),
            "avg_batch_rows": round(self.avg_batch_rows, 2),
        }


def parse_metrics(text: str) -> dict[tuple[str, str], ModelMetrics]:
    """Per (model, version) counters from a ``/metrics`` page."""
    values: dict[tuple[str, str], dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name = COUNTERS.get(sample.name) or COUNTERS.get(sample.name.removesuffix("_total"))
            if name is None or "model" not in sample.labels:
                continue
            key = (sample.labels["model"], sample.labels.get("version", ""))
            values.setdefault(key, {})[name] = float(sample.value)
    return {key: ModelMetrics(key[0], key[1], **counters) for key, counters in values.items()}


def scrape(url: str, timeout: float = 5.0) -> dict[tuple[str, str], ModelMetrics]:
    """Read and parse Triton's Prometheus endpoint (``http://host:port/metrics``)."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return parse_metrics(response.read().decode("utf-8"))


def difference(
    after: dict[tuple[str, str], ModelMetrics], before: dict[tuple[str, str], ModelMetrics]
) -> dict[tuple[str, str], ModelMetrics]:
    """Per model version, what happened between two readings."""
    return {key: metrics.minus(before.get(key)) for key, metrics in after.items()}


def metrics_table(metrics: Iterable[ModelMetrics]) -> list[dict[str, Any]]:
    """Rows for a table and for JSON: counts and per-request averages."""
    return [
        {
            "model": m.model,
            "version": m.version,
            "requests": int(m.success),
            "failed": int(m.failure),
            "rows": int(m.inferences),
            "batches": int(m.executions),
            "rows/batch": round(m.avg_batch_rows, 2),
            "request ms": round(m.avg_request_ms, 3),
            "queue ms": round(m.avg_queue_ms, 3),
            "compute ms": round(m.avg_compute_ms, 3),
        }
        for m in sorted(metrics, key=lambda m: (m.model, m.version))
    ]
