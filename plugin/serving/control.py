"""Model management on a running Triton, through its repository API (explicit model control).

Versions move in lockstep: "version v" is novelty v + alignment v + planner v, and planner v
calls the other two at v. Version v's novelty model is served as ``novelty`` (the id model)
or ``novelty_llm`` (a language model), whichever its planner manifest names. Switching the
served version is blue/green, so plans never stop:

1. load v's novelty model and alignment with both the serving versions and v (``specific``
   policy);
2. load planner v (Triton swaps it in once it is ready), then send it one probe plan;
3. drop the old novelty and alignment versions, and unload the other novelty model if no
   planner needs it any more (switching from an LLM version to an id version frees the
   language model's memory).

If any step fails, the models already touched are reloaded at their previous versions, and
:class:`ModelLoadError` says what failed and what still serves. Triton itself keeps a model's
loaded versions when a reload fails, which is what makes this safe.

``load_model(config=...)`` replaces the whole config, so every load sends the tracked
``config.pbtxt`` with the version policy set; nothing here edits a config file.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plugin.errors import ServerUnreachable, UserError
from plugin.models.repository import (
    CONFIG,
    TEMPLATES,
    ModelRepository,
    PublishedPointer,
    PublishError,
)
from plugin.serving.contract import (
    ALIGNMENT_MODEL,
    CANDIDATES,
    NOVELTY_MODELS,
    PLANNER_MODEL,
    SERVED_MODELS,
    planner_inputs,
    triton_dtype,
)
from plugin.serving.endpoint import client_options, grpc_url
from plugin.settings import TritonSettings

# The planner calls one of these novelty models and alignment; they must stay loaded while it
# is.
SUB_MODELS = (*NOVELTY_MODELS, ALIGNMENT_MODEL)


class TritonUnreachable(ServerUnreachable, ConnectionError):
    """No Triton answers at the configured address."""


class ModelControlError(UserError, RuntimeError):
    """A management call was refused or failed; the message says what to do."""


class ModelLoadError(ModelControlError):
    """Loading a version failed; the previous versions were restored and still serve."""


def model_config_json(model: str, versions: Sequence[int], templates: Path = TEMPLATES) -> str:
    """The tracked config of ``model`` with a ``specific`` version policy, as JSON."""
    from google.protobuf import json_format, text_format
    from tritonclient.grpc import model_config_pb2

    path = templates / model / CONFIG
    config = text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
    config.ClearField("version_policy")
    config.version_policy.specific.versions.extend(sorted(set(versions)))
    return str(json_format.MessageToJson(config))


@dataclass(frozen=True)
class LoadStep:
    """One repository-API call: which model, with which versions, how long, and its outcome."""

    model: str
    versions: tuple[int, ...]
    seconds: float
    error: str | None = None

    def describe(self) -> str:
        versions = ",".join(map(str, self.versions)) or "-"
        outcome = "ok" if self.error is None else f"FAILED: {self.error}"
        return f"{self.model} [{versions}] {self.seconds:.2f}s {outcome}"


@dataclass
class LoadReport:
    """What a load, publish or rollback did on the server."""

    version: int | None
    steps: list[LoadStep] = field(default_factory=list)
    serving: dict[str, list[int]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "steps": [
                {"model": s.model, "versions": list(s.versions), "seconds": round(s.seconds, 3)}
                | ({"error": s.error} if s.error else {})
                for s in self.steps
            ],
            "serving": self.serving,
        }


def _short(message: str, limit: int = 400) -> str:
    first = " ".join(message.split())
    return first if len(first) <= limit else first[: limit - 3] + "..."


class ModelControl:
    """Loads, unloads and switches model versions on one Triton server."""

    def __init__(
        self,
        settings: TritonSettings,
        repository: ModelRepository,
        templates: Path = TEMPLATES,
    ) -> None:
        self.settings = settings
        self.repository = repository
        self.templates = templates
        self._client: Any = None

    # -- connection ------------------------------------------------------------------------

    @property
    def client(self) -> Any:
        if self._client is None:
            import tritonclient.grpc as triton_grpc

            self._client = triton_grpc.InferenceServerClient(**client_options(self.settings))
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> ModelControl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, *args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
        return getattr(self.client, method)(
            *args,
            headers=self.settings.headers(),
            client_timeout=timeout or self.settings.connect_timeout_s,
            **kwargs,
        )

    def reachable(self) -> bool:
        """Whether a live Triton answers at the configured gRPC address."""
        try:
            return bool(self._call("is_server_live"))
        except Exception:
            return False

    def require(self) -> None:
        """Raise :class:`TritonUnreachable` with the command to run if no server answers."""
        if not self.reachable():
            raise TritonUnreachable(
                f"Triton is not reachable at {grpc_url(self.settings)} (gRPC); start it with "
                "`explore triton up`"
            )

    # -- state -----------------------------------------------------------------------------

    def index(self) -> list[dict[str, str]]:
        """Triton's repository index: one entry per model version it knows, with its state."""
        raw = self._call("get_model_repository_index", as_json=True)
        return [dict(entry) for entry in raw.get("models", [])]

    def ready_versions(self) -> dict[str, list[int]]:
        """READY versions of each served model (models with none are left out)."""
        ready: dict[str, list[int]] = {}
        for entry in self.index():
            if entry.get("state") == "READY" and str(entry.get("version", "")).isdigit():
                ready.setdefault(entry["name"], []).append(int(entry["version"]))
        return {name: sorted(versions) for name, versions in ready.items()}

    def serving_version(self) -> int | None:
        """The planner version Triton serves (the newest READY one), or None."""
        versions = self.ready_versions().get(PLANNER_MODEL, [])
        return versions[-1] if versions else None

    # -- single calls ----------------------------------------------------------------------

    def _load(self, model: str, versions: Sequence[int]) -> LoadStep:
        started = time.perf_counter()
        try:
            self._call(
                "load_model",
                model,
                config=model_config_json(model, versions, self.templates),
                timeout=self.settings.load_timeout_s,
            )
        except Exception as exc:
            return LoadStep(model, tuple(versions), time.perf_counter() - started, _error(exc))
        return LoadStep(model, tuple(versions), time.perf_counter() - started)

    def _unload(self, model: str) -> LoadStep:
        started = time.perf_counter()
        try:
            self._call("unload_model", model, timeout=self.settings.load_timeout_s)
        except Exception as exc:
            return LoadStep(model, (), time.perf_counter() - started, _error(exc))
        return LoadStep(model, (), time.perf_counter() - started)

    def probe(self, version: int) -> None:
        """One plan through planner ``version``; raises :class:`ModelControlError` if it fails."""
        import tritonclient.grpc as triton_grpc

        arrays = planner_inputs([(0,)], [()], n=1, temperature=1.0, seed=0)
        inputs = []
        for name, array in arrays.items():
            tensor = triton_grpc.InferInput(name, list(array.shape), triton_dtype(array))
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        try:
            result = self._call(
                "infer",
                PLANNER_MODEL,
                inputs,
                model_version=str(version),
                timeout=self.settings.request_timeout_s,
            )
        except Exception as exc:
            raise ModelControlError(f"probe plan failed: {_error(exc)}") from None
        candidates = result.as_numpy(CANDIDATES)
        if candidates is None or candidates.shape[0] != 1 or int(candidates[0, 0]) < 0:
            raise ModelControlError(f"probe plan returned no candidate: {candidates!r}")

    def planner_needs(self, version: int) -> tuple[str, str]:
        """The models planner ``version`` calls: its novelty model and alignment."""
        return self.repository.novelty_model(version), ALIGNMENT_MODEL

    # -- management ------------------------------------------------------------------------

    def activate(self, version: int) -> LoadReport:
        """Serve ``version`` of all three models, blue/green; see the module docstring."""
        self.require()
        before = self.ready_versions()
        needs = self.planner_needs(version)
        report = LoadReport(version)
        touched: list[str] = []

        def step(result: LoadStep) -> None:
            report.steps.append(result)
            if result.error is not None:
                raise ModelControlError(f"{result.model}: {result.error}")

        try:
            for model in needs:
                touched.append(model)
                step(self._load(model, [*before.get(model, []), version]))
            touched.append(PLANNER_MODEL)
            step(self._load(PLANNER_MODEL, [version]))
            self.probe(version)
        except ModelControlError as exc:
            restored = self._restore(before, touched, report)
            raise ModelLoadError(
                f"loading version {version} failed ({_short(str(exc))}); "
                f"{self._describe_serving(restored)}"
            ) from None
        for model in SUB_MODELS:  # the old versions are no longer needed by any planner
            if model not in needs and before.get(model):
                report.steps.append(self._unload(model))
            elif model in needs and set(before.get(model, [])) - {version}:
                report.steps.append(self._load(model, [version]))
        report.serving = self.ready_versions()
        return report

    def _restore(
        self, before: dict[str, list[int]], touched: list[str], report: LoadReport
    ) -> dict[str, list[int]]:
        # Planner first: it must never point at versions that are about to go away.
        for model in sorted(touched, key=lambda m: m != PLANNER_MODEL):
            if before.get(model):
                report.steps.append(self._load(model, before[model]))
            else:
                report.steps.append(self._unload(model))
        report.serving = self.ready_versions()
        return report.serving

    @staticmethod
    def _describe_serving(serving: dict[str, list[int]]) -> str:
        planner = serving.get(PLANNER_MODEL)
        if not planner:
            return "no planner version was serving before, and none serves now"
        return f"the serving version is unchanged: planner version {planner[-1]} still serves"

    def load(self, models: Sequence[str] | None = None, version: int | None = None) -> LoadReport:
        """(Re)load ``version`` (default: the published one) of ``models`` (default: all).

        The planner's dependencies load first; loading the planner alone is refused while
        novelty or alignment lacks the version, because a BLS model does not load them.
        """
        self.require()
        version = version if version is not None else self._published_version()
        self.repository.prepare_serving(version)
        unknown = sorted(set(models or []) - set(SERVED_MODELS))
        if unknown:
            raise ModelControlError(
                f"unknown model(s) {', '.join(unknown)}; models are {', '.join(SERVED_MODELS)}"
            )
        if models is None:
            return self.activate(version)
        needs = self.planner_needs(version)
        other = sorted(set(models) & set(NOVELTY_MODELS) - {needs[0]})
        if other:
            raise ModelControlError(
                f"version {version}'s novelty model is served as {needs[0]}, not {other[0]}"
            )
        wanted = [m for m in (*needs, PLANNER_MODEL) if m in models]
        report = LoadReport(version)
        if PLANNER_MODEL in wanted:
            ready = self.ready_versions()
            missing = [m for m in needs if m not in wanted and version not in ready.get(m, [])]
            if missing:
                raise ModelControlError(
                    f"the planner needs {' and '.join(missing)} version {version} loaded first "
                    "(run `explore models load` without a model to load all three)"
                )
        before = self.ready_versions()
        for model in wanted:
            result = self._load(model, [version])
            report.steps.append(result)
            if result.error is not None:
                report.serving = self.ready_versions()
                kept = before.get(model)
                still = f"version {kept[-1]} still serves" if kept else "it is not loaded"
                raise ModelLoadError(
                    f"loading {model} version {version} failed ({_short(result.error)}); {still}"
                )
        report.serving = self.ready_versions()
        return report

    def unload(self, model: str) -> LoadReport:
        """Unload one model; refused for a model a loaded planner needs."""
        self.require()
        if model not in SERVED_MODELS:
            raise ModelControlError(f"unknown model {model}; models are {', '.join(SERVED_MODELS)}")
        ready = self.ready_versions()
        planner = ready.get(PLANNER_MODEL)
        if model in SUB_MODELS and planner and model in self.planner_needs(planner[-1]):
            raise ModelControlError(
                f"refusing to unload {model}: the planner (version "
                f"{ready[PLANNER_MODEL][-1]}) needs it; unload the planner first"
            )
        report = LoadReport(None, [self._unload(model)])
        if report.steps[0].error is not None:
            raise ModelControlError(f"unloading {model} failed: {report.steps[0].error}")
        report.serving = self.ready_versions()
        return report

    def _published_version(self) -> int:
        pointer = self.repository.published()
        if pointer is None:
            raise PublishError("no version is published yet; run `explore models publish`")
        return pointer.version


