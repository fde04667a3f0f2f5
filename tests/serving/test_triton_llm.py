"""An LLM novelty version on a real tritonserver: publish, serve, plan, roll back, and back.

Version 1 has the small id novelty model; version 2 has the LLM novelty model on the real
SmolLM2-135M weights, trained for a few steps on the tiny six-cluster set-up, and an alignment
model on the same base's description features. Triton serves
version 2's novelty model as ``novelty_llm`` and the BLS planner calls it because the
planner manifest names it. The test process loads the base once (to train the version and
to plan in-process); the Triton stub loads it again for each LLM load, so this file costs
three base loads (about 30 s each on two quiet CPUs).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import tritonclient.grpc as triton_grpc

from plugin.adapters.triton_planner import TritonPlanner
from plugin.core.planning import PlanRequest
from plugin.localstack import TritonServer
from plugin.models.alignment import AlignmentModel
from plugin.models.descriptions import description_features
from plugin.models.llm_training import train_llm_novelty
from plugin.models.planner import BestOfNPlanner
from plugin.models.repository import ModelRepository, version_label
from plugin.models.training import alignment_config
from plugin.serving.contract import HISTORY, LOG_PROBS, NOVELTY_LLM_MODEL
from plugin.serving.control import ModelControl, ModelControlError, publish, rollback
from plugin.settings import LlmSettings, TritonSettings
from tests.support.llm import SUMMARIES, load_base, planted_pairs, tiny_catalog, tiny_models, wrap
from tests.support.serving import CATALOG, client_settings, in_process, request, write_version

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CLUSTERS = len(SUMMARIES)
N = 4
TEMPERATURE = 1.5
SEED = 7


def llm_version(root: Path) -> tuple[BestOfNPlanner, int]:
    """Train the tiny LLM for a few steps and write it as a version with a passed gate; the
    in-process planner over the same models."""
    models = tiny_models(steps=3)
    novelty, _ = train_llm_novelty(
        planted_pairs(), tiny_catalog(), 2, models, model=wrap(load_base(), models)
    )
    # Its alignment model reads the language model's description features (the default), so
    # Triton's alignment stub loads that kind too.
    features = description_features(tiny_catalog(), LlmSettings(), root / "cache", load_base())
    torch.manual_seed(3)
    config = alignment_config(CLUSTERS, 2, "pointwise", features)
    alignment = AlignmentModel(config, features.matrix).eval()
    manifest = {
        "catalog_version": CATALOG,
        "gate": {"passed": True, "reasons": []},
        "novelty": "llm",
    }
    version = ModelRepository(root).write(novelty, alignment, manifest)
    label = version_label(version, CATALOG)
    return BestOfNPlanner(novelty, alignment, N, TEMPERATURE, SEED, label), version


def requests() -> list[PlanRequest]:
    histories = [(0, 3), (1, 4), (2,), (5, 0), (3, 2), (4, 1)]
    return [request(f"u{i}", h) for i, h in enumerate(histories)]


def served_log_probs(settings: TritonSettings, version: int, histories: np.ndarray) -> np.ndarray:
    """``novelty_llm`` called directly, through the novelty contract."""
    client = triton_grpc.InferenceServerClient(f"127.0.0.1:{settings.grpc_port}")
    try:
        tensor = triton_grpc.InferInput(HISTORY, list(histories.shape), "INT64")
        tensor.set_data_from_numpy(histories)
        result = client.infer(NOVELTY_LLM_MODEL, [tensor], model_version=str(version))
        return np.asarray(result.as_numpy(LOG_PROBS))
    finally:
        client.close()


def test_an_llm_version_publishes_serves_and_rolls_back_like_an_id_version(
    triton_server_factory: Callable[..., TritonServer], tmp_path: Path
) -> None:
    root = tmp_path / "model_repository"
    assert write_version(root, seed=1) == 1
    reference, version = llm_version(root)
    assert version == 2
    repository = ModelRepository(root)
    server = triton_server_factory(root, name="triton-llm")
    settings = client_settings(server)
    labels: Callable[[int], str] = lambda v: version_label(v, CATALOG)  # noqa: E731
    plans = requests()
    id_reference = in_process(seed=1, version=1, n=N, base_seed=SEED)
    with (
        ModelControl(settings, repository) as control,
        TritonPlanner(settings, N, TEMPERATURE, SEED, CLUSTERS, labels) as planner,
    ):
        publish(repository, control, 1)
        assert planner.plan(plans) == id_reference.plan(plans)

        outcome = publish(repository, control, version)
        # The LLM is its own Triton model; the id novelty model is unloaded with version 1.
        assert control.ready_versions() == {
            "novelty_llm": [2],
            "alignment": [2],
            "planner": [2],
        }
        assert outcome.report is not None and outcome.pointer.version == 2
        # Only the shell goes to novelty_llm/2/; the trained tensors stay in novelty/2/.
        assert repository.novelty_model(2) == NOVELTY_LLM_MODEL
        assert (root / NOVELTY_LLM_MODEL / "2" / "model.py").is_file()
        assert not (root / "novelty" / "2" / "model.py").exists()
        with pytest.raises(ModelControlError, match="served as novelty_llm, not novelty"):
            control.load(["novelty"])
        with pytest.raises(ModelControlError, match="refusing to unload novelty_llm"):
            control.unload(NOVELTY_LLM_MODEL)
        served = planner.plan(plans)
        assert {p.model_version for p in served} == {version_label(2, CATALOG)}
        # The same weights, seeds and inputs give the same plans as the in-process planner.
        assert served == reference.plan(plans)
        histories = np.array([[0, 3], [2, -1], [5, 0]], dtype=np.int64)
        expected = reference.novelty.cluster_log_probs(torch.from_numpy(histories)).numpy()
        assert np.allclose(served_log_probs(settings, 2, histories), expected, atol=1e-4)

        back = rollback(repository, control)
        assert back.pointer.version == 1
        assert control.ready_versions() == {"novelty": [1], "alignment": [1], "planner": [1]}
        assert planner.plan(plans) == id_reference.plan(plans)

        again = publish(repository, control, version)
        assert again.pointer.version == 2 and control.serving_version() == 2
        assert planner.plan(plans) == served
        stubs = {(s.model, s.version): s.rss_mb for s in server.stubs()}
    # The language model's stub holds the base model in float32 (134.5M parameters).
    assert stubs[(NOVELTY_LLM_MODEL, 2)] > 500
