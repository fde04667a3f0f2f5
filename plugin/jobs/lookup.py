"""A ranker's view of users' plans, read from Feast (``explore lookup``)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from plugin.adapters.feast_store import FeastStore
from plugin.jobs.prerequisites import require_online_store
from plugin.settings import Settings


def lookup(settings: Settings, user_ids: Sequence[str]) -> list[dict[str, Any]]:
    """``explore lookup``: the users' plans from the configured online store, once it is
    reachable and has a registry."""
    require_online_store(settings)
    return lookup_plans(FeastStore(settings), user_ids)


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
        history_text = [readable(clusters.get(cid, {}), cid) for cid in history]
        rows.append(
            {
                "user_id": plan["user_id"],
                "history": history,
                "history_descriptions": history_text,
                "cluster_id": int(plan["cluster_id"]),
                "description": plan["description"],
                "summary": readable(cluster, int(plan["cluster_id"])),
                "candidates": list(plan["candidates"] or []),
                "scores": [round(float(s), 4) for s in plan["scores"] or []],
                "model_version": plan["model_version"],
                "top_items": list(cluster.get("top_items") or []),
                "top_titles": list(cluster.get("top_titles") or []),
            }
        )
    return rows


def readable(cluster: dict[str, Any], cluster_id: int) -> str:
    """A cluster's readable summary; its keywords for a store written before summaries; its
    id when the store has no row for it."""
    return str(cluster.get("summary") or cluster.get("description") or cluster_id)


def natural_order(user_id: str) -> tuple[int, str]:
    """Sort key: numeric ids by value ("2" before "10"), then the others by name."""
    return (int(user_id), "") if user_id.isdigit() else (sys.maxsize, user_id)
