"""Numbered model versions under ``model_repository/<model>/<version>/``.

The novelty and alignment models are versioned in lockstep: ``explore train`` writes both
under the same number, so "version 3" names one consistent planner. Each version directory
holds ``weights.pt`` (config + state dict) and ``manifest.json`` (data hash, catalog hash,
metrics, gate). Weights are build outputs: git-ignored and reproducible from ``explore train``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from plugin.models.alignment import AlignmentConfig, AlignmentModel
from plugin.models.novelty import NoveltyConfig, NoveltyModel

NOVELTY = "novelty"
ALIGNMENT = "alignment"
WEIGHTS = "weights.pt"
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class ModelVersion:
    """Both models of one version, with the manifest they were written with."""

    version: int
    novelty: NoveltyModel
    alignment: AlignmentModel
    manifest: dict[str, Any]

    @property
    def label(self) -> str:
        """What plans record as their model version."""
        return f"best-of-n-v{self.version}-{self.manifest.get('catalog_version', '')[:8]}"


class ModelRepository:
    """Reads and writes numbered versions of the two models."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def versions(self, model: str = NOVELTY) -> list[int]:
        """Complete versions (with a manifest) of one model, ascending."""
        folder = self.root / model
        if not folder.is_dir():
            return []
        return sorted(
            int(p.name)
            for p in folder.iterdir()
            if p.name.isdigit() and (p / MANIFEST).exists() and (p / WEIGHTS).exists()
        )

    def next_version(self) -> int:
        existing = self.versions(NOVELTY) + self.versions(ALIGNMENT)
        highest = max(
            (
                int(p.name)
                for m in (NOVELTY, ALIGNMENT)
                for p in (self.root / m).glob("[0-9]*")
                if p.name.isdigit()
            ),
            default=0,
        )
        return max([highest, *existing]) + 1

    def manifest(self, version: int, model: str = NOVELTY) -> dict[str, Any]:
        path = self.root / model / str(version) / MANIFEST
        try:
            loaded: dict[str, Any] = json.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no such model version; run `explore train`") from None
        return loaded

    def write(
        self,
        novelty: NoveltyModel,
        alignment: AlignmentModel,
        manifest: dict[str, Any],
        version: int | None = None,
    ) -> int:
        """Write both models as a new version; the manifest goes last, marking it complete."""
        number = self.next_version() if version is None else version
        for name, model, config in (
            (NOVELTY, novelty, novelty.config.as_dict()),
            (ALIGNMENT, alignment, alignment.config.as_dict()),
        ):
            folder = self.root / name / str(number)
            folder.mkdir(parents=True, exist_ok=True)
            torch.save({"config": config, "state_dict": model.state_dict()}, folder / WEIGHTS)
            (folder / MANIFEST).write_text(
                json.dumps({**manifest, "model": name, "version": number}, indent=2, default=str)
            )
        return number

    def load(self, version: int | None = None) -> ModelVersion:
        """Load a version of both models (the newest complete one by default)."""
        if version is None:
            available = sorted(set(self.versions(NOVELTY)) & set(self.versions(ALIGNMENT)))
            if not available:
                raise FileNotFoundError(f"{self.root}: no trained models; run `explore train`")
            version = available[-1]
        return ModelVersion(
            version=version,
            novelty=load_novelty(self.root / NOVELTY / str(version) / WEIGHTS),
            alignment=load_alignment(self.root / ALIGNMENT / str(version) / WEIGHTS),
            manifest=self.manifest(version),
        )


def load_novelty(path: Path) -> NoveltyModel:
    saved = torch.load(path, weights_only=True)
    config = dict(saved["config"])
    config["parent_of"] = tuple(config["parent_of"])
    model = NoveltyModel(NoveltyConfig(**config))
    model.load_state_dict(saved["state_dict"])
    return model.eval()


def load_alignment(path: Path) -> AlignmentModel:
    saved = torch.load(path, weights_only=True)
    model = AlignmentModel(AlignmentConfig(**saved["config"]))
    model.load_state_dict(saved["state_dict"])
    return model.eval()
