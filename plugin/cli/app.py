"""`explore`: the command line of interest-explorer. Every command has --help.

A :class:`~plugin.errors.UserError` from any command is printed as one ``error:`` line (exit
status 1 or 2, see :class:`~plugin.cli.common.ExploreGroup`); any other exception is a bug and
keeps its traceback.
"""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path
from typing import Annotated

import typer

from plugin.cli.bench import bench_app
from plugin.cli.common import (
    DatasetOpt,
    ExploreGroup,
    InteractionsOpt,
    ItemsOpt,
    JsonOpt,
    PlannerOpt,
    QuietOpt,
    settings,
    warn,
    write_json,
)
from plugin.cli.feedback import register as register_feedback
from plugin.cli.stack import register as register_streaming
from plugin.cli.triton import models_app, triton_app

ObjectiveOpt = Annotated[
    str | None, typer.Option(help="alignment objective: pointwise | pairwise (default: settings)")
]
TextInitOpt = Annotated[
    bool | None,
    typer.Option("--text-init/--no-text-init", help="init cluster tokens from text"),
]

NoveltyOpt = Annotated[
    str | None,
    typer.Option(
        help="novelty model: id (the id transformer) | llm (the fine-tuned language model, "
        "models.llm.* settings) (default: settings)"
    ),
]

AlignmentFeaturesOpt = Annotated[
    str | None,
    typer.Option(
        help="alignment's cluster vectors: id (learned id embeddings) | lm (a projection of the "
        "language model's frozen description features, models.llm.base) (default: settings)"
    ),
]

