"""The LLM novelty model, and the alignment model on the LLM's description features, on the
real SmolLM2-135M weights in a tiny configuration.

The base model is loaded once for the module (about 30 s on two cores); each test wraps a
fresh copy of it, since LoRA adapters go into the model they wrap.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from plugin.core.moves import NovelMove
from plugin.core.planning import PlanRequest
from plugin.errors import MissingPrerequisite
from plugin.models.alignment import AlignmentConfig, AlignmentModel
from plugin.models.data import FeedbackLabels
from plugin.models.descriptions import DescriptionFeatures, description_features
from plugin.models.llm import (
    BaseModelRef,
    ConstraintError,
    base_reference,
    constrained_log_probs,
    converted_folder,
    load_llm_novelty,
)
from plugin.models.llm_training import train_llm_novelty
from plugin.models.novelty import NoveltyConfig, NoveltyModel
from plugin.models.planner import best_of_n_planner
from plugin.models.repository import ModelRepository, load_alignment
from plugin.models.training import alignment_config, quality_gate, train_alignment
from plugin.settings import LlmSettings, load_settings
from tests.support.llm import (
    SUMMARIES,
    fresh,
    load_base,
    planted_pairs,
    tiny_catalog,
    tiny_models,
    wrap,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def base() -> tuple[Any, nn.Module]:
    return load_base()


def test_one_pass_gives_the_exact_distribution_over_clusters(
    base: tuple[Any, nn.Module],
) -> None:
    model = wrap(base, tiny_models()).eval()
    histories = torch.tensor([[1, 0], [2, -1], [-1, -1]])
    log_probs = model.cluster_log_probs(histories)
    assert log_probs.shape == (3, len(SUMMARIES))
    assert torch.allclose(log_probs.exp().sum(dim=1), torch.ones(3), atol=1e-5)
    validity = model.validity(histories)
    assert ((validity > 0) & (validity <= 1)).all()
    # The prompt is language, oldest first: cluster 0's summary, then cluster 1's.
    text = model.prompt_text([SUMMARIES[0], SUMMARIES[1]])
    assert text.index("Speed") < text.index("Singin'")
    ids = model.prompt_ids([1, 0])
    first, second = model.summary_ids[0], model.summary_ids[1]
    joined = ",".join(map(str, ids))
    assert joined.index(",".join(map(str, first))) < joined.index(",".join(map(str, second)))


def test_running_the_blocks_in_two_parts_equals_the_full_pass(
    base: tuple[Any, nn.Module],
) -> None:
    model = wrap(base, tiny_models()).eval()
    assert model.split is not None
    histories = torch.tensor([[1, 0], [4, 5], [3, -1]])
    split_vocab, split_clusters = model.logits(histories)
    model.split = None
    full_vocab, full_clusters = model.logits(histories)
    assert torch.allclose(split_clusters, full_clusters, atol=1e-3)
    assert torch.allclose(split_vocab, full_vocab, atol=1e-3)


def test_the_constraint_fails_closed(base: tuple[Any, nn.Module]) -> None:
    logits = torch.randn(2, 6)
    with pytest.raises(ConstraintError, match="empty"):
        constrained_log_probs(logits, torch.tensor([[True] * 6, [False] * 6]))
    with pytest.raises(ConstraintError, match="disagree"):
        constrained_log_probs(logits, torch.ones(2, 5, dtype=torch.bool))
    some = torch.tensor([[True, False, True, False, False, False]] * 2)
    allowed = constrained_log_probs(logits, some)
    assert torch.isinf(allowed[:, 1]).all() and torch.allclose(
        allowed.exp().sum(dim=1), torch.ones(2)
    )
    model = wrap(base, tiny_models())
    with pytest.raises(ConstraintError, match="unknown cluster"):
        model.prompt_ids([9, 0])


@pytest.mark.parametrize("method", ["lora", "unfreeze"])
def test_fine_tuning_learns_planted_moves_and_a_version_rebuilds_it(
    base: tuple[Any, nn.Module], method: str, tmp_path: Path
) -> None:
    models = tiny_models(method=method)
    data = planted_pairs()
    model = wrap(base, models)
    histories = torch.from_numpy(data.histories)
    targets = torch.from_numpy(data.targets)
    before = model.eval().cluster_log_probs(histories).gather(1, targets[:, None]).mean()
    trained, run = train_llm_novelty(data, tiny_catalog(), 2, models, model=model)
    after = trained.cluster_log_probs(histories).gather(1, targets[:, None]).mean()
    assert run.steps == 20 and len(run.losses) == 20
    assert after > before + 0.3  # the planted transitions became far more likely
    # The gate runs on the LLM as on the id model.
    heldout = []
    for history, target in zip(data.histories.tolist(), data.targets.tolist(), strict=True):
        present = tuple(c for c in history if c >= 0)
        heldout.append(NovelMove("u", present, target, True, recent=present))
    gate = quality_gate(trained, heldout, n=2, temperature=1.0, seed=7, settings=models)
    assert 0.0 <= gate.validity <= 1.0 and 0.0 <= gate.recall_at_n <= 1.0
    # A version holds the trained tensors and the base's hash, not a copy of the base.
    saved = trained.checkpoint()
    stored = sum(t.numel() for t in saved["state_dict"].values())
    assert stored < sum(p.numel() for p in base[1].parameters()) / 4
    assert saved["config"]["base"]["sha256"] == trained.config.base.sha256
    path = tmp_path / "weights.pt"
    torch.save(saved, path)
    rebuilt = load_llm_novelty(torch.load(path, weights_only=True), loaded=fresh(base))
    assert torch.allclose(
        rebuilt.cluster_log_probs(histories), trained.cluster_log_probs(histories), atol=1e-4
    )


def test_a_changed_base_is_refused(base: tuple[Any, nn.Module]) -> None:
    model = wrap(base, tiny_models(trainable_layers=1))
    saved = model.checkpoint()
    saved["config"]["base"]["sha256"] = "0" * 64
    with pytest.raises(Exception, match="changed since this version was trained"):
        load_llm_novelty(saved, loaded=fresh(base))


def test_a_gguf_base_loads_from_its_float32_copy_named_by_its_hash(
    base: tuple[Any, nn.Module],
) -> None:
    llm = LlmSettings()
    ref = base_reference(llm.base, llm.gguf_file)
    folder = converted_folder(ref)
    # The module's base came through the copy (made on first use), named by the GGUF's hash.
    assert ref.sha256[:16] in folder.name
    assert (folder / "model.safetensors").is_file() and (folder / "config.json").is_file()
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no staging left
    # Another hash is another copy: a changed base never loads a stale one.
    other = BaseModelRef(ref.base, ref.gguf_file, ref.package_version, "f" * 64)
    assert converted_folder(other) != folder


# -- the alignment model on the language model's description features -------------------------


@pytest.fixture(scope="module")
def features(
    base: tuple[Any, nn.Module], tmp_path_factory: pytest.TempPathFactory
) -> DescriptionFeatures:
    return description_features(tiny_catalog(), LlmSettings(), tmp_path_factory.mktemp("cache"),
                                loaded=base)  # fmt: skip


def test_description_features_are_frozen_lm_vectors_cached_on_disk(
    base: tuple[Any, nn.Module], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    catalog = tiny_catalog()
    first = description_features(catalog, LlmSettings(), tmp_path, loaded=base)
    width = int(base[1].get_input_embeddings().weight.shape[1])  # type: ignore[operator]
    assert first.matrix.shape == (len(SUMMARIES), 2 * width)  # own beside parent's
    own, parent = first.matrix[:, :width], first.matrix[:, width:]
    assert torch.allclose(own.norm(dim=1), torch.ones(len(SUMMARIES)), atol=1e-4)
    assert torch.equal(parent, parent[:1].expand_as(parent))  # one parent for all six
    assert first.base.sha256 == base_reference(LlmSettings().base, LlmSettings().gguf_file).sha256
    # The second call reads the disk cache: the language model is not loaded again.
    monkeypatch.setattr(
        "plugin.models.descriptions.load_language_model",
        lambda *_: pytest.fail("loaded the language model on a cache hit"),
    )
    again = description_features(catalog, LlmSettings(), tmp_path)
    assert torch.equal(again.matrix, first.matrix)


def test_lm_alignment_keeps_the_interface_and_trains_around_the_frozen_matrix(
    features: DescriptionFeatures,
) -> None:
    config = alignment_config(len(SUMMARIES), 2, "pointwise", features)
    assert config.features == "lm" and config.base == features.base.as_dict()
    labels = FeedbackLabels(
        histories=np.array([[c, (c + 3) % 6] for c in range(6)] * 2, dtype=np.int64),
        candidates=np.array([(c + 1) % 6 for c in range(6)] + [(c + 2) % 6 for c in range(6)]),
        labels=np.array([1.0] * 6 + [0.0] * 6, dtype=np.float32),
        support=np.full(12, 5),
        pairs=np.zeros((0, 2), dtype=np.int64),
        min_count=5,
    )
    models = load_settings(models={"alignment_steps": 60, "batch_size": 12}).models
    model, _ = train_alignment(labels, config, models, descriptions=features)
    assert "descriptions" not in dict(model.named_parameters())  # frozen: a buffer
    assert model.descriptions is not None
    assert torch.equal(model.descriptions, features.matrix)
    histories = torch.tensor([[0, 3], [2, -1], [-1, -1]])
    candidates = torch.tensor([[1, 2, -1], [3, 4, 5], [0, 1, 2]])
    with torch.inference_mode():
        scores = model(histories, candidates)
        assert scores.shape == (3, 3) and torch.isinf(scores[0, 2])
        learned = model(
            torch.from_numpy(labels.histories), torch.from_numpy(labels.candidates)[:, None]
        )
        assert learned[:6].mean() > learned[6:].mean()  # the labelled preference was learned
        # The scores go through the frozen matrix: other features, other scores.
        model.descriptions.copy_(features.matrix.flip(0))
        assert not torch.allclose(model(histories, candidates)[:, :2], scores[:, :2])
    with pytest.raises(ValueError, match="needs the descriptions"):
        train_alignment(labels, config, models)


def lm_version(features: DescriptionFeatures, root: Path) -> tuple[ModelRepository, int]:
    catalog = tiny_catalog()
    torch.manual_seed(3)
    novelty = NoveltyModel(
        NoveltyConfig(n_clusters=len(catalog), n_parents=1, parent_of=(0,) * len(catalog))
    )
    config = alignment_config(len(catalog), 2, "pointwise", features)
    alignment = AlignmentModel(config, features.matrix)
    repository = ModelRepository(root)
    manifest = {"catalog_version": catalog.version, "gate": {"passed": True, "reasons": []}}
    return repository, repository.write(novelty.eval(), alignment.eval(), manifest)


def test_an_lm_alignment_version_round_trips_plans_in_process_and_refuses_a_changed_base(
    features: DescriptionFeatures, tmp_path: Path
) -> None:
    repository, version = lm_version(features, tmp_path / "repo")
    weights = tmp_path / "repo" / "alignment" / str(version) / "weights.pt"
    saved = torch.load(weights, weights_only=True)
    assert torch.equal(saved["state_dict"]["descriptions"], features.matrix)
    assert weights.stat().st_size < 2_000_000  # the matrix, not a copy of the base model
    loaded = repository.load(version)
    histories = torch.tensor([[0, 3], [5, -1]])
    candidates = torch.tensor([[1, 2, 4], [0, 1, 2]])
    written = AlignmentModel(AlignmentConfig(**saved["config"]), features.matrix)
    written.load_state_dict(saved["state_dict"])
    with torch.inference_mode():
        assert torch.equal(
            loaded.alignment(histories, candidates), written.eval()(histories, candidates)
        )
    # The in-process planner serves it unchanged.
    settings = load_settings(models={"repository": tmp_path / "repo"})
    planner = best_of_n_planner(settings, tiny_catalog(), version)
    at = datetime(1998, 1, 1, tzinfo=UTC)
    requests = [PlanRequest(f"u{c}", (c, (c + 3) % 6), frozenset({c, (c + 3) % 6}), at)
                for c in range(6)]  # fmt: skip
    plans = planner.plan(requests, n=3)
    assert [p.cluster_id not in r.excluded for p, r in zip(plans, requests, strict=True)] == [
        True
    ] * 6
    # A changed base is refused with what to do.
    saved["config"]["base"]["sha256"] = "0" * 64
    torch.save(saved, weights)
    with pytest.raises(MissingPrerequisite, match="changed since this alignment model"):
        load_alignment(weights)
