"""A ranker's view of users' plans, read from Feast (``explore lookup``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from plugin.adapters.feast_store import FeastStore


def lookup_plans(store: FeastStore, user_ids: Sequence[str]) -> list[dict[str, Any]]:
    """Each user's plan joined with the planned cluster's items, as a ranker would see it."""
    plans = store.read_plan_rows(list(user_ids))
    wanted = sorted(
        {int(p["cluster_id"]) for p in plans if p["cluster_id"] is not None}
        | {int(c) for p in plans for c in p["history"] or ()}
    )
    clusters = {int(c["cluster_id"]): c for c in store.read_clusters(wanted)}
    rows = []
    for plan in plans:
        if plan["cluster_id"] is None:
            rows.append({"user_id": plan["user_id"], "plan": None})
            continue
        cluster = clusters.get(int(plan["cluster_id"]), {})
        history = list(plan["history"] or [])
        history_text = [clusters.get(cid, {}).get("description") or str(cid) for cid in history]
        rows.append(
            {
                "user_id": plan["user_id"],
                "history": history,
                "history_descriptions": history_text,
                "cluster_id": int(plan["cluster_id"]),
                "description": plan["description"],
                "candidates": list(plan["candidates"] or []),
                "scores": [round(float(s), 4) for s in plan["scores"] or []],
                "model_version": plan["model_version"],
                "top_items": list(cluster.get("top_items") or []),
                "top_titles": list(cluster.get("top_titles") or []),
            }
        )
    return rows
