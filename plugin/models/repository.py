"""Numbered model versions under ``model_repository/<model>/<version>/``.

The novelty and alignment models are versioned in lockstep: ``explore train`` writes both
under the same number, so "version 3" names one consistent planner. Each version directory
holds ``weights.pt`` (config + state dict) and ``manifest.json`` (data hash, catalog hash,
metrics, gate). Weights are build outputs: git-ignored and reproducible from ``explore train``.

**Publishing** makes a version the one that serves: only a version whose quality gate passed,
and only through :meth:`ModelRepository.publish`, which places Triton's thin ``model.py``
shells (tracked templates ``model_repository/<model>/model.py``) into the version directories,
writes the planner's version directory, and moves the pointer ``published.json``
(git-ignored). The pointer keeps the previously published versions for rollback; the
in-process planner serves the published version too, so "published" means the same thing
with or without Triton.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from plugin.core.catalog import ClusterCatalog
from plugin.core.planning import Selection, WindowTransitions
from plugin.errors import UserError
from plugin.models.alignment import AlignmentConfig, AlignmentModel
from plugin.models.llm import BaseModelRef, check_base_unchanged, load_llm_novelty
from plugin.models.novelty import ClusterNovelty, NoveltyConfig, NoveltyModel
from plugin.models.window import WindowFit

NOVELTY = "novelty"
# The Triton model that serves a version whose novelty model is a language model. Its weights
# stay in ``novelty/<version>/`` (one place for every version's trained tensors); only the
# shell goes to ``novelty_llm/<version>/``.
NOVELTY_LLM = "novelty_llm"
ALIGNMENT = "alignment"
WEIGHTS = "weights.pt"
MANIFEST = "manifest.json"
PLANNER = "planner"
SHELL = "model.py"
CONFIG = "config.pbtxt"
PUBLISHED = "published.json"
# The tracked configs and model.py templates (the project's own model repository).
TEMPLATES = Path(__file__).resolve().parent.parent.parent / "model_repository"
# How many earlier publications the pointer remembers for rollback.
ROLLBACK_DEPTH = 10


class PublishError(UserError, ValueError):
    """A version cannot be published (missing, incomplete, or failed its quality gate)."""


def version_label(version: int, catalog_version: str) -> str:
    """What plans record as their model version, for any planner serving ``version``."""
    return f"best-of-n-v{version}-{catalog_version[:8]}"


def chosen_selection(manifest: dict[str, Any]) -> Selection | None:
    """The n, temperature, weight and window weight ``explore train`` chose for a version,
    with its window transitions (None: trained without the validation search). A version
    from before the window term has window weight 0."""
    chosen = (manifest.get("selection") or {}).get("chosen")
    if not chosen:
        return None
    window_weight = float(chosen.get("window_weight", 0.0))
    return Selection(
        n=int(chosen["n"]),
        temperature=float(chosen["temperature"]),
        weight=float(chosen["weight"]),
        window_weight=window_weight,
        transitions=manifest_transitions(manifest) if window_weight > 0 else None,
    )


def transitions_record(fitted: WindowFit, moves: int) -> dict[str, Any]:
    """A version's window model for its manifest: the ``[from][to]`` matrix it serves, with
    the L2 and step count it was fit with."""
    matrix = fitted.transitions.scores_by_target
    size = len(matrix)
    return {
        "rule": "learned bag-of-window softmax over the novel clusters (plugin.models.window); "
        "a candidate's score is the mean of matrix[w][candidate] over the window, the cluster "
        "of age a (0: the most recent) weighing decay**a",
        "moves": moves,
        "n_clusters": size,
        "l2": fitted.l2,
        "decay": fitted.transitions.decay,
        "steps": fitted.steps,
        "matrix": [[round(matrix[to][source], 6) for to in range(size)] for source in range(size)],
    }


def manifest_transitions(manifest: dict[str, Any]) -> WindowTransitions:
    """The window model a manifest records (a ``ValueError`` naming the field if not)."""
    record = manifest.get("window_transitions")
    if not record:
        raise ValueError(
            "manifest: selection.chosen.window_weight > 0 but no window_transitions; "
            "retrain the version with `explore train`"
        )
    if "matrix" not in record:
        raise ValueError(
            "manifest: window_transitions has no matrix (a version of the counted window "
            "term, replaced by the learned one); retrain the version with `explore train`"
        )
    matrix = record["matrix"]
    if len(matrix) != int(record["n_clusters"]):
        raise ValueError("manifest: window_transitions.matrix does not match its n_clusters")
    try:
        # A version from before the recency decay has none: the uniform mean it was fit with.
        return WindowTransitions.from_matrix(matrix, float(record.get("decay", 1.0)))
    except ValueError as error:
        raise ValueError(f"manifest: window_transitions: {error}") from error


def version_selection(manifest: dict[str, Any], fallback: Selection, apply: bool) -> Selection:
    """What a planner serving this version plans with: the version's chosen values when
    ``apply`` (``selection.apply``) and it has them, else ``fallback`` (the planner settings)."""
    chosen = chosen_selection(manifest) if apply else None
    return chosen or fallback


@dataclass(frozen=True)
class PublishedPointer:
    """The published version and the ones before it, newest first (for rollback)."""

    version: int
    previous: tuple[int, ...] = ()
    updated_at: str = ""
    history: tuple[dict[str, Any], ...] = field(default=(), compare=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "previous": list(self.previous),
            "updated_at": self.updated_at,
            "history": list(self.history),
        }


@dataclass(frozen=True)
class ModelVersion:
    """Both models of one version, with the manifest they were written with."""

    version: int
    novelty: ClusterNovelty
    alignment: AlignmentModel
    manifest: dict[str, Any]

    @property
    def label(self) -> str:
        """What plans record as their model version."""
        return version_label(self.version, str(self.manifest.get("catalog_version", "")))


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
        novelty: ClusterNovelty,
        alignment: AlignmentModel,
        manifest: dict[str, Any],
        version: int | None = None,
    ) -> int:
        """Write both models as a new version; the manifest goes last, marking it complete.

        An LLM novelty model writes its trained tensors and its base model's reference only."""
        number = self.next_version() if version is None else version
        alignment_saved = {
            "config": alignment.config.as_dict(),
            "state_dict": alignment.state_dict(),
        }
        for name, saved in ((NOVELTY, novelty.checkpoint()), (ALIGNMENT, alignment_saved)):
            folder = self.root / name / str(number)
            folder.mkdir(parents=True, exist_ok=True)
            torch.save(saved, folder / WEIGHTS)
            (folder / MANIFEST).write_text(
                json.dumps({**manifest, "model": name, "version": number}, indent=2, default=str)
            )
        return number

    def complete_versions(self) -> list[int]:
        """Versions with both models complete, ascending."""
        return sorted(set(self.versions(NOVELTY)) & set(self.versions(ALIGNMENT)))

    def load(self, version: int | None = None) -> ModelVersion:
        """Load a version of both models (the newest complete one by default)."""
        if version is None:
            available = self.complete_versions()
            if not available:
                raise FileNotFoundError(f"{self.root}: no trained models; run `explore train`")
            version = available[-1]
        return ModelVersion(
            version=version,
            novelty=load_novelty(self.root / NOVELTY / str(version) / WEIGHTS),
            alignment=load_alignment(self.root / ALIGNMENT / str(version) / WEIGHTS),
            manifest=self.manifest(version),
        )

    # -- publishing ------------------------------------------------------------------------

    @property
    def pointer_path(self) -> Path:
        return self.root / PUBLISHED

    def published(self) -> PublishedPointer | None:
        """The published pointer, or None if nothing was ever published here."""
        try:
            raw = json.loads(self.pointer_path.read_text())
        except FileNotFoundError:
            return None
        except ValueError as exc:
            raise PublishError(f"{self.pointer_path} is not valid JSON: {exc}") from None
        return PublishedPointer(
            version=int(raw["version"]),
            previous=tuple(int(v) for v in raw.get("previous", [])),
            updated_at=str(raw.get("updated_at", "")),
            history=tuple(raw.get("history", [])),
        )

    def default_version(self) -> int | None:
        """The published version if there is one, else the newest complete version."""
        pointer = self.published()
        if pointer is not None:
            return pointer.version
        available = self.complete_versions()
        return available[-1] if available else None

    def gate(self, version: int) -> dict[str, Any]:
        """The quality gate recorded in a version's manifest (``passed`` False if absent)."""
        gate = self.manifest(version).get("gate") or {}
        return {"passed": False, "reasons": ["no quality gate recorded"], **gate}

    def check_publishable(self, version: int) -> None:
        """Raise :class:`PublishError` unless ``version`` is complete and passed its gate."""
        if version not in self.complete_versions():
            raise PublishError(
                f"version {version} is not a complete trained version in {self.root} "
                f"(complete: {self.complete_versions() or 'none'}); run `explore train`"
            )
        gate = self.gate(version)
        if not gate.get("passed"):
            reasons = "; ".join(gate.get("reasons") or []) or "gate not passed"
            raise PublishError(f"version {version} failed its quality gate ({reasons})")

    def novelty_model(self, version: int) -> str:
        """The Triton model that serves ``version``'s novelty model, as its planner manifest
        names it (``novelty`` for a planner manifest written before LLM versions existed)."""
        path = self.root / PLANNER / str(version) / MANIFEST
        try:
            manifest = json.loads(path.read_text())
        except FileNotFoundError:
            raise PublishError(
                f"{path}: version {version} was never prepared for serving; "
                "run `explore models publish`"
            ) from None
        return str(manifest.get("novelty_model", NOVELTY))

    def prepare_serving(self, version: int, templates: Path = TEMPLATES) -> list[Path]:
        """Make ``version`` loadable by Triton: shells, the planner version, and configs.

        Copies each served model's tracked ``model.py`` template into ``<model>/<version>/``
        and, for a repository other than the tracked one, the tracked ``config.pbtxt`` files.
        The novelty model is served as ``novelty`` (the id model) or ``novelty_llm`` (a
        language model, its weights read from ``novelty/<version>/``). Writes
        ``planner/<version>/manifest.json`` with what the planner model needs to know, the
        novelty model's name included. Returns the files written. Refuses a version that is
        not publishable.
        """
        self.check_publishable(version)
        written: list[Path] = []
        saved = torch.load(self.root / NOVELTY / str(version) / WEIGHTS, weights_only=True)
        novelty_config = dict(saved["config"])
        novelty_model = NOVELTY_LLM if saved.get("kind") == "llm" else NOVELTY
        manifest = self.manifest(version)
        for model in (novelty_model, ALIGNMENT, PLANNER):
            folder = self.root / model / str(version)
            folder.mkdir(parents=True, exist_ok=True)
            template_dir = templates / model
            if template_dir.resolve() != (self.root / model).resolve():
                shutil.copyfile(template_dir / CONFIG, self.root / model / CONFIG)
                written.append(self.root / model / CONFIG)
            shutil.copyfile(template_dir / SHELL, folder / SHELL)
            written.append(folder / SHELL)
        planner_manifest = {
            "model": PLANNER,
            "version": version,
            "label": version_label(version, str(manifest.get("catalog_version", ""))),
            "catalog_version": manifest.get("catalog_version"),
            "novelty_model": novelty_model,
            "novelty_version": version,
            "alignment_version": version,
            "n_clusters": int(novelty_config["n_clusters"]),
            "history_length": int(novelty_config["history_length"]),
            # What N=0 and TEMPERATURE=0 mean for this version: its chosen values (the old
            # planner defaults for a version trained without the search).
            "selection": (chosen_selection(manifest) or Selection()).scalars(),
        }
        path = self.root / PLANNER / str(version) / MANIFEST
        path.write_text(json.dumps(planner_manifest, indent=2))
        written.append(path)
        return written

    def record_published(self, version: int) -> PublishedPointer:
        """Point ``published.json`` at ``version``; the old one goes first on ``previous``."""
        self.check_publishable(version)
        current = self.published()
        previous: list[int] = []
        history: list[dict[str, Any]] = []
        if current is not None:
            history = list(current.history)
            if current.version != version:
                previous = [current.version, *current.previous]
            else:
                previous = list(current.previous)
        previous = [v for v in dict.fromkeys(previous) if v != version][:ROLLBACK_DEPTH]
        return self._write_pointer(version, previous, history, "publish")

    def record_rollback(self) -> PublishedPointer:
        """Point ``published.json`` at the previously published version."""
        current = self.published()
        if current is None or not current.previous:
            raise PublishError("nothing to roll back to: no earlier published version")
        target, rest = current.previous[0], list(current.previous[1:])
        return self._write_pointer(target, rest, list(current.history), "rollback")

    def rollback_target(self) -> int | None:
        current = self.published()
        return current.previous[0] if current is not None and current.previous else None

    def _write_pointer(
        self, version: int, previous: list[int], history: list[dict[str, Any]], action: str
    ) -> PublishedPointer:
        now = datetime.now(UTC).isoformat(timespec="seconds")
        history = [*history, {"action": action, "version": version, "at": now}][-50:]
        pointer = PublishedPointer(version, tuple(previous), now, tuple(history))
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.pointer_path.with_name(PUBLISHED + ".tmp")
        tmp.write_text(json.dumps(pointer.as_dict(), indent=2) + "\n")
        tmp.replace(self.pointer_path)  # atomic: readers never see half a pointer
        return pointer


