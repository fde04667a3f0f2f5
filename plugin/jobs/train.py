"""Training the novelty and alignment models into a new numbered version (``explore train``),
and the demos' "train unless a fitting version exists"."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from plugin.data.workspace import Workspace
from plugin.errors import InvalidInput, UserError
from plugin.jobs import prerequisites
from plugin.jobs.progress import say
from plugin.models.fit import FittedModels, matching_version, train_version
from plugin.models.selection import train_selected_version
from plugin.settings import Settings


class QualityGateFailed(UserError):
    """A freshly trained version failed its quality gate, so nothing may plan with it."""


@dataclass
class TrainReport:
    """The version written, its manifest, and whether it passed the quality gate."""

    version: int
    manifest: dict[str, Any]

    @property
    def passed(self) -> bool:
        return bool(self.manifest["gate"]["passed"])

    @property
    def reasons(self) -> list[str]:
        return list(self.manifest["gate"]["reasons"])

    def as_dict(self) -> dict[str, Any]:
        return {"version": self.version, **self.manifest}


def train(settings: Settings, progress: bool = False) -> TrainReport:
    """Fit both models on the training part of the time split, gate them on the held-out part,
    and write them as the next version under ``models.repository`` (a failed gate is written
    too, and reported: it is never published)."""
    workspace = prerequisites.workspace(settings, progress=progress)
    try:
        version, fitted = train_chosen(workspace, settings, progress)
    except ValueError as exc:  # too little data for the settings: the message says which
        raise InvalidInput(str(exc)) from exc
    return TrainReport(version, fitted.manifest)


def ensure_trained(settings: Settings, workspace: Workspace, progress: bool = False) -> int:
    """The newest gated version made from this very catalog and data, training one when there
    is none; it does not change what is published."""
    version = matching_version(workspace, settings)
    if version is not None:
        return version
    say(
        "no trained models for this catalog yet: choosing settings on a validation split and "
        "training them (a few minutes)",
        progress,
    )
    version, fitted = train_chosen(workspace, settings, progress)
    if not fitted.gate.passed:
        raise QualityGateFailed(
            f"version {version} failed the quality gate: {'; '.join(fitted.gate.reasons())}"
        )
    return version


def train_chosen(
    workspace: Workspace, settings: Settings, progress: bool = False
) -> tuple[int, FittedModels]:
    """A new version: with ``selection.enabled`` (the default) its n, temperature, weight
    and label rule chosen on a validation split, else straight from the settings.

    The search fits id novelty models; an LLM novelty model (``models.novelty = "llm"``) is
    trained straight from the settings, since values chosen for another novelty model are
    not chosen for it, and one more LLM fit per curation would not fit the time budget.
    """
    if settings.selection.enabled and settings.models.novelty == "id":
        return train_selected_version(workspace, settings, progress)
    if settings.selection.enabled:
        say(
            "models.novelty=llm: no validation search (it fits id models); n, temperature "
            "and weight come from the planner settings",
            progress,
        )
    return train_version(workspace, settings, progress=progress)