app = typer.Typer(
    cls=ExploreGroup,
    help="LLM-style interest exploration for a recommender: clusters, planners, streaming, Feast.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


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
    typer.echo(settings().model_dump_json(indent=2))


@app.command()
def clusters(
    dataset: DatasetOpt = None,
    interactions: InteractionsOpt = None,
    items: ItemsOpt = None,
    leaf_clusters: Annotated[int | None, typer.Option(help="number of leaf clusters")] = None,
    json_path: JsonOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Build the interest-cluster catalog from the training part of a dataset and save it."""
    from plugin.cli.output import catalog_summary, print_catalog
    from plugin.jobs.catalog import build_clusters

    config = settings(dataset, interactions, items, clusters={"leaf_clusters": leaf_clusters})
    built = build_clusters(config, progress=not quiet)
    print_catalog(built.catalog, limit=12)
    typer.echo(f"catalog {built.catalog.version} saved to {built.path}")
    write_json(json_path, catalog_summary(built.catalog))


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
    from plugin.cli.output import print_replay_summary
    from plugin.jobs.replay import replay_dataset

    config = settings(
        dataset, interactions, items, replay={"batch_size": batch_size}, planner={"kind": planner}
    )
    summary = replay_dataset(config, limit=limit, samples=samples, progress=not quiet)
    print_replay_summary(summary)
    write_json(json_path, summary)


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
    from plugin.cli.output import print_replay_summary, print_streaming

    if stack:
        config = settings(planner={"kind": planner or "triton"})
        if config.planner.kind == "triton":
            from plugin.localstack import TritonInstall

            # The job checks this too, but only after the 15 s of importing it.
            TritonInstall().check()
        from plugin.jobs.stack_demo import run_stack_demo

        summary = run_stack_demo(config, limit, progress=not quiet)
        print_replay_summary(summary, streaming=print_streaming)
    else:
        from plugin.jobs.demo import run_demo

        summary = run_demo(settings(planner={"kind": planner}), limit, progress=not quiet)
        print_replay_summary(summary)
    write_json(json_path, summary)


def model_options(
    objective: str | None, text_init: bool | None, novelty: str | None, features: str | None
) -> dict[str, object]:
    """The ``models`` settings that ``train`` and ``evaluate`` take from their options."""
    return {
        "objective": objective,
        "text_init": text_init,
        "novelty": novelty,
        "alignment_features": features,
    }


@app.command()
def train(
    dataset: DatasetOpt = None,
    interactions: InteractionsOpt = None,
    items: ItemsOpt = None,
    objective: ObjectiveOpt = None,
    text_init: TextInitOpt = None,
    novelty: NoveltyOpt = None,
    alignment_features: AlignmentFeaturesOpt = None,
    json_path: JsonOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Train the novelty and alignment models and write a new version.

    Both are fit on the training part of the time split; the quality gate runs on the
    held-out part; both models go under model_repository/<model>/<version>/.
    """
    from plugin.cli.output import print_training
    from plugin.jobs.train import train as train_models

    config = settings(
        dataset,
        interactions,
        items,
        models=model_options(objective, text_init, novelty, alignment_features),
    )
    trained = train_models(config, progress=not quiet)
    print_training(trained.version, trained.manifest)
    write_json(json_path, trained.as_dict())
    if not trained.passed:
        warn(
            f"version {trained.version} FAILED the quality gate ({'; '.join(trained.reasons)}); "
            "it will not be published"
        )


@app.command()
def evaluate(
    dataset: DatasetOpt = None,
    interactions: InteractionsOpt = None,
    items: ItemsOpt = None,
    version: Annotated[
        int | None, typer.Option(help="evaluate this trained version (default: train afresh)")
    ] = None,
    objective: ObjectiveOpt = None,
    text_init: TextInitOpt = None,
    novelty: NoveltyOpt = None,
    alignment_features: AlignmentFeaturesOpt = None,
    json_path: JsonOpt = None,
    plot_path: Annotated[
        Path | None, typer.Option("--plot", help="PNG of the n-scaling curve and trade-off")
    ] = None,
    robustness: Annotated[
        bool,
        typer.Option(
            "--robustness",
            help="run at several seeds and split points and on two synthetic datasets",
        ),
    ] = False,
    seeds: Annotated[str, typer.Option(help="--robustness: comma-separated seeds")] = "7,8,9",
    splits: Annotated[
        str, typer.Option(help="--robustness: other split quantiles, comma-separated")
    ] = "0.7,0.9",
    synthetic: Annotated[
        bool, typer.Option("--synthetic/--no-synthetic", help="--robustness: synthetic runs")
    ] = True,
    quiet: QuietOpt = False,
) -> None:
    """Evaluate every planning method offline on a time split.

    Each method plans each held-out novel engagement; prints the table, and writes JSON and a
    PNG plot (n-scaling curve and novelty/relevance trade-off). With --robustness, the whole
    evaluation runs per seed, per split point and on the synthetic datasets, and prints one
    line per run against the targets (JSON: default var/robustness.json, kept after each run).
    """
    from plugin.cli.output import print_evaluation, print_robustness, print_robustness_run
    from plugin.jobs.evaluate import evaluate as evaluate_methods
    from plugin.jobs.evaluate import robustness_study

    config = settings(
        dataset,
        interactions,
        items,
        models=model_options(objective, text_init, novelty, alignment_features),
    )
    if robustness:
        study = robustness_study(
            config,
            [int(x) for x in seeds.split(",") if x.strip()],
            [float(x) for x in splits.split(",") if x.strip()],
            synthetic,
            json_path or config.var_dir / "robustness.json",
            progress=not quiet,
            on_run=print_robustness_run,
        )
        print_robustness(study)
        typer.echo(f"wrote {json_path or config.var_dir / 'robustness.json'}")
        return
    plot = plot_path or (json_path.with_suffix(".png") if json_path else None)
    report = evaluate_methods(config, version=version, plot_path=plot, progress=not quiet)
    print_evaluation(report)
    if plot is not None:
        typer.echo(f"wrote {plot}")
    write_json(json_path, report)


@app.command()
def lookup(
    user_ids: Annotated[list[str], typer.Argument(help="users to look up")],
    json_path: JsonOpt = None,
) -> None:
    """Look up users' plans from Feast the way a ranker does.

    Prints each plan with its readable summary, its keywords and the planned cluster's top
    items.
    """
    from plugin.cli.output import print_lookup
    from plugin.jobs.lookup import lookup as lookup_users

    rows = lookup_users(settings(), user_ids)
    print_lookup(rows)
    write_json(json_path, {"plans": rows})


@app.command()
def rebuild(json_path: JsonOpt = None, quiet: QuietOpt = False) -> None:
    """Rebuild the Redis online state from the events Kafka still retains.

    For a Redis that lost its data: workers exit with status 65 and refuse to start until
    this has run. Stop them first. It replays the events topic from its earliest offset
    through the batch processor (sequences, plans, owed replans), rewrites cluster_items and
    writes a new generation marker; then start the workers again (docs/ROBUSTNESS.md).
    """
    from plugin.jobs.rebuild import rebuild_online_state

    report = rebuild_online_state(settings(), progress=not quiet)
    typer.echo(
        f"rebuilt {report['users']:,} users from {report['messages']:,} messages of "
        f"{report['topic']} ({report['events']:,} events, {report['dead_letters_skipped']:,} "
        f"dead letters skipped, {report['plans']:,} plans) in {report['seconds']:.1f} s; "
        f"new generation marker {report['generation_key']}"
    )
    write_json(json_path, report)


# -- command groups, after the commands above so that --help lists those first --
register_feedback(app)  # refresh, monitor, feedback stats|compact|fresh-eval
register_streaming(app)  # stack, worker, produce, precompute
app.add_typer(triton_app, name="triton")
app.add_typer(models_app, name="models")
app.add_typer(bench_app, name="bench")


def main() -> None:
    """The ``explore`` entry point."""
    app()


if __name__ == "__main__":
    main()
