"""The embedded demo (``explore demo``): clusters, models trained when none fit, and a replay
of the dataset into a fresh online store of its own."""

from __future__ import annotations

import shutil
from typing import Any

from plugin.jobs import prerequisites
from plugin.jobs.replay import replay_dataset
from plugin.jobs.train import ensure_trained
from plugin.settings import Settings


def run_demo(
    settings: Settings, limit: int | None = None, progress: bool = False
) -> dict[str, Any]:
    """Replay the dataset (its first ``limit`` events) with the configured planner into an
    empty store under ``<var_dir>/demo``; best-of-n plans with the newest gated version of this
    catalog and data, trained first when there is none. Returns the replay's summary."""
    # An empty online store of its own: state is idempotent, so a second replay into the same
    # store would (correctly) skip every event as already applied.
    demo_dir = settings.var_dir / "demo"
    shutil.rmtree(demo_dir, ignore_errors=True)
    if settings.feast.online_store == "sqlite":
        feast = settings.feast.model_copy(
            update={
                "sqlite_path": demo_dir / "online_store.db",
                "registry_path": demo_dir / "registry.db",
            }
        )
        settings = settings.model_copy(update={"feast": feast})
    workspace = prerequisites.workspace(settings, progress=progress)
    version = None
    if settings.planner.kind == "best-of-n":
        version = ensure_trained(settings, workspace, progress)
    return replay_dataset(
        settings, limit, samples=5, progress=progress, version=version, workspace=workspace
    )
