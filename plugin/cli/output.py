"""What the commands print: catalogs, replays, lookups, training and evaluation reports."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import typer

from plugin.cli.common import pairs_table
from plugin.core.catalog import ClusterCatalog
from plugin.tables import table

if TYPE_CHECKING:
    from plugin.jobs.serving import PublishedLoad
    from plugin.serving.control import LoadReport


def catalog_summary(catalog: ClusterCatalog) -> dict[str, Any]:
    sizes = [c.size for c in catalog.clusters]
    return {
        "version": catalog.version,
        "leaf_clusters": len(catalog.clusters),
        "parent_clusters": len(catalog.parents),
        "items": len(catalog.item_to_cluster),
        "size_min": min(sizes),
        "size_max": max(sizes),
        "granularity": catalog.build.get("granularity"),
        "clusters": [
            {
                "cluster_id": c.cluster_id,
                "parent": catalog.parents[c.parent_id].description,
                "description": c.description,
                "summary": c.readable,
                "size": c.size,
                "top_titles": [catalog.title(i) for i in c.top_items[:3]],
            }
            for c in catalog.clusters
        ],
    }


def print_catalog(catalog: ClusterCatalog, limit: int) -> None:
    summary = catalog_summary(catalog)
    typer.echo(
        f"\n{summary['leaf_clusters']} leaf clusters in {summary['parent_clusters']} parents over "
        f"{summary['items']:,} items (sizes {summary['size_min']}..{summary['size_max']})"
    )
    granularity = summary["granularity"]
    if granularity:
        measured = ", ".join(
            f"{row['leaf_clusters']}: {row['median_history_moves']:g} moves/history, "
            f"smallest {row['smallest_leaf']}"
            for row in granularity["measured"]
        )
        verdict = "chose" if granularity["passed"] else "fell back on"
        typer.echo(f"granularity rule {verdict} {granularity['leaf_clusters']} leaves ({measured})")
    rows = [
        (
            c["cluster_id"],
            c["parent"][:24],
            c["description"][:40],
            c["size"],
            c["summary"][:72],
        )
        for c in summary["clusters"][:limit]
    ]
    typer.echo(table(["id", "parent", "keywords", "items", "summary"], rows))
    if len(catalog.clusters) > limit:
        typer.echo(f"... and {len(catalog.clusters) - limit} more")


def print_replay(summary: dict[str, Any]) -> None:
    steps = summary["seconds_by_step"]
    rows = [
        ("dataset", summary["dataset"]),
        ("online store", summary["online_store"]),
        ("planner", summary["planner"]),
        ("clusters", summary["clusters"]),
        ("events", summary["events"]),
        ("events/s", summary["events_per_second"]),
        ("users", summary["users"]),
        ("users with a plan", summary["planned_users"]),
        ("replans", summary["replans"]),
        ("stale events skipped", summary["stale_events"]),
        ("unknown items skipped", summary["unknown_items"]),
        (
            "seconds (read/core/plan/write)",
            " / ".join(f"{steps[name]:.2f}" for name in ("read", "core", "plan", "write")),
        ),
    ]
    typer.echo("\n" + table(["replay", "value"], rows))


def print_replay_summary(
    summary: dict[str, Any], streaming: Callable[[dict[str, Any]], None] | None = None
) -> None:
    """A replay's or a demo's summary, then (``streaming``) the stream's figures, then the
    sample plans."""
    print_replay(summary)
    if streaming is not None:
        streaming(summary)
    print_lookup(summary["sample_plans"])


def print_streaming(summary: dict[str, Any]) -> None:
    """What the streaming demo adds: batches, latency, cache hit rate, dead letters."""
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
    typer.echo("\n" + pairs_table(rows, ("stream", "value")))


def print_lookup(rows: Sequence[dict[str, Any]]) -> None:
    for row in rows:
        if row.get("plan", "") is None:
            typer.echo(f"\nuser {row['user_id']}: no plan yet")
            continue
        typer.echo(
            f"\nuser {row['user_id']}  history (oldest -> newest): "
            + " -> ".join(
                f"[{h}] {d}"
                for h, d in reversed(
                    list(zip(row["history"], row["history_descriptions"], strict=True))
                )
            )
        )
        typer.echo(f"  plan: [{row['cluster_id']}] {row['summary']}  ({row['model_version']})")
        typer.echo(f"  keywords: {row['description']}")
        typer.echo(f"  candidates: {row['candidates'][:8]}")
        typer.echo(f"  top items: {'; '.join(row['top_titles'][:5])}")


def print_training(version: int, manifest: dict[str, Any]) -> None:
    gate = manifest["gate"]
    seconds = manifest["seconds"]
    rows = [
        ("version", version),
        ("catalog", manifest["catalog_version"]),
        (
            "novelty training rows",
            # Versions trained before the window objective existed used the token one.
            f"{manifest['training_pairs']:,} "
            f"({manifest.get('novelty_objective', 'tokens')} objective)",
        ),
        (
            "feedback rows / pairs",
            f"{manifest['feedback_rows']:,} / {manifest['feedback_pairs']:,}",
        ),
        ("novelty model", manifest.get("novelty", "id")),
        ("alignment objective", manifest["objective"]),
        ("text-initialised tokens", manifest["text_init"]),
        (
            "seconds: text / novelty / alignment",
            f"{seconds['text_embeddings']} / {seconds['novelty']} / {seconds['alignment']}",
        ),
        (
            "seconds: novelty base load / gate",
            f"{seconds.get('novelty_load', 0)} / {seconds.get('gate', '-')}",
        ),
        ("gate: validity", gate["validity"]),
        (f"gate: recall@{gate['n']}", gate["recall_at_n"]),
        ("gate", "PASSED" if gate["passed"] else "FAILED: " + "; ".join(gate["reasons"])),
        *_selection_rows(manifest),
    ]
    typer.echo("\n" + table(["training", "value"], rows))


def _selection_rows(manifest: dict[str, Any]) -> list[tuple[str, Any]]:
    """What the validation search and the granularity rule chose (absent: nothing)."""
    rows: list[tuple[str, Any]] = []
    catalog = manifest.get("catalog") or {}
    granularity = catalog.get("granularity")
    if granularity:
        rows.append(("leaf clusters (granularity rule)", f"{granularity['leaf_clusters']} leaves"))
    selection = manifest.get("selection")
    if selection:
        chosen, validation = selection["chosen"], selection["validation"]
        defaults = validation.get("defaults") or {}
        rows += [
            (
                "chosen on validation",
                f"n={chosen['n']} T={chosen['temperature']} weight={chosen['weight']} "
                f"window={chosen.get('window_weight', 0.0)} "
                f"(L2 {chosen.get('window_l2')}, decay {chosen.get('window_decay')}) "
                f"{chosen['label_rule']} (prior {chosen['prior_strength']})",
            ),
            (
                "validation positive hit@1",
                f"{chosen['positive_hit_at_1']:.4f} (before the search: "
                f"{defaults.get('positive_hit_at_1', float('nan')):.4f}; "
                f"{validation['moves']:,} moves)",
            ),
            ("search seconds", selection["seconds"]),
        ]
    return rows


def print_evaluation(report: dict[str, Any]) -> None:
    from plugin.evaluation.offline import METRICS

    def cell(metrics: dict[str, Any], metric: str) -> str:
        # A point estimate and, where the report has one, its bootstrap interval.
        interval = metrics.get(f"{metric}_ci")
        if interval is None:
            return f"{metrics[metric]:.3f}"
        return f"{metrics[metric]:.3f} [{interval[0]:.3f}, {interval[1]:.3f}]"

    def label(name: str) -> str:
        return "sasrec (baseline)" if name == "sasrec" else name

    data = report["dataset"]
    typer.echo(
        f"\n{data['name']}: {data['cases']:,} held-out novel engagements "
        f"({data['positive_cases']:,} positive), {data['clusters']} clusters, n={data['n']}, "
        f"T={data['temperature']}, weight={data.get('weight', 1.0)}"
    )
    # Two tables of three metrics: with intervals, six columns do not fit a terminal.
    for group in (METRICS[:3], METRICS[3:]):
        rows = [
            (label(name), *(cell(metrics, m) for m in group))
            for name, metrics in report["methods"].items()
        ]
        typer.echo("\n" + table(["method", *group], rows))
    rare = data.get("rare_histories")
    if rare and rare.get("methods"):
        rows = [
            (label(name), *(f"{metrics[m]:.3f}" for m in ("positive_hit_at_1", "hit_at_n")))
            for name, metrics in rare["methods"].items()
        ]
        typer.echo(
            f"\nrare histories ({rare['rule']}): {rare['cases']:,} cases "
            f"({rare['positive_cases']:,} positive)\n"
            + table(["method", "positive_hit_at_1", "hit_at_n"], rows)
        )
    bootstrap = data.get("bootstrap")
    if bootstrap:
        typer.echo(
            f"[lo, hi]: {bootstrap['confidence']:.0%} percentile bootstrap over the cases, "
            f"{bootstrap['resamples']:,} resamples, seed {bootstrap['seed']}; a resample can "
            "only lose planned clusters, so coverage's interval is a lower range"
        )
    paired = report.get("paired", {})
    if paired:
        rows = [
            (
                pair.replace(" - sasrec", " - sasrec (baseline)"),
                f"{row['positive_hit_at_1']:+.4f}",
                f"[{row['ci'][0]:+.4f}, {row['ci'][1]:+.4f}]",
                "yes" if row["ci"][0] > 0 else "no",
            )
            for pair, row in paired.items()
        ]
        typer.echo(
            "\n"
            + table(["paired, positive_hit_at_1", "difference", "95% interval", "above 0"], rows)
        )
    scaling = [
        (
            row["n"],
            round(row["hit_at_1"], 4),
            cell(row, "positive_hit_at_1"),
            round(row["hit_at_n"], 4),
            round(row["coverage"], 4),
        )
        for row in report["n_scaling"]
    ]
    typer.echo(
        "\n" + table(["n", "hit_at_1", "positive_hit_at_1", "hit_at_n", "coverage"], scaling)
    )


def print_load_report(report: LoadReport) -> None:
    """Each load or unload step, then what serves now."""
    for step in report.steps:
        typer.echo(f"  {step.describe()}")
    if report.serving:
        serving = ", ".join(f"{m} {v}" for m, v in sorted(report.serving.items()))
        typer.echo(f"  serving: {serving}")


def print_published_load(load: PublishedLoad) -> None:
    """What loading the published version on Triton found or did."""
    if load.version is None:
        typer.echo("triton: no version is published yet; `explore models publish` serves one")
    elif load.report is None:
        typer.echo(f"triton: published version {load.version} already serves")
    else:
        typer.echo(f"triton: loading published version {load.version}")
        print_load_report(load.report)


def _robustness_cells(row: dict[str, Any]) -> tuple[Any, ...]:
    t, chosen = row["targets"], row["chosen"]
    lo, hi = t["vs_novelty_sample_ci"]
    sasrec = (
        f"{t['vs_sasrec']:+.3f} [{t['vs_sasrec_ci'][0]:+.3f}, {t['vs_sasrec_ci'][1]:+.3f}]"
        if t["vs_sasrec"] is not None
        else "-"
    )
    return (
        row["run"],
        row["clusters"],
        f"n={chosen['n']} T={chosen['temperature']} w={chosen['weight']} "
        f"ww={chosen.get('window_weight', 0.0)} l2={chosen.get('window_l2')} "
        f"decay={chosen.get('window_decay')} {chosen['label_rule']}({chosen['prior_strength']})",
        f"{t['best_of_n']:.3f}",
        f"{t['strongest_other']} {t['strongest_other_value']:.3f}",
        f"{t['vs_novelty_sample']:+.3f} [{lo:+.3f}, {hi:+.3f}]",
        sasrec,
        f"{t['novelty_rate']:.2f} / {t['coverage_ratio']:.2f}",
        "yes" if t["rises_with_n"] else "no",
    )


ROBUSTNESS_HEADERS = [
    "run",
    "leaves",
    "chosen",
    "best_of_n",
    "strongest other",
    "vs novelty_sample",
    "vs sasrec",
    "novelty / cov ratio",
    "rises 1..16",
]


def print_robustness_run(row: dict[str, Any]) -> None:
    """One finished run of the robustness study, as it finishes."""
    typer.echo("\n" + table(ROBUSTNESS_HEADERS, [_robustness_cells(row)]))


def print_robustness(study: dict[str, Any]) -> None:
    """The robustness study: one line per run (positive hit@1 and paired differences)."""
    rows = [_robustness_cells(row) for row in study["runs"]]
    typer.echo("\nrobustness (positive_hit_at_1; paired differences with 95% intervals)")
    typer.echo(table(ROBUSTNESS_HEADERS, rows))
