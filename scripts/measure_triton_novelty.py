"""Rows/s and stub RSS of the id and the LLM novelty models through Triton (issue 12, item 4).

Writes two versions at the real shapes of the current catalog into a scratch model
repository: version 1 with the id novelty model, version 2 with the LLM novelty model
(untrained: throughput depends on the shapes and the prompts, not on the trained values).
Starts a tritonserver, loads ``novelty`` and ``novelty_llm`` side by side, and sends
each one sequential requests of B histories (B = 1, 16, 64) through the novelty contract
(``HISTORY`` -> ``LOG_PROBS``) for a few seconds per batch size. Every LLM request carries
histories it has not seen, so its per-history memo never answers (what a plan-cache miss
costs); the id model has no memo. Prints a table and writes JSON.

    nice -n 5 .venv/bin/python scripts/measure_triton_novelty.py --out var/measure/triton.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import tritonclient.grpc as triton_grpc

from plugin.adapters.plan_cache import all_histories
from plugin.bench.machine import describe_machine, load_average
from plugin.data.workspace import open_workspace
from plugin.localstack import TritonServer
from plugin.models.alignment import AlignmentConfig, AlignmentModel
from plugin.models.llm import build_llm_novelty
from plugin.models.llm_training import llm_novelty_config
from plugin.models.novelty import NoveltyModel
from plugin.models.repository import ModelRepository
from plugin.models.training import novelty_config
from plugin.serving.contract import HISTORY, LOG_PROBS, NOVELTY_LLM_MODEL, NOVELTY_MODEL
from plugin.serving.control import ModelControl
from plugin.settings import TritonSettings, load_settings
from plugin.tables import table

BATCHES = (1, 16, 64)


def write_versions(root: Path) -> dict[str, Any]:
    """A version with the id novelty model, then one with the LLM, at the catalog's shapes."""
    settings = load_settings(models={"novelty": "llm"})
    catalog = open_workspace(settings).catalog
    k = settings.sequence.history_length
    torch.manual_seed(7)
    id_model = NoveltyModel(novelty_config(catalog, k, settings.models)).eval()
    llm = settings.models.llm
    llm_model = build_llm_novelty(
        llm_novelty_config(catalog, k, settings.models), inference_batch=llm.inference_batch
    ).eval()
    alignment = AlignmentModel(AlignmentConfig(n_clusters=len(catalog), history_length=k)).eval()
    repository = ModelRepository(root)
    manifest = {"catalog_version": catalog.version, "gate": {"passed": True, "reasons": []}}
    versions = {}
    for name, novelty in ((NOVELTY_MODEL, id_model), (NOVELTY_LLM_MODEL, llm_model)):
        versions[name] = repository.write(novelty, alignment, manifest)
        repository.prepare_serving(versions[name])
    return {
        "clusters": len(catalog),
        "history_length": k,
        "catalog": catalog.version,
        "versions": versions,
    }


def rows_per_second(
    client: Any, model: str, version: int, histories: Any, batch: int, seconds: float
) -> dict[str, Any]:
    """Sequential requests of ``batch`` fresh histories until ``seconds`` have passed (at
    least three requests)."""
    latencies: list[float] = []
    rows = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds or len(latencies) < 3:
        chunk = np.array(list(itertools.islice(histories, batch)), dtype=np.int64)
        tensor = triton_grpc.InferInput(HISTORY, list(chunk.shape), "INT64")
        tensor.set_data_from_numpy(chunk)
        sent = time.perf_counter()
        result = client.infer(model, [tensor], model_version=str(version), client_timeout=600)
        latencies.append(time.perf_counter() - sent)
        assert result.as_numpy(LOG_PROBS).shape[0] == batch
        rows += batch
    elapsed = time.perf_counter() - started
    return {
        "model": model,
        "batch": batch,
        "requests": len(latencies),
        "rows": rows,
        "rows_per_s": rows / elapsed,
        "ms_per_request_p50": 1000 * float(np.median(latencies)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=12.0, help="per model and batch size")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--repository",
        type=Path,
        help="write the two versions here and keep them (default: a scratch folder); "
        "then EXPLORE_MODELS__REPOSITORY=here `explore precompute` ranks with the LLM version",
    )
    args = parser.parse_args()
    root = args.repository or Path(tempfile.mkdtemp(prefix="triton-novelty-")) / "model_repository"
    shapes = write_versions(root)
    padded = [
        (*h, *([-1] * (shapes["history_length"] - len(h))))
        for h in all_histories(shapes["clusters"], shapes["history_length"])
    ]
    padded = [h for h in padded if h[-1] >= 0] or padded  # full K histories, as in the table
    with TritonServer(root) as server:
        settings = TritonSettings(
            http_port=server.http_port, grpc_port=server.grpc_port, metrics_port=server.metrics_port
        )
        loads: dict[str, float] = {}
        with ModelControl(settings, ModelRepository(root)) as control:
            for model, version in shapes["versions"].items():
                report = control.load([model], version)
                loads[model] = round(report.steps[0].seconds, 2)
        client = triton_grpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
        results = []
        load_before = load_average()
        for model, version in shapes["versions"].items():
            # The id model may see a history again; the LLM never does (no memo hits).
            source = itertools.cycle(padded) if model == NOVELTY_MODEL else iter(padded)
            client.infer(model, [_warm(padded[-1])], model_version=str(version))
            for batch in BATCHES:
                results.append(rows_per_second(client, model, version, source, batch, args.seconds))
        client.close()
        rss = {f"{s.model} v{s.version}": round(s.rss_mb, 1) for s in server.stubs()}
    doc = {
        "shapes": shapes,
        "load_seconds": loads,
        "stub_rss_mb": rss,
        "results": results,
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "machine": describe_machine(),
    }
    print(
        table(
            ["model", "batch", "requests", "rows/s", "p50 ms/request"],
            [
                [r["model"], r["batch"], r["requests"], r["rows_per_s"], r["ms_per_request_p50"]]
                for r in results
            ],
        )
    )
    print(table(["stub", "RSS MB"], [[name, mb] for name, mb in rss.items()]))
    print(f"load seconds: {loads}; load average {load_before} -> {doc['load_average_after']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2))


def _warm(history: tuple[int, ...]) -> Any:
    """One request before timing: the first call pays lazy set-up in the stub."""
    tensor = triton_grpc.InferInput(HISTORY, [1, len(history)], "INT64")
    tensor.set_data_from_numpy(np.array([history], dtype=np.int64))
    return tensor


if __name__ == "__main__":
    main()
