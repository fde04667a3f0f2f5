"""The Triton Python-backend models: novelty (id or LLM), alignment, and the BLS planner.

Each version directory's ``model.py`` is a one-line shell that imports a class from here, so
the model code is the same code the in-process planner runs (``plugin.models``) and the
batch logic is :mod:`plugin.serving.contract`. This module runs inside Triton's Python stub:
``triton_python_backend_utils`` only exists there, so it is imported in ``initialize``.

Rules every model here follows (see DESIGN.md, Triton field notes):

* tensors cross the stub boundary with DLPack (its numpy path returns empty outputs under
  numpy 2), torch's ``to_dlpack`` on the way out;
* each request is validated on its own and a bad one gets its own error response; an
  exception escaping ``execute`` would fail every request batched with it, so none does;
* all valid requests of a batch go through the network in one forward pass.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor
from torch.utils.dlpack import from_dlpack, to_dlpack

from plugin.models.llm import pick_device
from plugin.models.repository import MANIFEST, NOVELTY, WEIGHTS, load_alignment, load_novelty
from plugin.serving.batch import sample_rows
from plugin.serving.contract import (
    ALIGNMENT_MODEL,
    ALIGNMENT_SCORE,
    CANDIDATES,
    HISTORY,
    LOG_PROBS,
    NOVELTY_LOGPROB,
    NOVELTY_MODEL,
    PAD,
    PLANNER_INPUTS,
    SCORES,
    PlannerRow,
    RequestError,
    pack_sampled,
    padded_histories,
    planner_rows,
)

log = logging.getLogger(__name__)


class SubModelError(RuntimeError):
    """A BLS call from the planner to novelty or alignment failed."""


def _text_parameter(args: dict[str, str], name: str, default: str) -> str:
    """A ``parameters { key: name ... }`` entry of the model config."""
    config = json.loads(args.get("model_config", "{}"))
    value = config.get("parameters", {}).get(name, {}).get("string_value")
    return str(value) if value else default


def _parameter(args: dict[str, str], name: str, default: int) -> int:
    """An integer ``parameters { key: name ... }`` entry of the model config."""
    return int(_text_parameter(args, name, str(default)))


def _pb_utils() -> Any:
    import triton_python_backend_utils as pb_utils  # only inside Triton's Python stub

    return pb_utils


class _Backend:
    """What every model here shares: args, input reading, outputs and error responses."""

    def initialize(self, args: dict[str, str]) -> None:
        self.pb = _pb_utils()
        self.name = args["model_name"]
        self.version = int(args["model_version"])
        self.folder = Path(args["model_repository"]) / str(self.version)
        # Triton runs one stub process per model instance. Intra-op threads in three stubs
        # beside the server oversubscribe a small CPU box, and torch's spinning workers then
        # run 10-25x slower; one thread per stub unless the config says otherwise.
        self.threads = _parameter(args, "torch_threads", 1)
        torch.set_num_threads(self.threads)
        self.device = _text_parameter(args, "device", "cpu")
        self.load()

    def load(self) -> None:
        raise NotImplementedError

    def execute(self, requests: list[Any]) -> list[Any]:
        try:
            return self.run(requests)
        except Exception as exc:  # never let one failure escape: it would fail the batch
            log.exception("%s v%s: execute failed", self.name, self.version)
            message = f"{self.name} version {self.version}: internal error: {exc!r}"
            return [self.error(message, unavailable=True) for _ in requests]

    def run(self, requests: list[Any]) -> list[Any]:
        raise NotImplementedError

    def finalize(self) -> None:
        """Nothing to release: the models are plain in-memory torch modules."""

    # -- helpers -------------------------------------------------------------------------

    def array(self, request: Any, name: str) -> npt.NDArray[Any] | None:
        tensor = self.pb.get_input_tensor_by_name(request, name)
        if tensor is None:
            return None
        return from_dlpack(tensor.to_dlpack()).numpy().copy()

    def required(self, request: Any, name: str) -> npt.NDArray[Any]:
        array = self.array(request, name)
        if array is None:
            raise RequestError(f"missing input {name}")
        return array

    def output(self, name: str, array: npt.NDArray[Any] | Tensor) -> Any:
        tensor = torch.as_tensor(array).contiguous()
        return self.pb.Tensor.from_dlpack(name, to_dlpack(tensor))

    def error(self, message: str, unavailable: bool = False) -> Any:
        code = "UNAVAILABLE" if unavailable else "INVALID_ARG"
        error_type = self.pb.TritonError
        try:
            error = error_type(message, getattr(error_type, code))
        except (AttributeError, TypeError):  # stubs older than error codes
            error = error_type(message)
        return self.pb.InferenceResponse(output_tensors=[], error=error)

    def invalid(self, exc: RequestError) -> Any:
        return self.error(f"{self.name} version {self.version}: {exc}")


def _split(tensor: Tensor, sizes: list[int]) -> list[Tensor]:
    return list(torch.split(tensor, sizes)) if sizes else []


class NoveltyBackend(_Backend):
    """``HISTORY`` [b, w] -> ``LOG_PROBS`` [b, C]: the constrained decoder, batch-merged."""

    def load(self) -> None:
        self.model = load_novelty(self.folder / WEIGHTS)
        self.k = self.model.config.history_length
        self.clusters = self.model.config.n_clusters

    def run(self, requests: list[Any]) -> list[Any]:
        parsed: list[npt.NDArray[np.int64] | RequestError] = []
        for request in requests:
            try:
                parsed.append(
                    padded_histories(self.required(request, HISTORY), self.k, self.clusters)
                )
            except RequestError as exc:
                parsed.append(exc)
        valid = [p for p in parsed if not isinstance(p, RequestError)]
        outputs: list[Tensor] = []
        if valid:
            with torch.inference_mode():
                merged = torch.from_numpy(np.concatenate(valid))
                outputs = _split(self.model.cluster_log_probs(merged), [len(v) for v in valid])
        responses, results = [], iter(outputs)
        for item in parsed:
            if isinstance(item, RequestError):
                responses.append(self.invalid(item))
            else:
                log_probs = self.output(LOG_PROBS, next(results))
                responses.append(self.pb.InferenceResponse(output_tensors=[log_probs]))
        return responses


class LlmNoveltyBackend(NoveltyBackend):
    """The ``novelty_llm`` model: :class:`NoveltyBackend` over a language model.

    Its trained tensors are the version's ``novelty/<version>/weights.pt`` (the repository
    keeps one copy); the base model is loaded from its installed package, offline and checked
    by content hash, on the config's ``device`` (``auto``: CUDA when present)."""

    def load(self) -> None:
        weights = self.folder.parent.parent / NOVELTY / str(self.version) / WEIGHTS
        self.model = load_novelty(weights, pick_device(self.device), self.threads)
        self.k = self.model.config.history_length
        self.clusters = self.model.config.n_clusters


