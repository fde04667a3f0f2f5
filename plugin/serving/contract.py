"""The Triton models' I/O contract and per-request validation.

Nothing here imports Triton or torch: the backend shells (:mod:`plugin.serving.backend`) move
tensors in and out, the client (:mod:`plugin.adapters.triton_planner`) encodes and decodes the same
arrays, and the tests check both sides without a server.

The planner takes one **row** per plan request (a request may carry several rows):

============== ======= ====== =================================================================
name           dtype   dims   meaning
============== ======= ====== =================================================================
HISTORY        INT64   [-1]   the history, most recent first, -1 padded (at least one id)
EXCLUDED       INT64   [-1]   the user's novelty window, -1 padded (may be all -1)
N              INT32   [1]    candidates to sample, 1 .. number of clusters; 0: the version's n
TEMPERATURE    FP64    [1]    sampling temperature, finite and > 0 (FP64: exact); 0: the version's
SEED           INT64   [1]    base seed; each history is seeded by ``history_seed(SEED, h)``
CANDIDATES     INT64   [-1]   the first n clusters of the sampling order outside EXCLUDED
NOVELTY_LOGPROB FP32   [-1]   their novelty log-probabilities
ALIGNMENT_SCORE FP32   [-1]   their alignment scores
============== ======= ====== =================================================================

N=0 and TEMPERATURE=0 ask for the values the served version chose on its validation split
(``selection`` in its planner manifest): a client need not know which version will answer.
The version's weight of alignment against novelty is applied by the client, which learns the
served version from the response, to the returned scores.

Outputs are in sampling order and padded with -1 (candidates) and NaN (scores) to the widest
row of the request; a row has fewer than n candidates only when its window leaves fewer novel
clusters. The client picks the best of them with :func:`plugin.core.planning.best_of_n`, exactly as
:func:`plugin.core.planning.select` does in-process, so the two give identical plans. The
batch logic over the two models that fills these outputs is :mod:`plugin.serving.batch`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

NOVELTY_MODEL = "novelty"
# The LLM novelty model: the same contract as ``novelty``, its own Triton model so that its
# config (threads, batching delay, instance kind) does not slow the small id model.
NOVELTY_LLM_MODEL = "novelty_llm"
NOVELTY_MODELS = (NOVELTY_MODEL, NOVELTY_LLM_MODEL)
ALIGNMENT_MODEL = "alignment"
PLANNER_MODEL = "planner"
SERVED_MODELS = (NOVELTY_MODEL, NOVELTY_LLM_MODEL, ALIGNMENT_MODEL, PLANNER_MODEL)

# novelty: HISTORY -> LOG_PROBS [C]; alignment: HISTORY, CANDIDATES -> SCORES.
HISTORY = "HISTORY"
LOG_PROBS = "LOG_PROBS"
CANDIDATES = "CANDIDATES"
SCORES = "SCORES"
# planner
EXCLUDED = "EXCLUDED"
N = "N"
TEMPERATURE = "TEMPERATURE"
SEED = "SEED"
NOVELTY_LOGPROB = "NOVELTY_LOGPROB"
ALIGNMENT_SCORE = "ALIGNMENT_SCORE"
PLANNER_INPUTS = (HISTORY, EXCLUDED, N, TEMPERATURE, SEED)
PLANNER_OUTPUTS = (CANDIDATES, NOVELTY_LOGPROB, ALIGNMENT_SCORE)

PAD = -1
INT64_MAX = 2**63 - 1

IntArray = npt.NDArray[np.int64]


class RequestError(ValueError):
    """One request is invalid; the message says which row and input, and why."""


# -- validation ------------------------------------------------------------------------------


def _as_rows(name: str, array: npt.NDArray[Any], rows: int | None = None) -> npt.NDArray[Any]:
    if array.ndim != 2:
        raise RequestError(f"{name} must be [batch, width], got shape {list(array.shape)}")
    if rows is not None and array.shape[0] != rows:
        raise RequestError(f"{name} has {array.shape[0]} rows, HISTORY has {rows}")
    return array


def cluster_ids(
    name: str, array: npt.NDArray[Any], n_clusters: int, *, require_one: bool
) -> list[tuple[int, ...]]:
    """Each row's ids without the -1 padding; unknown ids and holes are errors."""
    rows: list[tuple[int, ...]] = []
    for index, row in enumerate(_as_rows(name, array).tolist()):
        ids = [int(v) for v in row]
        while ids and ids[-1] == PAD:
            ids.pop()
        bad = [v for v in ids if not 0 <= v < n_clusters]
        if bad:
            valid = f"cluster ids are 0..{n_clusters - 1}, padding is {PAD} at the end"
            raise RequestError(f"row {index}: unknown cluster id {bad[0]} in {name} ({valid})")
        if require_one and not ids:
            raise RequestError(f"row {index}: {name} is empty (at least one cluster id needed)")
        rows.append(tuple(ids))
    return rows


def padded_histories(array: npt.NDArray[Any], k: int, n_clusters: int) -> IntArray:
    """Validate a [b, w] history input and fit it to the model's K columns (``h[:K]``)."""
    cluster_ids(HISTORY, array, n_clusters, require_one=False)
    width = array.shape[1]
    fitted = np.full((array.shape[0], k), PAD, dtype=np.int64)
    fitted[:, : min(k, width)] = array[:, :k]
    return fitted


