"""`explore`: the command line of interest-explorer. Every command has --help."""

from __future__ import annotations

import json
import logging
import sys
import warnings
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from plugin.settings import Settings, SettingsError, load_settings

app = typer.Typer(
    help="LLM-style interest exploration for a recommender: clusters, planners, streaming, Feast.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

DatasetOpt = Annotated[
    str | None, typer.Option("--dataset", help="built-in dataset (default: movielens-100k)")
]
InteractionsOpt = Annotated[
    Path | None, typer.Option("--interactions", help="interactions file, CSV or Parquet")
]
ItemsOpt = Annotated[Path | None, typer.Option("--items", help="items file, CSV or Parquet")]
JsonOpt = Annotated[Path | None, typer.Option("--json", help="also write the report as JSON here")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="no progress bars")]
PlannerOpt = Annotated[
    str | None,
    typer.Option("--planner", help="frequency | best-of-n | triton (default: settings)"),
]


def settings_from(
    dataset: str | None = None,
    interactions: Path | None = None,
    items: Path | None = None,
    **sections: dict[str, Any],
) -> Settings:
    """Environment settings with the command line's overrides applied; exits on a bad value."""
    try:
        base = load_settings()
        data = base.data.model_dump()
        if dataset is not None:
            data["dataset"] = dataset
        if interactions is not None or items is not None:
            data.update(interactions=interactions, items=items)
        overrides: dict[str, Any] = {"data": data}
        for name, values in sections.items():
            merged = getattr(base, name).model_dump()
            merged.update({k: v for k, v in values.items() if v is not None})
            overrides[name] = merged
        return load_settings(**{**base.model_dump(), **overrides})
    except SettingsError as exc:
        fail(str(exc))


def fail(message: str) -> NoReturn:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(2)


def _quiet_libraries() -> None:
    # Feast and kafka-python warn on import about things users cannot change.
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="feast")
    logging.getLogger("feast").setLevel(logging.ERROR)


@app.callback()
def _root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="debug logging")] = False,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    _quiet_libraries()


@app.command("settings")
def show_settings() -> None:
    """Print the effective settings (environment applied, secrets masked) as JSON."""
    settings = settings_from()
    typer.echo(settings.model_dump_json(indent=2))


@app.command()
def clusters(
    dataset: DatasetOpt = None,
    interactions: InteractionsOpt = None,
    items: ItemsOpt = None,
    leaf_clusters: Annotated[int | None, typer.Option(help="number of leaf clusters")] = None,
    json_path: JsonOpt = None,
) -> None:
    """Build the interest-cluster catalog from the training part of a dataset and save it."""
    from plugin.cli.output import catalog_summary, print_catalog
    from plugin.data.workspace import catalog_path

    settings = settings_from(
        dataset, interactions, items, clusters={"leaf_clusters": leaf_clusters}
    )
    workspace = _open(settings, rebuild=True)
    print_catalog(workspace.catalog, limit=12)
    path = catalog_path(settings, workspace.train)
    typer.echo(f"catalog {workspace.catalog.version} saved to {path}")
    _write_json(json_path, catalog_summary(workspace.catalog))


