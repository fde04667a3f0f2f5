"""The LLM novelty model on the real SmolLM2-135M weights, in a tiny configuration.

The base model is loaded once for the module (about 30 s on two cores); each test wraps a
fresh copy of it, since LoRA adapters go into the model they wrap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from plugin.core.moves import NovelMove
from plugin.models.llm import (
    BaseModelRef,
    ConstraintError,
    base_reference,
    constrained_log_probs,
    converted_folder,
    load_llm_novelty,
)
from plugin.models.llm_training import train_llm_novelty
from plugin.models.training import quality_gate
from plugin.settings import LlmSettings
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