@dataclass(frozen=True)
class PlannerRow:
    """One validated plan request as the planner model sees it."""

    history: tuple[int, ...]
    excluded: frozenset[int]
    n: int
    temperature: float
    seed: int


def planner_rows(
    inputs: dict[str, npt.NDArray[Any]],
    n_clusters: int,
    default_n: int | None = None,
    default_temperature: float | None = None,
) -> list[PlannerRow]:
    """Validate one planner request's inputs; raises :class:`RequestError` naming the row.

    N=0 and TEMPERATURE=0 take ``default_n`` and ``default_temperature`` (the served
    version's chosen values) when given."""
    missing = [name for name in PLANNER_INPUTS if inputs.get(name) is None]
    if missing:
        raise RequestError(f"missing input(s) {', '.join(missing)}")
    histories = cluster_ids(HISTORY, inputs[HISTORY], n_clusters, require_one=True)
    rows = len(histories)
    excluded = cluster_ids(
        EXCLUDED, _as_rows(EXCLUDED, inputs[EXCLUDED], rows), n_clusters, require_one=False
    )
    ns = _as_rows(N, inputs[N], rows)
    temperatures = _as_rows(TEMPERATURE, inputs[TEMPERATURE], rows)
    seeds = _as_rows(SEED, inputs[SEED], rows)
    out = []
    for index in range(rows):
        n = int(ns[index, 0])
        if n == 0 and default_n is not None:
            n = min(default_n, n_clusters)
        if not 1 <= n <= n_clusters:
            raise RequestError(f"row {index}: N={n} is out of range (1..{n_clusters})")
        temperature = float(temperatures[index, 0])
        if temperature == 0 and default_temperature is not None:
            temperature = default_temperature
        if not (math.isfinite(temperature) and temperature > 0):
            raise RequestError(f"row {index}: TEMPERATURE={temperature} must be finite and > 0")
        seed = int(seeds[index, 0])
        out.append(PlannerRow(histories[index], frozenset(excluded[index]), n, temperature, seed))
    return out


# -- the planner's batch logic ---------------------------------------------------------------


@dataclass(frozen=True)
class SampledCandidates:
    """One row's answer: candidates in sampling order with both models' scores."""

    candidates: tuple[int, ...]
    novelty_log_probs: tuple[float, ...]
    alignment_scores: tuple[float, ...]


def pack_sampled(
    sampled: Sequence[SampledCandidates],
) -> tuple[IntArray, npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """The planner's three outputs for one request's rows, padded to the widest row.

    At least one column, all padding when no row has a candidate: zero-size tensors are
    not worth the risk at the DLPack boundary.
    """
    width = max([1, *(len(s.candidates) for s in sampled)])
    candidates = np.full((len(sampled), width), PAD, dtype=np.int64)
    log_probs = np.full((len(sampled), width), np.nan, dtype=np.float32)
    scores = np.full((len(sampled), width), np.nan, dtype=np.float32)
    for row, s in enumerate(sampled):
        size = len(s.candidates)
        candidates[row, :size] = s.candidates
        log_probs[row, :size] = s.novelty_log_probs
        scores[row, :size] = s.alignment_scores
    return candidates, log_probs, scores


# -- the client's side -----------------------------------------------------------------------


def pad_rows(rows: Sequence[Sequence[int]], min_width: int = 1) -> IntArray:
    """Ragged id lists as a [b, w] int64 array padded with -1."""
    width = max([min_width, *(len(r) for r in rows)])
    out = np.full((len(rows), width), PAD, dtype=np.int64)
    for index, row in enumerate(rows):
        out[index, : len(row)] = list(row)
    return out


def planner_inputs(
    histories: Sequence[Sequence[int]],
    excluded: Sequence[Sequence[int]],
    n: int,
    temperature: float,
    seed: int,
) -> dict[str, npt.NDArray[Any]]:
    """The arrays of one planner request (one row per history); n=0 and temperature=0 ask
    for the served version's chosen values."""
    if not 0 <= seed <= INT64_MAX:
        raise ValueError(f"seed {seed} does not fit the planner's INT64 SEED input")
    rows = len(histories)
    return {
        HISTORY: pad_rows(histories),
        EXCLUDED: pad_rows([sorted(e) for e in excluded]),
        N: np.full((rows, 1), n, dtype=np.int32),
        TEMPERATURE: np.full((rows, 1), temperature, dtype=np.float64),
        SEED: np.full((rows, 1), seed, dtype=np.int64),
    }


def unpack_sampled(
    candidates: npt.NDArray[Any], log_probs: npt.NDArray[Any], scores: npt.NDArray[Any]
) -> list[SampledCandidates]:
    """The planner's outputs back into one :class:`SampledCandidates` per row."""
    out = []
    for c_row, lp_row, s_row in zip(
        candidates.tolist(), log_probs.tolist(), scores.tolist(), strict=True
    ):
        size = sum(1 for c in c_row if c != PAD)
        out.append(
            SampledCandidates(
                tuple(int(c) for c in c_row[:size]),
                tuple(float(v) for v in lp_row[:size]),
                tuple(float(v) for v in s_row[:size]),
            )
        )
    return out


def triton_dtype(array: npt.NDArray[Any]) -> str:
    """Triton's name for an array's dtype (the ones this contract uses)."""
    names = {"int64": "INT64", "int32": "INT32", "float32": "FP32", "float64": "FP64"}
    try:
        return names[array.dtype.name]
    except KeyError:
        raise ValueError(f"no Triton dtype for {array.dtype}") from None