class AlignmentBackend(_Backend):
    """``HISTORY`` [b, w], ``CANDIDATES`` [b, m] -> ``SCORES`` [b, m], batch-merged."""

    def load(self) -> None:
        self.model = load_alignment(self.folder / WEIGHTS)
        self.k = self.model.config.history_length
        self.clusters = self.model.config.n_clusters

    def parse(self, request: Any) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        histories = padded_histories(self.required(request, HISTORY), self.k, self.clusters)
        candidates = self.required(request, CANDIDATES).astype(np.int64)
        if candidates.ndim != 2 or len(candidates) != len(histories):
            raise RequestError(
                f"{CANDIDATES} must be [batch, m] with one row per {HISTORY} row, "
                f"got shape {list(candidates.shape)}"
            )
        bad = candidates[(candidates < PAD) | (candidates >= self.clusters)]
        if bad.size:
            raise RequestError(
                f"unknown cluster id {int(bad[0])} in {CANDIDATES} "
                f"(cluster ids are 0..{self.clusters - 1}, -1 means none)"
            )
        return histories, candidates

    def run(self, requests: list[Any]) -> list[Any]:
        parsed: list[tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]] | RequestError] = []
        for request in requests:
            try:
                parsed.append(self.parse(request))
            except RequestError as exc:
                parsed.append(exc)
        valid = [p for p in parsed if not isinstance(p, RequestError)]
        outputs: list[Tensor] = []
        if valid:
            # Pad every request's candidates to the widest; padding scores -inf and is cut off.
            width = max(c.shape[1] for _, c in valid)
            candidates = np.full((sum(len(h) for h, _ in valid), width), PAD, dtype=np.int64)
            row = 0
            for _, c in valid:
                candidates[row : row + len(c), : c.shape[1]] = c
                row += len(c)
            histories = np.concatenate([h for h, _ in valid])
            with torch.inference_mode():
                scores = self.model(torch.from_numpy(histories), torch.from_numpy(candidates))
            outputs = [
                part[:, : c.shape[1]]
                for part, (_, c) in zip(
                    _split(scores, [len(h) for h, _ in valid]), valid, strict=True
                )
            ]
        responses, results = [], iter(outputs)
        for item in parsed:
            if isinstance(item, RequestError):
                responses.append(self.invalid(item))
            else:
                scores_out = self.output(SCORES, next(results))
                responses.append(self.pb.InferenceResponse(output_tensors=[scores_out]))
        return responses


