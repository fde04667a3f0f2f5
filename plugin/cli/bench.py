"""`explore bench ...`: benchmarks of the real path. Each prints tables and writes JSON.

* ``all``: every part below against one private stack (tansu, redis-server, tritonserver on
  free 127.0.0.1 ports), then a PNG plot; a few minutes on a 2-CPU machine;
* ``worker``, ``latency``, ``feast``, ``sweep``, ``profile``: one part each;
* ``fetch-wait``: latency and idle CPU for each ``worker.fetch_max_wait_ms``;
* ``drain``: the Kafka drain alone (worker against raw consumption, issue 15's target);
* ``planner``: the planner grid (in-process vs Triton, any batch sizes and concurrencies);
* ``report``: print and plot a saved run again.

The logic lives in ``plugin.bench``; docs/BENCHMARKS.md has the measured tables.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from plugin.cli.common import records_table, settings, warn, write_json
from plugin.errors import InvalidInput, UserError

bench_app = typer.Typer(help="Benchmarks: print a table and write JSON.", no_args_is_help=True)


def _parse_sizes(values: Sequence[str], name: str) -> list[int]:
    sizes = []
    for value in values:
        for part in value.split(","):
            if not part.strip().isdigit() or int(part) < 1:
                raise InvalidInput(f"{name} must be positive integers, got {part!r}")
            sizes.append(int(part))
    return sizes


@bench_app.command("planner")
def bench_planner(
    planners: Annotated[
        str, typer.Option(help="comma-separated: in-process, triton")
    ] = "in-process,triton",
    batch: Annotated[list[str] | None, typer.Option(help="plan requests per call")] = None,
    concurrency: Annotated[list[str] | None, typer.Option(help="concurrent callers")] = None,
    seconds: Annotated[float, typer.Option(help="measured seconds per cell")] = 5.0,
    server: Annotated[
        str, typer.Option(help="own: start a private Triton | running: use settings.triton")
    ] = "own",
    torch_threads: Annotated[
        int,
        typer.Option(help="torch threads of the in-process planner (0: torch's default)"),
    ] = 1,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="JSON output (default var/bench/planner.json)")
    ] = None,
) -> None:
    """Planner throughput (plans/s) and call latency, in-process vs Triton."""
    from plugin.bench.planner import PLANNER_KINDS, planner_bench

    kinds = [k.strip() for k in planners.split(",") if k.strip()]
    if not kinds or set(kinds) - set(PLANNER_KINDS):
        raise InvalidInput(f"--planners takes in-process and/or triton, got {planners!r}")
    if server not in ("own", "running"):
        raise InvalidInput(f"--server is own or running, got {server!r}")
    batches = _parse_sizes(batch or ["1", "64"], "--batch")
    concurrencies = _parse_sizes(concurrency or ["1", "32"], "--concurrency")
    config = settings()

    def show(row: dict[str, Any]) -> None:
        typer.echo(
            f"{row['planner']:10} batch {row['batch']:3} x {row['concurrency']:2}: "
            f"{row['plans_per_s']:>9,.0f} plans/s"
        )

    try:
        doc = planner_bench(
            config, kinds, batches, concurrencies, seconds, server, torch_threads, on_row=show
        )
    except (FileNotFoundError, ValueError, ConnectionError) as exc:  # no model, no server
        raise UserError(str(exc)) from exc
    results = doc["results"]
    columns = ("planner", "batch", "concurrency", "plans_per_s", "p50_ms", "p99_ms")
    extra = ("rows/batch", "queue ms", "compute ms")
    typer.echo(records_table([{c: r.get(c) for c in (*columns, *extra)} for r in results]))
    for row in results:
        if row["errors"]:
            warn(f"{row['planner']} batch {row['batch']} x {row['concurrency']}: {row['errors']}")
    write_json(json_path or config.var_dir / "bench" / "planner.json", doc)


# -- the real-path benchmarks (plugin.bench) ----------------------------------------------------

OutOpt = Annotated[
    Path | None, typer.Option("--out", help="folder for the JSON and the plot (var/bench)")
]
EventsOpt = Annotated[int, typer.Option(help="timed events per workload (worker, sweep)")]


def _run(parts: Sequence[str], name: str, out: Path | None, **changes: Any) -> None:
    """Run ``parts`` with the options changed, print the tables, write JSON and the plot."""
    from plugin.bench.report import plot, render
    from plugin.bench.suite import BenchOptions, run_suite

    config = settings()
    options = BenchOptions(**{k: v for k, v in changes.items() if v is not None})
    try:
        doc = run_suite(config, parts, options, echo=typer.echo)
    except (FileNotFoundError, ValueError, TimeoutError) as exc:  # no data, model or server
        raise UserError(str(exc)) from exc
    folder = out or config.var_dir / "bench"
    typer.echo("\n" + render(doc) + "\n")
    write_json(folder / f"{name}.json", doc)
    image = plot(doc, folder / f"{name}.png")
    if image is not None:
        typer.echo(f"wrote {image}")


def _floats(text: str | None, name: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise InvalidInput(f"{name} takes comma-separated numbers, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise InvalidInput(f"{name} takes positive numbers, got {text!r}")
    return values


def _ints(text: str | None, name: str) -> tuple[int, ...] | None:
    return None if text is None else tuple(_parse_sizes([text], name))


def _orders(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    from plugin.bench.workload import ORDERS

    values = tuple(v.strip() for v in text.split(",") if v.strip())
    if not values or set(values) - set(ORDERS):
        raise InvalidInput(f"--orders takes {' and/or '.join(ORDERS)}, got {text!r}")
    return values


@bench_app.command("all")
def bench_all(
    out: OutOpt = None,
    events: EventsOpt = 20_000,
    rates: Annotated[str | None, typer.Option(help="offered events/s, comma-separated")] = None,
    rate_seconds: Annotated[float, typer.Option(help="seconds at each rate")] = 10.0,
    quick: Annotated[
        bool, typer.Option("--quick", help="a smaller run (about a minute), for a smoke check")
    ] = False,
) -> None:
    """Every benchmark against one private stack: worker events/s (naive vs batched),
    latency at fixed rates through Kafka, planner plans/s, Feast rows/s, the batch-size sweep
    and the profile; tables, var/bench/all.json and var/bench/all.png."""
    changes: dict[str, Any] = {
        "events": events,
        "rates": _floats(rates, "--rates"),
        "rate_seconds": rate_seconds,
    }
    if quick:
        changes.update(QUICK)
    _run(("worker", "latency", "planner", "feast", "sweep", "profile"), "all", out, **changes)


# What --quick changes: every part, a fraction of the time.
QUICK: dict[str, Any] = {
    "events": 3000,
    "orders": ("interleaved",),
    "naive_seconds": 2.0,
    "batched_seconds": 5.0,
    "rates": (1000.0,),
    "rate_seconds": 4.0,
    "backlog": 2000,
    "feedback_rate": 0.0,
    "feast_sizes": (1, 100, 500),
    "feast_seconds": 0.5,
    "sweep_sizes": (1, 100, 500),
    "sweep_seconds": 1.5,
    "planner_seconds": 1.0,
    "profile_events": 2000,
}


@bench_app.command("worker")
def bench_worker(
    out: OutOpt = None,
    events: EventsOpt = 20_000,
    orders: Annotated[str | None, typer.Option(help="interleaved and/or time")] = None,
    naive_seconds: Annotated[float, typer.Option(help="time budget of the naive path")] = 8.0,
) -> None:
    """Worker events/s: the naive per-event path against the batched ones, for sequence
    updates only and with replans, same events and servers (var/bench/worker.json)."""
    _run(
        ("worker",),
        "worker",
        out,
        events=events,
        orders=_orders(orders),
        naive_seconds=naive_seconds,
    )


@bench_app.command("latency")
def bench_latency(
    out: OutOpt = None,
    rates: Annotated[str | None, typer.Option(help="offered events/s, comma-separated")] = None,
    rate_seconds: Annotated[float, typer.Option(help="seconds at each rate")] = 10.0,
    backlog: Annotated[int, typer.Option(help="events produced before the worker starts")] = 20_000,
    batch_within: Annotated[
        float | None, typer.Option(help="override worker.batch_within_s")
    ] = None,
    fetch_max_wait: Annotated[
        int | None, typer.Option(min=1, help="override worker.fetch_max_wait_ms")
    ] = None,
    feedback_rate: Annotated[
        float, typer.Option(help="also this rate with the feedback loop on (0: skip)")
    ] = 1000.0,
    warm_table: Annotated[
        bool,
        typer.Option(
            "--warm-table/--cold-table",
            help="fill the plan table with every history before the worker starts, as "
            "`explore precompute` does for a deployment (default: empty)",
        ),
    ] = False,
) -> None:
    """Event-to-plan latency p50/p95/p99 at fixed offered rates through tansu, the Faust
    worker (a child process), Feast on Redis and Triton (var/bench/latency.json)."""
    _run(
        ("latency",),
        "latency",
        out,
        rates=_floats(rates, "--rates"),
        rate_seconds=rate_seconds,
        backlog=backlog,
        batch_within_s=batch_within,
        fetch_max_wait_ms=fetch_max_wait,
        feedback_rate=feedback_rate,
        warm_table=warm_table,
    )


@bench_app.command("fetch-wait")
def bench_fetch_wait(
    out: OutOpt = None,
    waits: Annotated[
        str | None, typer.Option(help="worker.fetch_max_wait_ms values, comma-separated")
    ] = None,
    rates: Annotated[str | None, typer.Option(help="offered events/s, comma-separated")] = None,
    rate_seconds: Annotated[float, typer.Option(help="seconds at each rate")] = 10.0,
    idle_seconds: Annotated[
        float, typer.Option(min=1.0, help="seconds of idle CPU sampling per setting")
    ] = 20.0,
    repeats: Annotated[int, typer.Option(min=1, help="times the whole sweep runs")] = 1,
    warm_table: Annotated[
        bool,
        typer.Option(
            "--warm-table/--cold-table",
            help="fill the plan table with every history before each run, as a deployment "
            "does (default: empty)",
        ),
    ] = False,
) -> None:
    """Event-to-plan latency (feedback loop off and on) and the idle CPU use of the worker,
    tansu and redis-server for each fetch wait, in one run (var/bench/fetch-wait.json)."""
    _run(
        ("fetch-wait",),
        "fetch-wait",
        out,
        fetch_waits=_ints(waits, "--waits"),
        rates=_floats(rates, "--rates") or (1000.0,),
        rate_seconds=rate_seconds,
        idle_seconds=idle_seconds,
        repeats=repeats,
        warm_table=warm_table,
    )


@bench_app.command("feast")
def bench_feast(
    out: OutOpt = None,
    sizes: Annotated[str | None, typer.Option(help="rows per call, comma-separated")] = None,
    seconds: Annotated[float, typer.Option(help="seconds per cell")] = 1.5,
    cluster_nodes: Annotated[
        int, typer.Option(min=0, help="masters of the local Redis Cluster arm (0: skip it)")
    ] = 3,
) -> None:
    """Feast online-store rows/s: the SDK path (write_to_online_store, push,
    get_online_features) against the fast Redis store, on one redis-server and on a local
    Redis Cluster (var/bench/feast.json)."""
    _run(
        ("feast",),
        "feast",
        out,
        feast_sizes=_ints(sizes, "--sizes"),
        feast_seconds=seconds,
        feast_cluster_nodes=cluster_nodes,
    )


@bench_app.command("sweep")
def bench_sweep(
    out: OutOpt = None,
    sizes: Annotated[str | None, typer.Option(help="batch sizes, comma-separated")] = None,
    seconds: Annotated[float, typer.Option(help="seconds per batch size")] = 4.0,
    events: EventsOpt = 20_000,
) -> None:
    """Worker events/s and ms per batch across batch sizes (var/bench/sweep.json)."""
    _run(
        ("sweep",),
        "sweep",
        out,
        sweep_sizes=_ints(sizes, "--sizes"),
        sweep_seconds=seconds,
        events=events,
    )


@bench_app.command("profile")
def bench_profile(
    out: OutOpt = None,
    events: Annotated[int, typer.Option(help="events profiled per workload")] = 10_000,
) -> None:
    """cProfile of the batched worker path, by area and top functions, on the SDK store and
    on the fast store (var/bench/profile.json)."""
    _run(("profile",), "profile", out, profile_events=events)


@bench_app.command("platform")
def bench_platform(
    out: OutOpt = None,
    memory_users: Annotated[
        str | None, typer.Option(help="user counts of the Redis memory points (3: a fit)")
    ] = None,
    clusters: Annotated[
        str | None, typer.Option(help="leaf-cluster counts (table, memory, worker points)")
    ] = None,
    table_sample: Annotated[
        int, typer.Option(min=1, help="histories ranked per cluster count (then extrapolated)")
    ] = 2_000,
    worker_events: Annotated[int, typer.Option(min=1, help="events per worker point")] = 10_000,
    worker_users: Annotated[
        str | None, typer.Option(help="user-base sizes of the worker points")
    ] = None,
    drain_events: Annotated[
        int, typer.Option(min=0, help="events of the Kafka drain (raw vs worker; 0: skip)")
    ] = 20_000,
    lever_events: Annotated[
        int, typer.Option(min=0, help="events per run of the paired lever comparison (0: skip)")
    ] = 5_000,
    quick: Annotated[
        bool, typer.Option("--quick", help="small points (about a minute), for a smoke check")
    ] = False,
) -> None:
    """Platform-sized figures from the seeded synthetic workload (1M users, 50k items, 500
    clusters, Zipf popularity, bursty sessions): Redis memory per user, the lookup table's size
    and precompute time, worker events/s, the Kafka drain against raw consumption (profiled),
    the hot-path levers in paired runs, and their fitted growth (var/bench/platform.json and
    platform.png; docs/SCALING.md)."""
    from plugin.bench.platform import PlatformOptions, platform_bench
    from plugin.bench.platform_report import plot_platform, render_platform

    changes: dict[str, Any] = {
        "memory_users": _ints(memory_users, "--memory-users"),
        "clusters": _ints(clusters, "--clusters"),
        "table_sample": table_sample,
        "worker_events": worker_events,
        "worker_users": _ints(worker_users, "--worker-users"),
        "drain_events": drain_events,
    }
    if quick:
        changes.update(PLATFORM_QUICK)
    options = PlatformOptions(**{k: v for k, v in changes.items() if v is not None})
    for name in ("memory_users", "clusters", "worker_users"):
        if len(getattr(options, name)) < 2:
            raise InvalidInput(f"--{name.replace('_', '-')} needs at least 2 points to fit growth")
    config = settings()
    more = {}
    if lever_events:
        from plugin.bench.levers import lever_bench

        events = PLATFORM_QUICK["worker_events"] if quick else lever_events
        more["levers"] = lambda lab: lever_bench(
            lab,
            users=options.target_users,
            clusters=options.target_clusters,
            events=events,
            echo=typer.echo,
        )
    doc = platform_bench(config, options, echo=typer.echo, more=more)
    folder = out or config.var_dir / "bench"
    write_json(folder / "platform.json", doc)  # first: a long run is never lost to a report bug
    typer.echo("\n" + render_platform(doc) + "\n")
    typer.echo(f"wrote {plot_platform(doc, folder / 'platform.png')}")


@bench_app.command("drain")
def bench_drain(
    out: OutOpt = None,
    events: Annotated[int, typer.Option(min=1, help="events produced, then drained")] = 20_000,
    users: Annotated[int, typer.Option(min=1, help="the platform's user base")] = 1_000_000,
    clusters: Annotated[int, typer.Option(min=2, help="leaf clusters")] = 500,
    profile: Annotated[
        bool, typer.Option("--profile/--no-profile", help="also drain once under cProfile")
    ] = True,
) -> None:
    """The Kafka drain alone (part of `bench platform`): one worker emptying a backlog of
    platform events (interleaved users, replans on, plan table warm) against a raw aiokafka
    consumer on the same tansu in the same run, with issue 15's target (var/bench/drain.json)."""
    from plugin.bench.platform import PlatformOptions, drain_only
    from plugin.bench.platform_report import drain_tables
    from plugin.bench.report import machine_table, targets_table

    options = PlatformOptions(
        target_users=users, target_clusters=clusters, drain_events=events, drain_profile=profile
    )
    config = settings()
    doc = drain_only(config, options, echo=typer.echo)
    write_json((out or config.var_dir / "bench") / "drain.json", doc)
    parts = [machine_table(doc), *drain_tables(doc), targets_table(doc) or ""]
    typer.echo("\n" + "\n\n".join(parts) + "\n")


