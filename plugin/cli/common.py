"""What every command shares: its options, the settings with the command line's overrides,
JSON output, tables, warnings, and the error boundary that prints a user's error as one line.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
import typer.core

from plugin.errors import UserError
from plugin.settings import Settings, load_settings
from plugin.tables import table

DatasetOpt = Annotated[
    str | None, typer.Option("--dataset", help="built-in dataset (default: movielens-100k)")
]
InteractionsOpt = Annotated[
    Path | None, typer.Option("--interactions", help="interactions file, CSV or Parquet")
]
ItemsOpt = Annotated[Path | None, typer.Option("--items", help="items file, CSV or Parquet")]
JsonOpt = Annotated[Path | None, typer.Option("--json", help="also write the result as JSON here")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="no progress output")]
PlannerOpt = Annotated[
    str | None,
    typer.Option("--planner", help="frequency | best-of-n | triton (default: settings)"),
]


class ExploreGroup(typer.core.TyperGroup):
    """The ``explore`` group: every command runs inside it, so this is the one place where a
    :class:`~plugin.errors.UserError` becomes an ``error:`` line and an exit status. Any other
    exception is a bug and propagates with its traceback."""

    def invoke(self, ctx: Any) -> Any:  # ctx: the click Context typer vendors
        try:
            return super().invoke(ctx)
        except UserError as exc:
            typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
            raise typer.Exit(exc.exit_code) from None


def settings(
    dataset: str | None = None,
    interactions: Path | None = None,
    items: Path | None = None,
    **sections: dict[str, Any],
) -> Settings:
    """The environment's settings with the command line's overrides: ``sections`` maps a section
    name to its changed fields (None: not given, the environment's value stays)."""
    # A bad value raises SettingsError, an InvalidInput: the CLI prints it as one line.
    merged = load_settings().model_dump()
    data = merged["data"]
    if dataset is not None:
        data["dataset"] = dataset
    if interactions is not None or items is not None:
        # Both or neither: the data section's validator names the missing one.
        data.update(interactions=interactions, items=items)
    for name, values in sections.items():
        merged[name] = {**merged[name], **{k: v for k, v in values.items() if v is not None}}
    return load_settings(**merged)


def write_json(path: Path | None, payload: Any) -> None:
    """Write ``payload`` as indented JSON when ``--json`` was given, and say where."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str))
    typer.echo(f"wrote {path}")


def records_table(rows: Sequence[dict[str, Any]]) -> str:
    """Rows of dicts as a text table (:func:`plugin.tables.table`); the first row's keys are
    the header, and a missing value shows as ``-``."""
    if not rows:
        return "(none)"
    headers = list(rows[0])
    return table(
        headers, [["-" if row.get(h) is None else row.get(h) for h in headers] for row in rows]
    )


def pairs_table(rows: Sequence[tuple[str, Any]], header: tuple[str, str]) -> str:
    """(name, value) rows as a two-column text table; a missing value shows as ``-``."""
    return table(list(header), [(name, "-" if value is None else value) for name, value in rows])


def warn(message: str) -> None:
    """A warning on stderr: the command goes on."""
    typer.secho(message, err=True, fg=typer.colors.YELLOW)
