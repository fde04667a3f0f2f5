"""The planner's I/O contract without a server: validation, batch logic, encoding round trip."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from plugin.core.planning import best_of_n
from plugin.models.repository import TEMPLATES
from plugin.serving.batch import sample_rows
from plugin.serving.contract import (
    EXCLUDED,
    HISTORY,
    SEED,
    TEMPERATURE,
    N,
    PlannerRow,
    RequestError,
    SampledCandidates,
    pack_sampled,
    padded_histories,
    planner_inputs,
    planner_rows,
    unpack_sampled,
)
from plugin.serving.control import model_config_json
from tests.support.serving import CLUSTERS, in_process, request


def inputs(**changes: Any) -> dict[str, Any]:
    arrays = planner_inputs([(3, 5), (7,)], [(3, 5), (7, 1)], n=4, temperature=1.5, seed=7)
    arrays.update(changes)
    return arrays


def test_valid_rows_strip_padding_and_keep_parameters() -> None:
    rows = planner_rows(inputs(), n_clusters=48)
    assert rows == [
        PlannerRow((3, 5), frozenset({3, 5}), 4, 1.5, 7),
        PlannerRow((7,), frozenset({1, 7}), 4, 1.5, 7),
    ]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({HISTORY: np.array([[3, 5], [48, -1]])}, "row 1: unknown cluster id 48 in HISTORY"),
        ({HISTORY: np.array([[3, 5], [-1, -1]])}, "row 1: HISTORY is empty"),
        ({HISTORY: np.array([[3, 5], [-1, 4]])}, "row 1: unknown cluster id -1 in HISTORY"),
        ({EXCLUDED: np.array([[3, 5], [99, -1]])}, "row 1: unknown cluster id 99 in EXCLUDED"),
        ({N: np.array([[4], [0]], dtype=np.int32)}, r"row 1: N=0 is out of range \(1..48\)"),
        ({N: np.array([[49], [4]], dtype=np.int32)}, "row 0: N=49 is out of range"),
        ({TEMPERATURE: np.array([[1.5], [0.0]])}, "row 1: TEMPERATURE=0.0 must be finite"),
        ({TEMPERATURE: np.array([[np.nan], [1.0]])}, "row 0: TEMPERATURE=nan"),
        ({SEED: np.array([[7]])}, "SEED has 1 rows, HISTORY has 2"),
        ({HISTORY: np.array([3, 5])}, r"HISTORY must be \[batch, width\]"),
    ],
)
def test_each_bad_input_is_named(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(RequestError, match=message):
        planner_rows(inputs(**changes), n_clusters=48)


def test_missing_inputs_are_named() -> None:
    arrays = inputs()
    del arrays[SEED], arrays[N]
    with pytest.raises(RequestError, match="missing input"):
        planner_rows(arrays, n_clusters=48)


def test_histories_are_fitted_to_k_like_the_in_process_planner() -> None:
    wide = np.array([[1, 2, 3], [4, -1, -1]])
    assert padded_histories(wide, 2, 48).tolist() == [[1, 2], [4, -1]]
    assert padded_histories(np.array([[9]]), 2, 48).tolist() == [[9, -1]]


def test_sample_rows_matches_the_in_process_planner() -> None:
    planner = in_process(seed=1, version=1, n=5)
    requests = [
        request("a", (3, 5)),
        request("b", (3, 5), {3, 5, 1, 2, 40}),  # same history, other window
        request("c", (7,)),
        request("d", (9, 8, 7)),  # longer than K: the seed uses the whole tuple
        request("e", (11, 12), set(range(CLUSTERS)) - {30, 31}),  # 2 novel left
    ]
    rows = [PlannerRow(r.history, r.excluded, 5, 1.5, 7) for r in requests]
    sampled = sample_rows(rows, planner.novelty, planner.alignment, history_length=2)
    via_contract = [
        best_of_n(r, s.candidates, s.alignment_scores, planner.model_version)
        for r, s in zip(requests, sampled, strict=True)
    ]
    assert via_contract == planner.plan(requests)
    assert len(sampled[4].candidates) == 2


def test_rows_at_two_temperatures_are_sampled_at_their_own() -> None:
    planner = in_process(seed=1, version=1)
    hot, cold = PlannerRow((3,), frozenset(), 48, 5.0, 7), PlannerRow((3,), frozenset(), 48, 0.2, 7)
    mixed = sample_rows([hot, cold], planner.novelty, planner.alignment, 2)
    alone = sample_rows([cold], planner.novelty, planner.alignment, 2)
    assert mixed[1] == alone[0]
    assert mixed[0].candidates != mixed[1].candidates


def test_outputs_round_trip_with_padding() -> None:
    sampled = [
        SampledCandidates((4, 2, 9), (-1.0, -2.0, -3.0), (0.5, 0.25, 0.125)),
        SampledCandidates((), (), ()),
    ]
    candidates, log_probs, scores = pack_sampled(sampled)
    assert candidates.tolist() == [[4, 2, 9], [-1, -1, -1]]
    assert np.isnan(scores[1]).all()
    assert unpack_sampled(candidates, log_probs, scores) == sampled
    # An all-empty batch still has one (padding) column.
    assert pack_sampled([SampledCandidates((), (), ())])[0].shape == (1, 1)


def test_inputs_encode_the_exact_temperature_and_seed() -> None:
    arrays = planner_inputs([(1,)], [()], n=3, temperature=1.3, seed=2**40)
    assert arrays[TEMPERATURE].dtype == np.float64 and arrays[TEMPERATURE][0, 0] == 1.3
    assert arrays[SEED][0, 0] == 2**40
    assert arrays[EXCLUDED].tolist() == [[-1]]
    with pytest.raises(ValueError, match="INT64"):
        planner_inputs([(1,)], [()], n=3, temperature=1.0, seed=2**64)


@pytest.mark.parametrize("model", ["novelty", "alignment", "planner"])
def test_tracked_configs_are_complete_and_get_a_specific_version_policy(model: str) -> None:
    import json

    config = json.loads(model_config_json(model, [3, 2, 3], TEMPLATES))
    assert config["name"] == model
    assert config["backend"] == "python"
    assert int(config["maxBatchSize"]) >= 64
    assert int(config["dynamicBatching"]["maxQueueDelayMicroseconds"]) <= 200
    # protobuf's JSON writes int64 as strings; Triton reads them back as numbers.
    assert config["versionPolicy"] == {"specific": {"versions": ["2", "3"]}}
    assert all("dataType" in tensor for tensor in config["input"] + config["output"])
