"""Feast profiles for side-by-side runs: the repo's Redis profile (the fast online store) and
the same repo on Feast's standard ``type: redis`` store (the SDK write and read path)."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from plugin.settings import Settings

REDIS_PROFILE = "feature_store.redis.yaml"


def standard_redis_repo(source: Path, destination: Path) -> Path:
    """A copy of the Feast repo at ``source`` whose Redis profile uses Feast's own store."""
    destination.mkdir(parents=True, exist_ok=True)
    for name in ("features.py", "feature_store.yaml"):
        shutil.copy2(source / name, destination / name)
    document = yaml.safe_load((source / REDIS_PROFILE).read_text())
    document["online_store"]["type"] = "redis"
    (destination / REDIS_PROFILE).write_text(yaml.safe_dump(document, sort_keys=False))
    return destination


def on_redis(
    settings: Settings, registry: Path, standard: bool = False, db: int | None = None
) -> Settings:
    """``settings`` on the Redis online store with its own registry (and Redis ``db``);
    ``standard`` switches to Feast's standard Redis store (a repo copy next to the registry)."""
    feast_update: dict[str, object] = {"online_store": "redis", "registry_path": registry}
    if standard:
        feast_update["repo_path"] = standard_redis_repo(
            settings.feast.repo_path, registry.parent / "standard-repo"
        )
    update: dict[str, object] = {"feast": settings.feast.model_copy(update=feast_update)}
    if db is not None:
        update["redis"] = settings.redis.model_copy(update={"db": db})
    return settings.model_copy(update=update)