# What --quick changes in the platform bench.
PLATFORM_QUICK: dict[str, Any] = {
    "memory_users": (2_000, 4_000, 8_000),
    "memory_cluster_users": 2_000,
    "clusters": (50, 100, 200),
    "table_sample": 300,
    "worker_events": 2_000,
    "worker_users": (1_000, 10_000, 100_000),
    "drain_events": 3_000,
}


@bench_app.command("report")
def bench_report(
    path: Annotated[Path, typer.Argument(help="a JSON written by explore bench")],
    plot_path: Annotated[
        Path | None, typer.Option("--plot", help="also draw the plot here (PNG)")
    ] = None,
) -> None:
    """Print a saved run's tables again (and plot it); a platform run is refitted first."""
    from plugin.bench.report import plot, render

    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"{path}: {exc}") from exc
    if "memory_by_users" in doc:  # explore bench platform
        from plugin.bench.platform import PlatformOptions, fits
        from plugin.bench.platform_report import plot_platform, render_platform

        options = PlatformOptions(**{k: v for k, v in doc["options"].items() if k != "seed"})
        doc["fits"] = fits(doc, options)
        typer.echo(render_platform(doc))
        if plot_path is not None:
            typer.echo(f"wrote {plot_platform(doc, plot_path)}")
        return
    typer.echo(render(doc))
    if plot_path is not None and plot(doc, plot_path) is not None:
        typer.echo(f"wrote {plot_path}")
