"""`explore refresh`, `explore monitor` and `explore feedback stats|compact|fresh-eval`.

The workflows are :mod:`plugin.jobs.refresh` (the feedback loop of docs/FEEDBACK.md) and
:mod:`plugin.jobs.monitor`; these commands parse options and print what they return.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from plugin.cli.common import JsonOpt, records_table, settings, warn, write_json
from plugin.errors import InvalidInput

if TYPE_CHECKING:
    from plugin.jobs.refresh import RefreshReport

feedback_app = typer.Typer(
    help="The feedback log: stats, compaction, and the fresh-transition measurement.",
    no_args_is_help=True,
)

# Exit status of `explore refresh` when the gate failed (a step that fails exits 2).
EXIT_GATE_FAILED = 1


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
    from plugin.jobs.refresh import run_refresh

    report = run_refresh(
        settings(feedback={"label_weight": label_weight}),
        novelty=novelty,
        publish=publish,
        use_triton=triton,
        cache=cache,
        aggregates=aggregates,
        purge_old_cache=purge_old_cache,
    )
    print_refresh(report)
    write_json(json_path, report.as_dict())
    if report.gate is not None and not report.gate["passed"]:
        warn(
            f"version {report.version} FAILED the gate ({'; '.join(report.gate['reasons'])}); "
            f"version {report.serving_before} still serves"
        )
        raise typer.Exit(EXIT_GATE_FAILED)


def print_refresh(report: RefreshReport) -> None:
    """The steps, the serving and refreshed models side by side, and the serving versions."""
    rows = [
        {
            "step": s.name,
            "status": s.status,
            "seconds": round(s.seconds, 2),
            "detail": _short_detail(s.detail),
        }
        for s in report.steps
    ]
    typer.echo(records_table(rows))
    if report.before and report.after:
        sides = (("serving", report.before), ("refreshed", report.after))
        typer.echo(
            records_table(
                [
                    {
                        "models": name,
                        "positive hit@1": side["heldout"]["positive_hit_at_1"],
                        "hit@1": side["heldout"]["hit_at_1"],
                        "plan coverage": side["plans"]["coverage"],
                        "plan Gini": side["plans"]["gini"],
                        "top planned (cluster, share)": str(side["plans"]["top"][:3]),
                    }
                    for name, side in sides
                ]
            )
        )
    typer.echo(
        f"refresh took {report.seconds:.1f} s; serving version: "
        f"{report.serving_before} -> {report.serving_after}"
    )


def _short_detail(detail: dict[str, Any], limit: int = 90) -> str:
    text = ", ".join(f"{k}={v}" for k, v in detail.items() if not isinstance(v, dict | list))
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
    try:
        first = date.fromisoformat(since) if since else None
    except ValueError:
        raise InvalidInput(f"--since must be YYYY-MM-DD, not {since!r}") from None
    from plugin.jobs.monitor import monitor

    config = settings(feedback={"monitor_window": window})
    outcome = monitor(config, since=first, plot_path=plot_path)
    report = outcome.report
    size = config.feedback.monitor_window
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
    typer.echo(records_table(rows))
    latest = report["latest"]
    typer.echo(f"latest window: {latest['start']} .. {latest['end']}")
    typer.echo(f"wrote {outcome.plot}")
    write_json(json_path, report)


@feedback_app.command("stats")
def stats_command(json_path: JsonOpt = None) -> None:
    """The log's size: dates, parts, rows, bytes; and records per source and model version."""
    from plugin.jobs.monitor import feedback_stats

    found = feedback_stats(settings())
    typer.echo(f"feedback log {found.log_dir}: {found.size}")
    typer.echo(f"unique records: {found.unique_records:,}")
    if found.by_model_version:
        rows = [{"model version": v, "records": c} for v, c in found.by_model_version.items()]
        typer.echo(records_table(rows))
    write_json(json_path, found.as_dict())


@feedback_app.command("compact")
def compact_command() -> None:
    """Merge each date folder's small parts into one (readers dedupe meanwhile)."""
    from plugin.wiring import feedback_log

    merged = feedback_log(settings()).compact()
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
    from plugin.jobs.evaluate import fresh_evaluation

    report = fresh_evaluation(settings(), version)
    rows = [
        {"method": name, **{m: round(v, 4) for m, v in metrics.items()}}
        for name, metrics in report["methods"].items()
    ]
    typer.echo(records_table(rows))
    write_json(json_path, report)


def register(app: typer.Typer) -> None:
    """Add ``refresh``, ``monitor`` and the ``feedback`` group to the ``explore`` app."""
    app.command("refresh")(refresh_command)
    app.command("monitor")(monitor_command)
    app.add_typer(feedback_app, name="feedback")
