"""`explore refresh`, `explore monitor` and `explore feedback stats|compact|fresh-eval`.

``refresh`` closes the feedback loop (docs/FEEDBACK.md): it retrains the alignment model (and,
with ``--novelty``, the novelty model) on the dataset's moves plus the feedback log, gates the
result against the serving version, writes it as a new numbered version, publishes it through
model management (Triton when one is reachable, the pointer otherwise), precomputes the plan
cache under the new version's key and rebuilds the online feedback aggregates. Every step is
timed and logged; a failed gate or a failed load leaves the serving version in place.

The logic is in :func:`run_refresh` (plain Python, used by the tests); the commands print it.
Heavy imports happen inside the functions so ``explore --help`` stays fast.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from plugin.settings import Settings, SettingsError, load_settings

if TYPE_CHECKING:
    from plugin.core.feedback import FeedbackRecord
    from plugin.data.workspace import Workspace
    from plugin.models.planner import BestOfNPlanner

log = logging.getLogger(__name__)

feedback_app = typer.Typer(
    help="The feedback log: stats, compaction, and the fresh-transition measurement.",
    no_args_is_help=True,
)
JsonOpt = Annotated[Path | None, typer.Option("--json", help="also write the result as JSON here")]

# Exit codes of `explore refresh`.
EXIT_GATE_FAILED = 1
EXIT_ERROR = 2


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(code)


def _settings(**feedback: Any) -> Settings:
    try:
        base = load_settings()
        if not feedback:
            return base
        merged = base.model_dump()
        merged["feedback"] = {
            **merged["feedback"],
            **{k: v for k, v in feedback.items() if v is not None},
        }
        return load_settings(**merged)
    except SettingsError as exc:
        fail(str(exc))


def _write_json(path: Path | None, payload: Any) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str))
    typer.echo(f"wrote {path}")


# -- refresh ---------------------------------------------------------------------------------


class RefreshError(RuntimeError):
    """A refresh step failed; the serving version is unchanged."""


@dataclass
class RefreshStep:
    name: str
    status: str = "ok"  # ok | skipped | failed
    seconds: float = 0.0
    detail: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "step": self.name,
            "status": self.status,
            "seconds": round(self.seconds, 3),
            **self.detail,
        }


@dataclass
class RefreshReport:
    """What a refresh did, step by step, and where it left the serving version."""

    serving_before: int | None = None
    version: int | None = None
    published: bool = False
    serving_after: int | None = None
    gate: dict[str, Any] | None = None
    before: dict[str, Any] = field(default_factory=dict)
    after: dict[str, Any] = field(default_factory=dict)
    steps: list[RefreshStep] = field(default_factory=list)
    seconds: float = 0.0

    @contextmanager
    def step(self, name: str) -> Iterator[RefreshStep]:
        """Time one step; it is logged when it ends, and marked failed if it raises."""
        current = RefreshStep(name)
        self.steps.append(current)
        started = time.perf_counter()
        try:
            yield current
        except BaseException as exc:
            current.status = "failed"
            current.detail.setdefault("error", str(exc))
            raise
        finally:
            current.seconds = time.perf_counter() - started
            log.info(
                "refresh step %s: %s in %.2f s",
                name,
                current.status,
                current.seconds,
                extra={"step": name, **current.detail},
            )

    def as_dict(self) -> dict[str, Any]:
        return {
            "serving_before": self.serving_before,
            "version": self.version,
            "published": self.published,
            "serving_after": self.serving_after,
            "gate": self.gate,
            "before": self.before,
            "after": self.after,
            "steps": [s.as_dict() for s in self.steps],
            "seconds": round(self.seconds, 3),
        }


def plan_spread(planner: BestOfNPlanner, n_clusters: int, k: int) -> dict[str, Any]:
    """Each possible history's plan (avoiding only the history): coverage, Gini, top clusters.

    The share of histories planning each cluster is what the loop test watches.
    """
    from plugin.adapters.plan_cache import all_histories
    from plugin.core.planning import PlanRequest
    from plugin.core.sequence import EPOCH
    from plugin.core.stats import gini

    histories = list(all_histories(n_clusters, k))
    planned: Counter[int] = Counter()
    for start in range(0, len(histories), 512):
        chunk = histories[start : start + 512]
        requests = [PlanRequest(f"h{i}", h, frozenset(h), EPOCH) for i, h in enumerate(chunk)]
        planned.update(plan.cluster_id for plan in planner.plan(requests))
    total = sum(planned.values())
    return {
        "histories": total,
        "coverage": len(planned) / n_clusters,
        "gini": gini([planned.get(c, 0) for c in range(n_clusters)]),
        "share": {str(c): round(planned[c] / total, 5) for c in sorted(planned)},
        "top": [[c, round(count / total, 4)] for c, count in planned.most_common(5)],
    }


def plan_quality(
    planner: BestOfNPlanner, workspace: Workspace, cases: Sequence[Any], n: int
) -> dict[str, float]:
    """Held-out best-of-n figures (the offline evaluation's), for the refresh gate."""
    from plugin.evaluation.offline import best_of_n_method, in_chunks, score

    metrics = score(cases, in_chunks(cases, best_of_n_method(planner, n)), len(workspace.catalog))
    return {
        name: round(metrics[name], 4)
        for name in ("hit_at_1", "positive_hit_at_1", "hit_at_n", "novelty_rate", "coverage")
    }


def run_refresh(
    settings: Settings, workspace: Workspace | None = None, **options: Any
) -> RefreshReport:
    """Retrain on the dataset plus the feedback log, gate, write, publish, refresh the cache
    (options: see :func:`refresh`), on one torch thread: on two busy cores, two threads made
    the training up to 6x slower (measured; the contention of docs/TRITON.md's field notes)."""
    from plugin.models.planner import single_threaded

    with single_threaded():
        return refresh(settings, workspace, **options)


def refresh(
    settings: Settings,
    workspace: Workspace | None = None,
    novelty: bool | None = None,
    publish: bool = True,
    use_triton: bool = True,
    cache: bool = True,
    aggregates: bool = True,
    purge_old_cache: bool = False,
    records: Sequence[FeedbackRecord] | None = None,
) -> RefreshReport:
    """Retrain on the dataset plus the feedback log, gate, write, publish, refresh the cache.

    ``records`` replaces reading the log (tests). Raises :class:`RefreshError` when a step
    fails; a gate that fails is not an error: the report says ``published: False``.
    """
    from plugin.core.feedback import feedback_selection
    from plugin.data.workspace import open_workspace
    from plugin.models.fit import training_data, with_feedback
    from plugin.models.planner import BestOfNPlanner
    from plugin.models.repository import ModelRepository, version_label
    from plugin.models.training import (
        alignment_config,
        novelty_config,
        quality_gate,
        train_alignment,
        train_novelty,
    )
    from plugin.wiring import feedback_log

    config = settings.feedback
    retrain_novelty = config.refresh_novelty if novelty is None else novelty
    started = time.perf_counter()
    report = RefreshReport()
    repository = ModelRepository(settings.models.repository)
    planner_settings = settings.planner
    k = settings.sequence.history_length
    try:
        with report.step("serving") as step:
            workspace = workspace or open_workspace(settings)
            catalog = workspace.catalog
            serving = repository.default_version()
            if serving is None:
                raise RefreshError("no trained version to refresh; run `explore train` first")
            current = repository.load(serving)
            if current.manifest.get("catalog_version") != catalog.version:
                raise RefreshError(
                    f"version {serving} was trained on catalog "
                    f"{current.manifest.get('catalog_version')}, the current one is "
                    f"{catalog.version}: run `explore train`, not a refresh"
                )
            pointer = repository.published()
            report.serving_before = pointer.version if pointer is not None else None
            step.detail.update(version=serving, published=report.serving_before is not None)

        with report.step("read-feedback") as step:
            base = training_data(workspace, settings)
            if records is None:
                records = feedback_log(settings).read()
            interactions = workspace.dataset.interactions
            dataset_events = set(
                zip(
                    interactions["user_id"].astype(str),
                    interactions["event_id"].astype(str),
                    strict=True,
                )
            )
            selection = feedback_selection(
                records, catalog.version, dataset_events, weight=config.label_weight
            )
            step.detail.update(selection.as_dict(), label_weight=config.label_weight)
            if not selection.outcomes:
                step.status = "skipped"
                step.detail["reason"] = "no usable feedback: nothing to learn, nothing changed"
                report.serving_after = report.serving_before
                return report
            data = with_feedback(base, selection.outcomes, selection.moves, len(catalog), settings)
            step.detail.update(
                alignment_rows=len(data.feedback), training_moves=len(data.train_moves)
            )

        models = settings.models
        if retrain_novelty:
            with report.step("train-novelty") as step:
                novelty_model, run = train_novelty(
                    data.novelty, novelty_config(catalog, k, models), models
                )
                step.detail.update(steps=run.steps, final_loss=round(run.final_loss, 4))
        else:
            novelty_model = current.novelty
            with report.step("train-novelty") as step:
                step.status = "skipped"
                step.detail["reason"] = f"kept version {serving}'s novelty model"
        objective = models.objective
        with report.step("train-alignment") as step:
            alignment_model, run = train_alignment(
                data.feedback, alignment_config(len(catalog), k, objective), models
            )
            step.detail.update(
                objective=objective, steps=run.steps, final_loss=round(run.final_loss, 4)
            )

        with report.step("gate") as step:
            n = planner_settings.candidates

            def planner_of(novelty_net: Any, alignment_net: Any, label: str) -> BestOfNPlanner:
                return BestOfNPlanner(
                    novelty_net,
                    alignment_net,
                    n,
                    planner_settings.temperature,
                    planner_settings.seed,
                    label,
                )

            old = planner_of(current.novelty, current.alignment, current.label)
            new = planner_of(novelty_model, alignment_model, "refresh-candidate")
            novelty_gate = quality_gate(
                novelty_model,
                data.heldout_moves,
                n,
                planner_settings.temperature,
                planner_settings.seed,
                models,
            )
            report.before = {
                "heldout": plan_quality(old, workspace, data.heldout_moves, n),
                "plans": plan_spread(old, len(catalog), k),
            }
            report.after = {
                "heldout": plan_quality(new, workspace, data.heldout_moves, n),
                "plans": plan_spread(new, len(catalog), k),
            }
            drop = (
                report.before["heldout"]["positive_hit_at_1"]
                - report.after["heldout"]["positive_hit_at_1"]
            )
            coverage = report.after["plans"]["coverage"]
            reasons = novelty_gate.reasons()
            if drop > config.gate_max_hit_drop:
                reasons.append(
                    f"held-out positive hit@1 dropped {drop:.3f} > {config.gate_max_hit_drop}"
                )
            if coverage < config.gate_min_coverage:
                reasons.append(f"plan coverage {coverage:.3f} < {config.gate_min_coverage}")
            report.gate = {
                **novelty_gate.as_dict(),
                "passed": not reasons,
                "reasons": reasons,
                "alignment": {
                    "positive_hit_at_1": report.after["heldout"]["positive_hit_at_1"],
                    "serving_positive_hit_at_1": report.before["heldout"]["positive_hit_at_1"],
                    "max_drop": config.gate_max_hit_drop,
                    "coverage": coverage,
                    "min_coverage": config.gate_min_coverage,
                },
            }
            step.detail.update(passed=not reasons, reasons=reasons)

        with report.step("write-version") as step:
            manifest = {
                **{
                    key: current.manifest.get(key)
                    for key in ("dataset", "data_hash", "catalog_version", "text_init")
                },
                "moves_hash": None,
                "history_length": k,
                "novelty_window": settings.sequence.novelty_window,
                "objective": objective,
                "training_pairs": len(data.novelty),
                "feedback_rows": len(data.feedback),
                "feedback_pairs": len(data.feedback.pairs),
                "refresh": {
                    "parent_version": serving,
                    "novelty_retrained": retrain_novelty,
                    "feedback": selection.as_dict(),
                    "label_weight": config.label_weight,
                    "before": report.before.get("heldout"),
                    "after": report.after.get("heldout"),
                },
                "seconds": {
                    "alignment": round(run.seconds, 2),
                    "novelty": 0.0 if not retrain_novelty else None,
                },
                "gate": report.gate,
                "settings": models.model_dump(mode="json"),
            }
            from plugin.models.data import moves_fingerprint

            manifest["moves_hash"] = moves_fingerprint(data.train_moves)
            version = repository.write(novelty_model, alignment_model, manifest)
            report.version = version
            step.detail.update(version=version, label=version_label(version, catalog.version))

        with report.step("publish") as step:
            if not report.gate["passed"]:
                step.status = "skipped"
                step.detail["reason"] = (
                    f"gate failed; serving version {report.serving_before} unchanged"
                )
            elif not publish:
                step.status = "skipped"
                step.detail["reason"] = "--no-publish"
            else:
                step.detail.update(_publish(settings, repository, version, use_triton))
                report.published = True
        pointer = repository.published()
        report.serving_after = pointer.version if pointer is not None else None

        with report.step("plan-cache") as step:
            if not report.published:
                step.status = "skipped"
                step.detail["reason"] = "nothing published"
            elif not cache or not settings.cache.enabled:
                step.status = "skipped"
                step.detail["reason"] = "cache off"
            else:
                step.detail.update(
                    _precompute(settings, workspace, version, current.label, purge_old_cache)
                )
                if step.detail.get("reason"):
                    step.status = "skipped"

        with report.step("aggregates") as step:
            if not aggregates or not config.aggregates:
                step.status = "skipped"
                step.detail["reason"] = "aggregates off"
            else:
                step.detail.update(_rebuild_aggregates(settings, records, catalog.version))
    except RefreshError:
        raise
    except Exception as exc:
        raise RefreshError(
            f"refresh failed in step {report.steps[-1].name if report.steps else '?'}: {exc}"
        ) from exc
    finally:
        report.seconds = time.perf_counter() - started
    return report


def _publish(settings: Settings, repository: Any, version: int, use_triton: bool) -> dict[str, Any]:
    """Publish through model management: Triton blue/green when reachable, else the pointer."""
    from plugin.serving.control import ModelControl, publish

    with ModelControl(settings.triton, repository) as control:
        reachable = use_triton and control.reachable()
        outcome = publish(repository, control if reachable else None, version)
    return {
        "version": outcome.pointer.version,
        "previous": list(outcome.pointer.previous),
        "triton": outcome.report.as_dict() if outcome.report is not None else None,
    }


def _precompute(
    settings: Settings, workspace: Workspace, version: int, old_label: str, purge: bool
) -> dict[str, Any]:
    """Fill the plan cache under the new version's key; old keys expire by TTL (or go now)."""
    import redis

    from plugin.adapters.plan_cache import (
        RankingCache,
        all_histories,
        count_all_histories,
        precompute,
        seen_histories,
    )
    from plugin.models.planner import best_of_n_planner
    from plugin.wiring import redis_client

    client = redis_client(settings)
    try:
        client.ping()
    except redis.RedisError as exc:
        return {"reason": f"redis unreachable ({exc}); the cache fills on demand later"}
    planner = best_of_n_planner(settings, workspace.catalog, version)
    cache = RankingCache(
        client, settings.cache, settings.planner.temperature, settings.planner.seed
    )
    k, clusters = settings.sequence.history_length, len(workspace.catalog)
    every = count_all_histories(clusters, k)
    histories: Any
    if every <= settings.cache.precompute_all_max:
        histories = all_histories(clusters, k)
    else:
        histories = seen_histories(
            workspace.train.events(), workspace.catalog, k, settings.sequence.novelty_window
        )
    done = precompute(planner, cache, histories, settings.cache.precompute_batch, "refresh")
    old_entries = cache.size(old_label) if old_label != planner.model_version else 0
    purged = 0
    if purge and old_entries:
        pattern = f"{cache.namespace(old_label)}:*"
        for key in client.scan_iter(match=pattern, count=1000):
            purged += int(client.delete(key))
    return {
        "namespace": cache.namespace(planner.model_version),
        "entries": done.written,
        "previous_namespace": cache.namespace(old_label),
        "previous_entries": old_entries - purged,
        "purged": purged,
    }


def _rebuild_aggregates(
    settings: Settings, records: Sequence[FeedbackRecord], catalog_version: str
) -> dict[str, Any]:
    """Rewrite the online view with the log's exact counts (stamped newer than stored)."""
    from dataclasses import replace

    from plugin.adapters.feast_store import FeastStore
    from plugin.core.feedback import aggregate, dedupe

    exact = aggregate(r for r in dedupe(records) if r.catalog_version == catalog_version)
    if not exact:
        return {"rows": 0}
    store = FeastStore(settings)
    try:  # registering the repo costs seconds; the worker normally did it already
        store.store.get_feature_view("feedback_aggregates")
    except Exception:
        store.apply()
    stored = store.read_feedback_aggregates(sorted(exact))
    rows = [
        replace(row, revision_us=max(row.revision_us, stored[key].revision_us + 1))
        if key in stored
        else row
        for key, row in sorted(exact.items())
    ]
    store.write_feedback_aggregates(rows)
    return {"rows": len(rows), "online_store": settings.feast.online_store}


def refresh_command(
    novelty: Annotated[
        bool | None,
        typer.Option("--novelty/--no-novelty", help="also retrain the novelty model"),
    ] = None,
    publish: Annotated[
        bool, typer.Option("--publish/--no-publish", help="publish when the gate passes")
    ] = True,
    triton: Annotated[
        bool, typer.Option("--triton/--no-triton", help="load on Triton when it is reachable")
    ] = True,
    cache: Annotated[
        bool, typer.Option("--cache/--no-cache", help="precompute the plan cache")
    ] = True,
    aggregates: Annotated[
        bool, typer.Option("--aggregates/--no-aggregates", help="rebuild the online aggregates")
    ] = True,
    purge_old_cache: Annotated[
        bool, typer.Option(help="delete the previous version's cache entries now (else TTL)")
    ] = False,
    label_weight: Annotated[
        float | None, typer.Option(help="weight of a feedback move (feedback.label_weight)")
    ] = None,
    json_path: JsonOpt = None,
) -> None:
    """Retrain on the dataset plus the feedback log, gate, publish, refresh the plan cache.

    Exit status 0: published (or nothing to learn); 1: the gate failed, the new version is
    written but not published; 2: a step failed. In both failures the serving version stays.
    """
    from plugin.cli.triton import text_table

    settings = _settings(label_weight=label_weight)
    try:
        report = run_refresh(
            settings,
            novelty=novelty,
            publish=publish,
            use_triton=triton,
            cache=cache,
            aggregates=aggregates,
            purge_old_cache=purge_old_cache,
        )
    except RefreshError as exc:
        fail(f"{exc}; the serving version is unchanged")
    rows = [
        {
            "step": s.name,
            "status": s.status,
            "seconds": round(s.seconds, 2),
            "detail": _short_detail(s.detail),
        }
        for s in report.steps
    ]
    typer.echo(text_table(rows))
    if report.before and report.after:
        typer.echo(
            text_table(
                [
                    {
                        "models": name,
                        "positive hit@1": side["heldout"]["positive_hit_at_1"],
                        "hit@1": side["heldout"]["hit_at_1"],
                        "plan coverage": side["plans"]["coverage"],
                        "plan Gini": side["plans"]["gini"],
                        "top planned (cluster, share)": str(side["plans"]["top"][:3]),
                    }
                    for name, side in (("serving", report.before), ("refreshed", report.after))
                ]
            )
        )
    typer.echo(
        f"refresh took {report.seconds:.1f} s; serving version: "
        f"{report.serving_before} -> {report.serving_after}"
    )
    _write_json(json_path, report.as_dict())
    if report.gate is not None and not report.gate["passed"]:
        typer.secho(
            f"version {report.version} FAILED the gate ({'; '.join(report.gate['reasons'])}); "
            f"version {report.serving_before} still serves",
            err=True,
            fg=typer.colors.YELLOW,
        )
        raise typer.Exit(EXIT_GATE_FAILED)


def _short_detail(detail: dict[str, Any], limit: int = 90) -> str:
    text = ", ".join(f"{k}={v}" for k, v in detail.items() if not isinstance(v, dict | list))
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- monitor ---------------------------------------------------------------------------------


def monitor_report(
    records: Sequence[FeedbackRecord], n_clusters: int, window: int, points: int = 40
) -> dict[str, Any]:
    """The monitoring figures: the latest window, the series of windows, each model version."""
    from plugin.observability.monitoring import by_model_version, sliding_series, window_stats

    ordered = sorted(records, key=lambda r: (r.event_time, r.user_id, r.event_id))
    return {
        "records": len(ordered),
        "window": window,
        "latest": window_stats(ordered[-window:], n_clusters).as_dict(),
        "all": window_stats(ordered, n_clusters).as_dict(),
        "by_model_version": {
            version: stats.as_dict()
            for version, stats in by_model_version(ordered, n_clusters).items()
        },
        "series": [s.as_dict() for s in sliding_series(ordered, n_clusters, window, points)],
    }


def monitor_command(
    window: Annotated[
        int | None, typer.Option(help="records per window (feedback.monitor_window)")
    ] = None,
    since: Annotated[str | None, typer.Option(help="first engagement date, YYYY-MM-DD")] = None,
    plot_path: Annotated[
        Path | None, typer.Option("--plot", help="PNG (default <var_dir>/monitor.png)")
    ] = None,
    json_path: JsonOpt = None,
) -> None:
    """Plan acceptance, novelty, coverage and Gini from the feedback log, with a plot.

    A table of the latest sliding window, all records, and each model version's plans; the
    PNG draws the windows over event time."""
    from plugin.cli.triton import text_table
    from plugin.data.workspace import open_workspace
    from plugin.observability.monitoring import WindowStats, plot_series
    from plugin.wiring import feedback_log, feedback_log_dir

    settings = _settings(monitor_window=window)
    size = settings.feedback.monitor_window
    try:
        first = date.fromisoformat(since) if since else None
    except ValueError:
        fail(f"--since must be YYYY-MM-DD, not {since!r}")
    records = feedback_log(settings).read(since=first)
    if not records:
        fail(
            f"no feedback records in {feedback_log_dir(settings)}; the worker writes them "
            "(explore worker), or run `explore demo --stack`",
            code=1,
        )
    n_clusters = len(open_workspace(settings).catalog)
    report = monitor_report(records, n_clusters, size)
    figures = ("records", "acceptance_rate", "engaged_rate", "novelty_rate")
    more = ("exploration_rate", "coverage", "gini")
    rows = [
        {"window": name, **{f: stats[f] for f in (*figures, *more)}}
        for name, stats in (
            (f"latest {size}", report["latest"]),
            ("all", report["all"]),
            *((f"model {v}", s) for v, s in report["by_model_version"].items()),
        )
    ]
    typer.echo(text_table(rows))
    latest = report["latest"]
    typer.echo(f"latest window: {latest['start']} .. {latest['end']}")
    plot = plot_path or settings.var_dir / "monitor.png"
    series = [
        WindowStats(
            **{
                **s,
                "start": None,
                "end": _parse_time(s["end"]),
                "top_planned": tuple(tuple(p) for p in s["top_planned"]),
            }
        )
        for s in report["series"]
    ]
    plot_series(series, plot)
    typer.echo(f"wrote {plot}")
    _write_json(json_path, report)


def _parse_time(text: str | None) -> Any:
    from datetime import datetime

    return datetime.fromisoformat(text) if text else None


# -- explore feedback ... --------------------------------------------------------------------


@feedback_app.command("stats")
def stats_command(json_path: JsonOpt = None) -> None:
    """The log's size: dates, parts, rows, bytes; and records per source and model version."""
    from plugin.cli.triton import text_table
    from plugin.wiring import feedback_log, feedback_log_dir

    settings = _settings()
    log_ = feedback_log(settings)
    found = log_.stats()
    records = log_.read()
    by_version = Counter(r.model_version for r in records)
    typer.echo(f"feedback log {feedback_log_dir(settings)}: {found.as_dict()}")
    typer.echo(f"unique records: {len(records):,}")
    if by_version:
        typer.echo(
            text_table([{"model version": v, "records": c} for v, c in sorted(by_version.items())])
        )
    _write_json(
        json_path,
        {**found.as_dict(), "unique_records": len(records), "by_model_version": by_version},
    )


@feedback_app.command("compact")
def compact_command() -> None:
    """Merge each date folder's small parts into one (readers dedupe meanwhile)."""
    from plugin.wiring import feedback_log

    merged = feedback_log(_settings()).compact()
    typer.echo(f"merged into {len(merged)} part(s)" if merged else "nothing to merge")


@feedback_app.command("fresh-eval")
def fresh_eval_command(
    version: Annotated[
        int | None, typer.Option(help="trained version (default: published or newest)")
    ] = None,
    json_path: JsonOpt = None,
) -> None:
    """Measure fresh transitions on the time split: streamed recent counts vs training counts,
    as a frequency planner and as a boost to best-of-n (docs/FEEDBACK.md has the results)."""
    from plugin.cli.triton import text_table
    from plugin.data.workspace import open_workspace
    from plugin.evaluation.fresh import evaluate_fresh

    settings = _settings()
    workspace = open_workspace(settings)
    try:
        report = evaluate_fresh(workspace, settings, version)
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    rows = [
        {"method": name, **{m: round(v, 4) for m, v in metrics.items()}}
        for name, metrics in report["methods"].items()
    ]
    typer.echo(text_table(rows))
    _write_json(json_path, report)


def register(app: typer.Typer) -> None:
    """Add ``refresh``, ``monitor`` and the ``feedback`` group to the ``explore`` app."""
    app.command("refresh")(refresh_command)
    app.command("monitor")(monitor_command)
    app.add_typer(feedback_app, name="feedback")