def load_novelty(
    path: Path, device: torch.device | None = None, threads: int | None = None
) -> ClusterNovelty:
    """A saved novelty model: the id transformer, or an LLM rebuilt around its base model
    (on ``device``, default the CPU, with ``threads`` torch threads; the id model ignores
    both)."""
    saved = torch.load(path, weights_only=True)
    if saved.get("kind") == "llm":
        if threads is None:
            return load_llm_novelty(saved, device)
        return load_llm_novelty(saved, device, threads=threads)
    config = dict(saved["config"])
    config["parent_of"] = tuple(config["parent_of"])
    model = NoveltyModel(NoveltyConfig(**config))
    model.load_state_dict(saved["state_dict"])
    return model.eval()


def load_alignment(path: Path) -> AlignmentModel:
    """A saved alignment model; one on description features keeps its saved frozen matrix,
    and is refused if its base language model changed since (like the LLM novelty model)."""
    saved = torch.load(path, weights_only=True)
    config = AlignmentConfig(**saved["config"])
    if config.base is not None:
        check_base_unchanged(BaseModelRef(**config.base), "alignment model")
    model = AlignmentModel(config)
    model.load_state_dict(saved["state_dict"])
    return model.eval()


def check_catalog(version: int, manifest: dict[str, Any], catalog: ClusterCatalog) -> None:
    """A version trained on another catalog than the current one cannot plan for it."""
    trained_on = manifest.get("catalog_version")
    if trained_on != catalog.version:
        raise ValueError(
            f"model version {version} was trained on catalog {trained_on}, but the "
            f"current catalog is {catalog.version}; run `explore train` (and "
            "`explore models publish` to serve the new version)"
        )