class _RemoteModel:
    """Forwards a model call to another Triton model (BLS), tensors via DLPack."""

    def __init__(self, pb: Any, model: str, version: int) -> None:
        self.pb = pb
        self.model = model
        self.version = version

    def infer(self, inputs: dict[str, Tensor], output: str) -> Tensor:
        request = self.pb.InferenceRequest(
            model_name=self.model,
            model_version=self.version,
            requested_output_names=[output],
            inputs=[
                self.pb.Tensor.from_dlpack(name, to_dlpack(t.contiguous()))
                for name, t in inputs.items()
            ],
        )
        response = request.exec()
        if response.has_error():
            raise SubModelError(
                f"{self.model} version {self.version}: {response.error().message()}"
            )
        tensor = self.pb.get_output_tensor_by_name(response, output)
        if tensor is None:
            raise SubModelError(f"{self.model} version {self.version} returned no {output}")
        # Copy: the response owns the memory and goes away when this call returns.
        return from_dlpack(tensor.to_dlpack()).clone()


class RemoteNovelty(_RemoteModel):
    """The ``novelty`` Triton model with :class:`NoveltyModel`'s call surface."""

    def cluster_log_probs(self, histories: Tensor) -> Tensor:
        return self.infer({HISTORY: histories}, LOG_PROBS)


class RemoteAlignment(_RemoteModel):
    """The ``alignment`` Triton model with :class:`AlignmentModel`'s call surface."""

    def __call__(self, histories: Tensor, candidates: Tensor) -> Tensor:
        return self.infer({HISTORY: histories, CANDIDATES: candidates}, SCORES)


class PlannerBackend(_Backend):
    """Best-of-n sampling for a batch of plan rows, over remote novelty and alignment.

    Planner version v calls the novelty model its manifest names (``novelty`` or
    ``novelty_llm``) and alignment at the versions the manifest names (v itself: versions move
    in lockstep). The whole batch costs one novelty call and one
    alignment call per distinct temperature (one in practice).
    """

    def load(self) -> None:
        manifest = json.loads((self.folder / MANIFEST).read_text())
        self.clusters = int(manifest["n_clusters"])
        self.k = int(manifest["history_length"])
        # What N=0 and TEMPERATURE=0 mean: the values the version chose (absent: the request
        # must name them).
        chosen = manifest.get("selection") or {}
        self.default_n = int(chosen["n"]) if "n" in chosen else None
        self.default_temperature = float(chosen["temperature"]) if "temperature" in chosen else None
        # The novelty model the version names: ``novelty`` (id) or ``novelty_llm``.
        novelty_model = str(manifest.get("novelty_model", NOVELTY_MODEL))
        self.novelty = RemoteNovelty(self.pb, novelty_model, int(manifest["novelty_version"]))
        self.alignment = RemoteAlignment(
            self.pb, ALIGNMENT_MODEL, int(manifest["alignment_version"])
        )

    def parse(self, request: Any) -> list[PlannerRow]:
        inputs = {name: self.array(request, name) for name in PLANNER_INPUTS}
        return planner_rows(
            {name: array for name, array in inputs.items() if array is not None},
            self.clusters,
            self.default_n,
            self.default_temperature,
        )

    def run(self, requests: list[Any]) -> list[Any]:
        parsed: list[list[PlannerRow] | RequestError] = []
        for request in requests:
            try:
                parsed.append(self.parse(request))
            except RequestError as exc:
                parsed.append(exc)
        rows = [row for p in parsed if not isinstance(p, RequestError) for row in p]
        try:
            sampled = sample_rows(rows, self.novelty, self.alignment, self.k) if rows else []
        except SubModelError as exc:
            failure = f"{self.name} version {self.version}: {exc}"
            return [
                self.invalid(p) if isinstance(p, RequestError) else self.error(failure, True)
                for p in parsed
            ]
        responses, at = [], 0
        for item in parsed:
            if isinstance(item, RequestError):
                responses.append(self.invalid(item))
                continue
            candidates, log_probs, scores = pack_sampled(sampled[at : at + len(item)])
            at += len(item)
            responses.append(
                self.pb.InferenceResponse(
                    output_tensors=[
                        self.output(CANDIDATES, candidates),
                        self.output(NOVELTY_LOGPROB, log_probs),
                        self.output(ALIGNMENT_SCORE, scores),
                    ]
                )
            )
        return responses