@dataclass(frozen=True)
class PublishOutcome:
    """What publish or rollback did: the new pointer, and the load report if Triton ran."""

    pointer: PublishedPointer
    report: LoadReport | None

    def describe(self, verb: str) -> str:
        where = (
            "loaded on Triton"
            if self.report is not None
            else "Triton is not running: `explore triton up` will load it"
        )
        return f"{verb} version {self.pointer.version} ({where})"


def publish(
    repository: ModelRepository, control: ModelControl | None, version: int | None = None
) -> PublishOutcome:
    """Publish ``version`` (default: the newest trained) if its gate passed, then serve it.

    With a reachable Triton the pointer only moves once the version serves; a failed load
    leaves both the served version and the pointer where they were.
    """
    if version is None:
        complete = repository.complete_versions()
        if not complete:
            raise PublishError(f"{repository.root}: no trained models; run `explore train`")
        version = complete[-1]
    repository.prepare_serving(version)  # checks the gate first
    report = None
    if control is not None and control.reachable():
        report = control.activate(version)
    return PublishOutcome(repository.record_published(version), report)


def rollback(repository: ModelRepository, control: ModelControl | None) -> PublishOutcome:
    """Serve the previously published version again and move the pointer back to it."""
    target = repository.rollback_target()
    if target is None:
        raise PublishError("nothing to roll back to: no earlier published version")
    repository.prepare_serving(target)
    report = None
    if control is not None and control.reachable():
        report = control.activate(target)
    return PublishOutcome(repository.record_rollback(), report)


def _error(exc: BaseException) -> str:
    message = getattr(exc, "message", None)
    text = message() if callable(message) else str(exc)
    return _short(str(text))