@app.command("replay")
def replay_command(
    dataset: DatasetOpt = None,
    interactions: InteractionsOpt = None,
    items: ItemsOpt = None,
    batch_size: Annotated[int | None, typer.Option(help="events per micro-batch")] = None,
    limit: Annotated[int | None, typer.Option(help="replay only the first N events")] = None,
    samples: Annotated[int, typer.Option(help="sample plans to print")] = 5,
    planner: PlannerOpt = None,
    json_path: JsonOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Replay a dataset's events through the core into Feast.

    Events stream in time order and micro-batches through the same batch processor the Kafka
    worker uses; sequences and plans are written to the Feast online store. Ends with a
    summary (events/s, users, replans) and sample plans.
    """
    settings = settings_from(
        dataset, interactions, items, replay={"batch_size": batch_size}, planner={"kind": planner}
    )
    report = _run_replay(settings, limit=limit, samples=samples, progress=not quiet)
    _write_json(json_path, report)


@app.command()
def demo(
    limit: Annotated[int | None, typer.Option(help="replay only the first N events")] = None,
    planner: PlannerOpt = None,
    json_path: JsonOpt = None,
    quiet: QuietOpt = False,
    stack: Annotated[
        bool,
        typer.Option(
            "--stack",
            help="run through real tansu (Kafka), redis-server and tritonserver with the "
            "Faust worker (planner: triton unless --planner)",
        ),
    ] = False,
) -> None:
    """Run the main job on the embedded default and print a short report.

    Builds the clusters, trains the novelty and alignment models if no trained version fits
    them, and replays movielens-100k into a fresh Feast (SQLite) store with the best-of-n
    planner.
    """
    import shutil

    from plugin.models.fit import matching_version, train_version

    if stack:
        from plugin.cli.stack import run_stack_demo

        stack_settings = settings_from(planner={"kind": planner or "triton"})
        _write_json(json_path, run_stack_demo(stack_settings, limit, progress=not quiet))
        return
    settings = settings_from(planner={"kind": planner})
    # The demo starts from an empty online store of its own: state is idempotent, so a second
    # replay into the same store would (correctly) skip every event as already applied.
    demo_dir = settings.var_dir / "demo"
    shutil.rmtree(demo_dir, ignore_errors=True)
    if settings.feast.online_store == "sqlite":
        settings.feast.sqlite_path = demo_dir / "online_store.db"
        settings.feast.registry_path = demo_dir / "registry.db"
    version = None
    if settings.planner.kind == "best-of-n":
        # The demo plans with the newest gated version made from this very catalog and data,
        # training one when there is none; it does not change what is published.
        workspace = _open(settings, rebuild=False, progress=not quiet)
        version = matching_version(workspace, settings)
        if version is None:
            typer.echo("no trained models for this catalog yet: training them (about a minute)")
            version, fitted = train_version(workspace, settings, progress=not quiet)
            if not fitted.gate.passed:
                fail(f"version {version} failed the quality gate: {fitted.gate.reasons()}")
    report = _run_replay(settings, limit=limit, samples=5, progress=not quiet, version=version)
    _write_json(json_path, report)


@app.command()
def train(
    dataset: DatasetOpt = None,
    interactions: InteractionsOpt = None,
    items: ItemsOpt = None,
    objective: Annotated[
        str | None, typer.Option(help="alignment objective: pointwise | pairwise")
    ] = None,
    text_init: Annotated[
        bool | None,
        typer.Option("--text-init/--no-text-init", help="init cluster tokens from text"),
    ] = None,
    json_path: JsonOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Train the novelty and alignment models and write a new version.

    Both are fit on the training part of the time split; the quality gate runs on the
    held-out part; both models go under model_repository/<model>/<version>/.
    """
    from plugin.cli.output import print_training
    from plugin.models.fit import train_version

    settings = settings_from(
        dataset, interactions, items, models={"objective": objective, "text_init": text_init}
    )
    workspace = _open(settings, rebuild=False, progress=not quiet)
    try:
        version, fitted = train_version(workspace, settings, progress=not quiet)
    except ValueError as exc:
        fail(str(exc))
    print_training(version, fitted.manifest)
    _write_json(json_path, {"version": version, **fitted.manifest})
    if not fitted.gate.passed:
        typer.secho(
            f"version {version} FAILED the quality gate ({'; '.join(fitted.gate.reasons())}); "
            "it will not be published",
            err=True,
            fg=typer.colors.YELLOW,
        )


@app.command()
def evaluate(
    dataset: DatasetOpt = None,
    interactions: InteractionsOpt = None,
    items: ItemsOpt = None,
    version: Annotated[
        int | None, typer.Option(help="evaluate this trained version (default: train afresh)")
    ] = None,
    objective: Annotated[
        str | None, typer.Option(help="alignment objective when training afresh")
    ] = None,
    text_init: Annotated[
        bool | None,
        typer.Option("--text-init/--no-text-init", help="init cluster tokens from text"),
    ] = None,
    json_path: JsonOpt = None,
    plot_path: Annotated[
        Path | None, typer.Option("--plot", help="PNG of the n-scaling curve and trade-off")
    ] = None,
    quiet: QuietOpt = False,
) -> None:
    """Evaluate every planning method offline on a time split.

    Each method plans each held-out novel engagement; prints the table, and writes JSON and a
    PNG plot (n-scaling curve and novelty/relevance trade-off).
    """
    from plugin.cli.output import print_evaluation
    from plugin.evaluation.offline import run_evaluation

    settings = settings_from(
        dataset, interactions, items, models={"objective": objective, "text_init": text_init}
    )
    workspace = _open(settings, rebuild=False, progress=not quiet)
    try:
        report = run_evaluation(workspace, settings, version=version, progress=not quiet)
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    print_evaluation(report)
    plot = plot_path or (json_path.with_suffix(".png") if json_path else None)
    if plot is not None:
        from plugin.evaluation.offline import plot as draw

        draw(report, plot)
        typer.echo(f"wrote {plot}")
    _write_json(json_path, report)


@app.command()
def lookup(
    user_ids: Annotated[list[str], typer.Argument(help="users to look up")],
    json_path: JsonOpt = None,
) -> None:
    """Look up users' plans from Feast the way a ranker does.

    Prints each plan with its description and the planned cluster's top items.
    """
    from plugin.adapters.feast_store import FeastStore
    from plugin.cli.output import print_lookup
    from plugin.jobs.lookup import lookup_plans

    settings = settings_from()
    store = FeastStore(settings)
    rows = lookup_plans(store, user_ids)
    print_lookup(rows)
    _write_json(json_path, {"plans": rows})


def _open(settings: Settings, rebuild: bool, progress: bool = True) -> Any:
    from plugin.data.datasets import DatasetError
    from plugin.data.workspace import open_workspace

    try:
        return open_workspace(settings, rebuild=rebuild, progress=progress)
    except (DatasetError, FileNotFoundError, KeyError) as exc:
        fail(str(exc))


def _run_replay(
    settings: Settings, limit: int | None, samples: int, progress: bool, version: int | None = None
) -> dict[str, Any]:
    from itertools import islice

    from plugin.cli.output import print_lookup, print_replay
    from plugin.jobs.lookup import lookup_plans
    from plugin.jobs.replay import replay
    from plugin.wiring import build_planner, build_processor, online_store

    workspace = _open(settings, rebuild=False, progress=progress)
    try:
        planner = build_planner(settings, workspace, version)
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    store = online_store(settings, workspace.catalog)
    processor = build_processor(settings, workspace.catalog, planner, store)
    events = workspace.dataset.events()
    total = len(workspace.dataset.interactions)
    if limit is not None:
        events, total = islice(events, limit), min(limit, total)
    report = replay(events, processor, settings.replay.batch_size, total=total, progress=progress)
    summary: dict[str, Any] = {
        "dataset": workspace.dataset.name,
        "catalog_version": workspace.catalog.version,
        "clusters": len(workspace.catalog),
        "planner": planner.model_version,
        "online_store": settings.feast.online_store,
        **report.as_dict(),
    }
    print_replay(summary)
    sample_users = sorted(report.planned_users, key=_natural)[:samples]
    rows = lookup_plans(store, sample_users)
    print_lookup(rows)
    summary["sample_plans"] = rows
    return summary


def _natural(user_id: str) -> tuple[int, str]:
    return (int(user_id), "") if user_id.isdigit() else (sys.maxsize, user_id)


def _write_json(path: Path | None, payload: Any) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str))
    typer.echo(f"wrote {path}")


# -- command groups --
from plugin.cli.feedback import register as register_feedback  # noqa: E402

register_feedback(app)  # refresh, monitor, feedback stats|compact|fresh-eval
from plugin.cli.stack import register as register_streaming  # noqa: E402

register_streaming(app)  # stack, worker, produce, precompute
from plugin.cli.bench import bench_app  # noqa: E402  (light: heavy imports are lazy)
from plugin.cli.triton import models_app, triton_app  # noqa: E402

app.add_typer(triton_app, name="triton")
app.add_typer(models_app, name="models")
app.add_typer(bench_app, name="bench")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
