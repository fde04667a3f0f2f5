"""`explore triton up|down|status|metrics` and `explore models list|publish|load|unload|rollback`.

The local server is the tritonserver unpacked by ``make triton``, on 127.0.0.1 with the ports
of the settings' ``triton`` section, explicit model control, and its log in
``<var_dir>/logs/triton.log``. Model management goes through Triton's repository API
(:mod:`plugin.serving.control`, docs/TRITON.md); :mod:`plugin.jobs.serving` holds the shared
steps.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from plugin.cli.common import JsonOpt, records_table, settings, warn, write_json
from plugin.errors import ServerUnreachable
from plugin.settings import Settings

triton_app = typer.Typer(
    help="The local Triton Inference Server: up, down, status, metrics.", no_args_is_help=True
)
models_app = typer.Typer(
    help="Model versions: list, publish (gate-checked), load, unload, rollback.",
    no_args_is_help=True,
)


# -- explore triton ------------------------------------------------------------------------


@triton_app.command("up")
def up(
    load: Annotated[
        bool, typer.Option("--load/--no-load", help="load the published version once up")
    ] = True,
    json_path: JsonOpt = None,
) -> None:
    """Start tritonserver detached (idempotent) and load the published model version."""
    from plugin.cli.output import print_published_load
    from plugin.jobs.serving import triton_up

    started = triton_up(settings(), load=load)
    typer.echo(started.server.describe())
    if started.load is not None:
        print_published_load(started.load)
    write_json(json_path, started.as_dict())


@triton_app.command("down")
def down() -> None:
    """Stop the detached tritonserver (idempotent)."""
    from plugin.jobs.serving import SERVER_NAME
    from plugin.localstack import RunDirectory

    state = RunDirectory.default(settings().var_dir).stop(SERVER_NAME)
    typer.echo(state.describe("stopped") if state else f"{SERVER_NAME}: not running")


@triton_app.command("status")
def status(json_path: JsonOpt = None) -> None:
    """Whether tritonserver runs, which model versions are ready, and its request figures.

    Exit status 1 when no server runs or answers."""
    from plugin.jobs.serving import SERVER_NAME, model_control, repository
    from plugin.localstack import RunDirectory

    config = settings()
    state = RunDirectory.default(config.var_dir).status(SERVER_NAME)
    payload: dict[str, Any] = {"process": None, "reachable": False}
    if state is not None:
        typer.echo(state.describe())
        payload["process"] = {"pid": state.pid, **state.endpoints, "log": state.log_path}
    with model_control(config) as ctl:
        reachable = ctl.reachable()
        entries = ctl.index() if reachable else []
    if not reachable:
        typer.echo(
            f"triton: not reachable at {config.triton.host}:{config.triton.grpc_port}"
            + ("" if state else " (start it with `explore triton up`)")
        )
        write_json(json_path, payload)
        if state is None:
            raise typer.Exit(1)
        return
    payload.update(reachable=True, models=entries)
    typer.echo(records_table([{"model": e.get("name"), **_entry(e)} for e in entries]))
    pointer = repository(config).published()
    typer.echo(f"published version: {pointer.version if pointer else 'none'}")
    rows = _metrics_rows(config)
    if rows:
        typer.echo(records_table(rows))
    payload["metrics"] = rows
    write_json(json_path, payload)


def _entry(entry: dict[str, str]) -> dict[str, str]:
    return {
        "version": entry.get("version", "-"),
        "state": entry.get("state", "-"),
        "reason": entry.get("reason", "")[:80],
    }


def _metrics_rows(config: Settings) -> list[dict[str, Any]]:
    from plugin.serving.server_metrics import metrics_table, scrape

    url = f"http://{config.triton.host}:{config.triton.metrics_port}/metrics"
    try:
        return metrics_table(scrape(url, timeout=config.triton.connect_timeout_s).values())
    except OSError as exc:
        warn(f"metrics unavailable at {url}: {exc}")
        return []


@triton_app.command("metrics")
def metrics(json_path: JsonOpt = None) -> None:
    """Triton's /metrics per model: requests, rows per batch, request/queue/compute ms.

    Figures are cumulative since the server started; means are per successful request."""
    config = settings()
    rows = _metrics_rows(config)
    if not rows:
        raise ServerUnreachable(
            f"no model metrics at {config.triton.host}:{config.triton.metrics_port}",
            hint="is Triton up with models loaded (`explore triton status`)?",
        )
    typer.echo(records_table(rows))
    write_json(json_path, {"metrics": rows})


# -- explore models ------------------------------------------------------------------------


@models_app.command("list")
def list_versions(json_path: JsonOpt = None) -> None:
    """Trained versions: quality gate, published or previous, and what Triton serves."""
    from plugin.jobs.serving import model_control, repository

    config = settings()
    repo = repository(config)
    pointer = repo.published()
    ready: dict[str, list[int]] = {}
    with model_control(config) as ctl:
        reachable = ctl.reachable()
        if reachable:
            ready = ctl.ready_versions()
    rows = []
    for version in repo.complete_versions():
        manifest = repo.manifest(version)
        gate = repo.gate(version)
        loaded = [m for m, versions in sorted(ready.items()) if version in versions]
        role = ""
        if pointer is not None and version == pointer.version:
            role = "published"
        elif pointer is not None and version in pointer.previous:
            role = f"previous #{pointer.previous.index(version) + 1}"
        rows.append(
            {
                "version": version,
                "gate": "passed" if gate.get("passed") else "FAILED",
                "validity": gate.get("validity"),
                "recall": gate.get("recall_at_n"),
                "catalog": str(manifest.get("catalog_version", ""))[:8],
                "objective": manifest.get("objective", ""),
                "role": role,
                "on triton": ",".join(loaded) if reachable else "(not running)",
            }
        )
    typer.echo(records_table(rows) if rows else "no trained versions; run `explore train`")
    write_json(
        json_path,
        {
            "versions": rows,
            "published": pointer.as_dict() if pointer else None,
            "triton": ready if reachable else None,
        },
    )


@models_app.command("publish")
def publish_version(
    version: Annotated[
        int | None, typer.Argument(help="trained version (default: the newest)")
    ] = None,
    json_path: JsonOpt = None,
) -> None:
    """Publish a trained version if its quality gate passed, and load it on Triton.

    A failed load leaves the serving version (and the published pointer) in place.
    """
    from plugin.cli.output import print_load_report
    from plugin.jobs.serving import model_control, repository
    from plugin.serving.control import publish

    config = settings()
    with model_control(config) as ctl:
        outcome = publish(repository(config), ctl, version)
    typer.echo(outcome.describe("published"))
    if outcome.report is not None:
        print_load_report(outcome.report)
    previous = outcome.pointer.previous
    typer.echo(f"rollback target: {previous[0] if previous else 'none'}")
    write_json(
        json_path,
        {
            "pointer": outcome.pointer.as_dict(),
            "load": outcome.report.as_dict() if outcome.report else None,
        },
    )


@models_app.command("rollback")
def rollback_version(json_path: JsonOpt = None) -> None:
    """Serve the previously published version again (the pointer moves back to it)."""
    from plugin.cli.output import print_load_report
    from plugin.jobs.serving import model_control, repository
    from plugin.serving.control import rollback

    config = settings()
    with model_control(config) as ctl:
        outcome = rollback(repository(config), ctl)
    typer.echo(outcome.describe("rolled back to"))
    if outcome.report is not None:
        print_load_report(outcome.report)
    write_json(
        json_path,
        {
            "pointer": outcome.pointer.as_dict(),
            "load": outcome.report.as_dict() if outcome.report else None,
        },
    )


@models_app.command("load")
def load_models(
    models: Annotated[
        list[str] | None,
        typer.Argument(
            help="novelty | novelty_llm | alignment | planner (default: the version's three)"
        ),
    ] = None,
    json_path: JsonOpt = None,
) -> None:
    """(Re)load the published version on Triton: all three models, or the ones named."""
    from plugin.cli.output import print_load_report
    from plugin.jobs.serving import model_control

    with model_control(settings()) as ctl:
        report = ctl.load(models or None)
    typer.echo(f"loaded version {report.version}")
    print_load_report(report)
    write_json(json_path, report.as_dict())


@models_app.command("unload")
def unload_model(
    model: Annotated[str, typer.Argument(help="novelty | novelty_llm | alignment | planner")],
    json_path: JsonOpt = None,
) -> None:
    """Unload one model from Triton; refused for a model the loaded planner needs."""
    from plugin.cli.output import print_load_report
    from plugin.jobs.serving import model_control

    with model_control(settings()) as ctl:
        report = ctl.unload(model)
    typer.echo(f"unloaded {model}")
    print_load_report(report)
    write_json(json_path, report.as_dict())
