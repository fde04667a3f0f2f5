"""The BLS planner's batch logic: a batch of planner rows through the two models at once.

The backend (:class:`plugin.serving.backend.PlannerBackend`) calls it with proxies that forward
to the Triton novelty and alignment models; tests call it with the in-process models.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from plugin.models.alignment import AlignmentModel
from plugin.models.novelty import NoveltyModel, history_seed
from plugin.models.planner import histories_tensor, rank_histories
from plugin.serving.contract import PlannerRow, SampledCandidates


def sample_rows(
    rows: Sequence[PlannerRow],
    novelty: NoveltyModel | Any,
    alignment: AlignmentModel | Any,
    history_length: int,
) -> list[SampledCandidates]:
    """Plan a whole batch: one ``rank_histories`` pass per distinct temperature.

    ``novelty`` and ``alignment`` are the in-process models or anything with the same call
    surface (``cluster_log_probs(histories)`` and ``__call__(histories, candidates)``), such as
    the BLS proxies that forward to the Triton models. Distinct (history, seed) pairs are
    ranked once; each row then keeps the first ``n`` clusters outside its window.
    """
    results: list[SampledCandidates | None] = [None] * len(rows)
    by_temperature: dict[float, list[int]] = {}
    for index, row in enumerate(rows):
        by_temperature.setdefault(row.temperature, []).append(index)
    for temperature, indices in by_temperature.items():
        keys = list(dict.fromkeys((rows[i].history, rows[i].seed) for i in indices))
        order, log_probs, scores = rank_histories(
            cast(NoveltyModel, novelty),
            cast(AlignmentModel, alignment),
            histories_tensor([history for history, _ in keys], history_length),
            temperature,
            [history_seed(seed, history) for history, seed in keys],
        )
        position = {key: i for i, key in enumerate(keys)}
        order_rows, lp_rows, score_rows = order.tolist(), log_probs.tolist(), scores.tolist()
        for i in indices:
            row = rows[i]
            at = position[(row.history, row.seed)]
            novel = [j for j, cluster in enumerate(order_rows[at]) if cluster not in row.excluded]
            kept = novel[: row.n]
            results[i] = SampledCandidates(
                tuple(order_rows[at][j] for j in kept),
                tuple(lp_rows[at][j] for j in kept),
                tuple(score_rows[at][j] for j in kept),
            )
    return [r for r in results if r is not None]
