"""`explore triton up|down|status|metrics` and `explore models list|publish|load|unload|rollback`.

The local server is the tritonserver unpacked by ``make triton``, on 127.0.0.1 with the ports
of the settings' ``triton`` section, explicit model control, and its log in
``<var_dir>/logs/triton.log``. Model management goes through Triton's repository API; see
:mod:`plugin.serving.control` and docs/TRITON.md.

Heavy imports (torch, tritonclient) happen inside the commands so ``explore --help`` stays
fast.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from plugin.settings import Settings, SettingsError, load_settings

if TYPE_CHECKING:
    from plugin.models.repository import ModelRepository
    from plugin.serving.control import LoadReport, ModelControl

triton_app = typer.Typer(
    help="The local Triton Inference Server: up, down, status, metrics.", no_args_is_help=True
)
models_app = typer.Typer(
    help="Model versions: list, publish (gate-checked), load, unload, rollback.",
    no_args_is_help=True,
)

JsonOpt = Annotated[Path | None, typer.Option("--json", help="also write the result as JSON here")]
SERVER_NAME = "triton"


# -- shared helpers ------------------------------------------------------------------------


def fail(message: str) -> NoReturn:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(2)


def warn(message: str) -> None:
    typer.secho(message, err=True, fg=typer.colors.YELLOW)


def settings() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        fail(str(exc))


def write_json(path: Path | None, payload: Any) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str))
    typer.echo(f"wrote {path}")


def text_table(rows: Sequence[dict[str, Any]]) -> str:
    """Rows of dicts as an aligned text table (numbers right-aligned); keys are the header."""
    if not rows:
        return "(none)"
    headers = list(rows[0])

    def show(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.0f}"
        return "-" if value is None else str(value)

    cells = [[show(row.get(h)) for h in headers] for row in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    numeric = [all(isinstance(row.get(h), int | float) for row in rows) for h in headers]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if right else v.ljust(w)
            for v, w, right in zip(values, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, cells)])


def repository(config: Settings) -> ModelRepository:
    from plugin.models.repository import ModelRepository

    return ModelRepository(config.models.repository)


def control(config: Settings) -> ModelControl:
    from plugin.serving.control import ModelControl

    return ModelControl(config.triton, repository(config))


def print_report(report: LoadReport) -> None:
    for step in report.steps:
        typer.echo(f"  {step.describe()}")
    if report.serving:
        serving = ", ".join(f"{m} {v}" for m, v in sorted(report.serving.items()))
        typer.echo(f"  serving: {serving}")


def management_errors() -> tuple[type[Exception], ...]:
    from plugin.models.repository import PublishError
    from plugin.serving.control import ModelControlError, TritonUnreachable

    return (PublishError, ModelControlError, TritonUnreachable, FileNotFoundError)


# -- explore triton ------------------------------------------------------------------------


def local_server(config: Settings) -> Any:
    from plugin.localstack import TritonServer, default_log_path

    if config.triton.host != "127.0.0.1":
        fail(
            f"`explore triton up` runs a local server on 127.0.0.1; triton.host is "
            f"{config.triton.host!r} (EXPLORE_TRITON__HOST)"
        )
    root = config.models.repository
    root.mkdir(parents=True, exist_ok=True)
    return TritonServer(
        root,
        http_port=config.triton.http_port,
        grpc_port=config.triton.grpc_port,
        metrics_port=config.triton.metrics_port,
        log_verbose=config.triton.log_verbose,
        name=SERVER_NAME,
        log_path=default_log_path(SERVER_NAME, config.var_dir),
        start_timeout=config.triton.start_timeout_s,
    )


@triton_app.command("up")
def up(
    load: Annotated[
        bool, typer.Option("--load/--no-load", help="load the published version once up")
    ] = True,
    json_path: JsonOpt = None,
) -> None:
    """Start tritonserver detached (idempotent) and load the published model version."""
    from plugin.localstack import RunDirectory, ServerError

    config = settings()
    server = local_server(config)
    try:
        result = server.up(RunDirectory.default(config.var_dir))
    except ServerError as exc:
        fail(str(exc))
    typer.echo(result.state.describe("started" if result.started else "already running"))
    payload: dict[str, Any] = {"server": result.state.endpoints, "started": result.started}
    if load:
        payload["load"] = _load_published(config)
    write_json(json_path, payload)


def _load_published(config: Settings) -> dict[str, Any] | None:
    pointer = repository(config).published()
    if pointer is None:
        typer.echo("no version is published yet: run `explore models publish` to serve one")
        return None
    with control(config) as ctl:
        if ctl.serving_version() == pointer.version:
            typer.echo(f"published version {pointer.version} already serves")
            return {"version": pointer.version, "already_serving": True}
        typer.echo(f"loading published version {pointer.version}")
        try:
            report = ctl.load()
        except management_errors() as exc:
            fail(str(exc))
    print_report(report)
    return report.as_dict()


@triton_app.command("down")
def down() -> None:
    """Stop the detached tritonserver (idempotent)."""
    from plugin.localstack import RunDirectory

    config = settings()
    state = RunDirectory.default(config.var_dir).stop(SERVER_NAME)
    if state is None:
        typer.echo(f"{SERVER_NAME}: not running")
    else:
        typer.echo(state.describe("stopped"))


@triton_app.command("status")
def status(json_path: JsonOpt = None) -> None:
    """Whether tritonserver runs, which model versions are ready, and its request figures."""
    from plugin.localstack import RunDirectory

    config = settings()
    state = RunDirectory.default(config.var_dir).status(SERVER_NAME)
    payload: dict[str, Any] = {"process": None, "reachable": False}
    if state is not None:
        typer.echo(state.describe())
        payload["process"] = {"pid": state.pid, **state.endpoints, "log": state.log_path}
    with control(config) as ctl:
        if not ctl.reachable():
            typer.echo(
                f"triton: not reachable at {config.triton.host}:{config.triton.grpc_port}"
                + ("" if state else " (start it with `explore triton up`)")
            )
            write_json(json_path, payload)
            if state is None:
                raise typer.Exit(1)
            return
        payload["reachable"] = True
        entries = ctl.index()
    payload["models"] = entries
    typer.echo(text_table([{"model": e.get("name"), **_entry(e)} for e in entries]))
    pointer = repository(config).published()
    typer.echo(f"published version: {pointer.version if pointer else 'none'}")
    rows = _metrics_rows(config)
    if rows:
        typer.echo(text_table(rows))
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
        fail(
            f"no model metrics at {config.triton.host}:{config.triton.metrics_port}; is Triton "
            "up with models loaded (`explore triton status`)?"
        )
    typer.echo(text_table(rows))
    write_json(json_path, {"metrics": rows})


# -- explore models ------------------------------------------------------------------------


@models_app.command("list")
def list_versions(json_path: JsonOpt = None) -> None:
    """Trained versions: quality gate, published or previous, and what Triton serves."""
    config = settings()
    repo = repository(config)
    pointer = repo.published()
    ready: dict[str, list[int]] = {}
    with control(config) as ctl:
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
    typer.echo(text_table(rows) if rows else "no trained versions; run `explore train`")
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
    from plugin.serving.control import publish

    config = settings()
    with control(config) as ctl:
        try:
            outcome = publish(repository(config), ctl, version)
        except management_errors() as exc:
            fail(str(exc))
    typer.echo(outcome.describe("published"))
    if outcome.report is not None:
        print_report(outcome.report)
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
    from plugin.serving.control import rollback

    config = settings()
    with control(config) as ctl:
        try:
            outcome = rollback(repository(config), ctl)
        except management_errors() as exc:
            fail(str(exc))
    typer.echo(outcome.describe("rolled back to"))
    if outcome.report is not None:
        print_report(outcome.report)
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
        typer.Argument(help="novelty | alignment | planner (default: all three)"),
    ] = None,
    json_path: JsonOpt = None,
) -> None:
    """(Re)load the published version on Triton: all three models, or the ones named."""
    config = settings()
    with control(config) as ctl:
        try:
            report = ctl.load(models or None)
        except management_errors() as exc:
            fail(str(exc))
    typer.echo(f"loaded version {report.version}")
    print_report(report)
    write_json(json_path, report.as_dict())


@models_app.command("unload")
def unload_model(
    model: Annotated[str, typer.Argument(help="novelty | alignment | planner")],
    json_path: JsonOpt = None,
) -> None:
    """Unload one model from Triton; refused for a model the loaded planner needs."""
    config = settings()
    with control(config) as ctl:
        try:
            report = ctl.unload(model)
        except management_errors() as exc:
            fail(str(exc))
    typer.echo(f"unloaded {model}")
    print_report(report)
    write_json(json_path, report.as_dict())
