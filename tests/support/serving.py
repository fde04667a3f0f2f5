"""Small untrained models at the real shapes, their versions, and plan requests (serving tests).

The models are randomly initialised (seeded) at the real shapes (48 clusters, 8 parents,
K=2): serving must reproduce the in-process planner bit for bit whatever the weights, and
training would cost a minute of the 2-CPU budget. Versions 1 and 2 use different seeds, so a
switch between them changes the plans.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from plugin.core.planning import PlanRequest
from plugin.localstack import TritonServer
from plugin.models.alignment import AlignmentConfig, AlignmentModel
from plugin.models.novelty import NoveltyConfig, NoveltyModel
from plugin.models.planner import BestOfNPlanner
from plugin.models.repository import ModelRepository
from plugin.settings import TritonSettings

CLUSTERS = 48
PARENTS = 8
CATALOG = "c0ffee00deadbeef"
T0 = datetime(1998, 1, 1, tzinfo=UTC)


def models(seed: int) -> tuple[NoveltyModel, AlignmentModel]:
    torch.manual_seed(seed)
    novelty = NoveltyModel(
        NoveltyConfig(
            n_clusters=CLUSTERS,
            n_parents=PARENTS,
            parent_of=tuple(c % PARENTS for c in range(CLUSTERS)),
            d_model=32,
            layers=1,
        )
    )
    alignment = AlignmentModel(AlignmentConfig(n_clusters=CLUSTERS))
    return novelty.eval(), alignment.eval()


def write_version(root: Path, seed: int, passed: bool = True) -> int:
    """A complete version of both models with a manifest whose gate passed (or not)."""
    novelty, alignment = models(seed)
    gate = {"passed": passed, "reasons": [] if passed else ["recall@16 0.100 < 0.3"]}
    manifest: dict[str, Any] = {"catalog_version": CATALOG, "gate": gate, "seed": seed}
    return ModelRepository(root).write(novelty, alignment, manifest)


def in_process(seed: int, version: int, n: int = 16, base_seed: int = 7) -> BestOfNPlanner:
    novelty, alignment = models(seed)
    label = f"best-of-n-v{version}-{CATALOG[:8]}"
    return BestOfNPlanner(novelty, alignment, n, 1.5, base_seed, label)


def request(user: str, history: tuple[int, ...], excluded: set[int] | None = None) -> PlanRequest:
    return PlanRequest(user, history, frozenset(history if excluded is None else excluded), T0)


def client_settings(server: TritonServer) -> TritonSettings:
    """Settings that reach ``server``, with one quick retry (tests fail fast)."""
    return TritonSettings(
        http_port=server.http_port,
        grpc_port=server.grpc_port,
        metrics_port=server.metrics_port,
        retries=1,
        backoff_initial_s=0.01,
    )
