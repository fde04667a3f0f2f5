"""The `explore` command line end to end on a dataset in the two-file format."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from plugin.cli.app import app
from plugin.localstack import free_port

GENRES = ("Comedy", "Drama", "Horror", "Western", "Musical", "Documentary", "Crime", "War")


def write_synthetic(folder: Path, users: int = 240, events_per_user: int = 36) -> tuple[Path, Path]:
    """Users drift from genre to genre, mostly to the next one, and like that move best."""
    rng = np.random.default_rng(3)
    items = pd.DataFrame(
        {
            "item_id": [f"m{g}-{i}" for g in range(8) for i in range(12)],
            "title": [
                f"{GENRES[g]} story {i} ({1950 + 5 * g})" for g in range(8) for i in range(12)
            ],
            "genres": [GENRES[g] for g in range(8) for _ in range(12)],
        }
    )
    rows = []
    for user in range(users):
        genre = int(rng.integers(8))
        start = 900_000_000 + int(rng.integers(0, 3_000_000))
        for n in range(events_per_user):
            moved = rng.random() < 0.35
            step = 1 if rng.random() < 0.8 else int(rng.integers(2, 8))
            genre = (genre + step) % 8 if moved else genre
            rating = 5 if moved and step == 1 else int(rng.integers(1, 5))
            rows.append(
                {
                    "user_id": f"user{user}",
                    "item_id": f"m{genre}-{int(rng.integers(12))}",
                    "timestamp": start + n * 3600,
                    "rating": rating,
                }
            )
    interactions, items_path = folder / "interactions.csv", folder / "items.csv"
    pd.DataFrame(rows).to_csv(interactions, index=False)
    items.to_csv(items_path, index=False)
    return interactions, items_path


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name, value in {
        "EXPLORE_VAR_DIR": str(tmp_path / "var"),
        "EXPLORE_MODELS__REPOSITORY": str(tmp_path / "models"),
        "EXPLORE_MODELS__NOVELTY_STEPS": "150",
        "EXPLORE_MODELS__ALIGNMENT_STEPS": "150",
        "EXPLORE_MODELS__TEXT_INIT": "false",
        # The id alignment: loading the base language model would cost about 30 s.
        "EXPLORE_MODELS__ALIGNMENT_FEATURES": "id",
        "EXPLORE_MODELS__MIN_COUNT": "3",
        "EXPLORE_CLUSTERS__LEAF_CLUSTERS": "8",
        "EXPLORE_CLUSTERS__PARENT_CLUSTERS": "2",
        "EXPLORE_SEQUENCE__NOVELTY_WINDOW": "4",
        "EXPLORE_PLANNER__CANDIDATES": "4",
        # `explore train` runs the validation search, on a small grid here.
        "EXPLORE_SELECTION__CANDIDATES": "[1, 4]",
        "EXPLORE_SELECTION__TEMPERATURES": "[1.5]",
        "EXPLORE_SELECTION__WEIGHTS": "[0.0, 1.0]",
        "EXPLORE_SELECTION__PRIOR_STRENGTHS": "[0.0]",
        "EXPLORE_SELECTION__SEEDS": "1",
        "EXPLORE_SELECTION__NATURAL_CURATION": "false",
        "EXPLORE_FEAST__SQLITE_PATH": str(tmp_path / "var" / "online.db"),
        "EXPLORE_FEAST__REGISTRY_PATH": str(tmp_path / "var" / "registry.db"),
    }.items():
        monkeypatch.setenv(name, value)
    return tmp_path


runner = CliRunner()


def test_every_command_has_help() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    commands = ["settings", "clusters", "replay", "demo", "train", "evaluate", "lookup"]
    for command in commands:
        assert command in result.output
        assert runner.invoke(app, [command, "--help"]).exit_code == 0


def command_paths(command: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command and group under ``command``, as the argv that reaches it."""
    paths = [prefix]
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        paths += command_paths(sub, (*prefix, name))
    return paths


def test_every_command_and_group_has_a_help_text() -> None:
    paths = command_paths(typer.main.get_command(app))
    assert ("models", "publish") in paths and ("bench", "planner") in paths
    for path in paths:
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        described = typer.main.get_command(app)
        for name in path:
            described = described.commands[name]  # type: ignore[attr-defined]
        assert described.help, path


def test_a_bad_setting_names_its_field(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXPLORE_SEQUENCE__NOVELTY_WINDOW", "-3")
    result = runner.invoke(app, ["settings"])
    assert result.exit_code == 2
    assert "sequence.novelty_window (EXPLORE_SEQUENCE__NOVELTY_WINDOW)" in result.output


def test_settings_never_print_secrets(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXPLORE_REDIS__PASSWORD", "hunter2")
    result = runner.invoke(app, ["settings"])
    assert result.exit_code == 0
    assert "hunter2" not in result.output
    assert json.loads(result.output)["redis"]["password"] == "**********"


def test_a_bad_file_is_reported_with_file_row_and_column(env: Path) -> None:
    interactions, items = write_synthetic(env, users=3, events_per_user=3)
    frame = pd.read_csv(interactions)
    frame["rating"] = frame["rating"].astype(object)
    frame.loc[4, "rating"] = "lots"
    frame.to_csv(interactions, index=False)
    result = runner.invoke(
        app, ["clusters", "--interactions", str(interactions), "--items", str(items)]
    )
    assert result.exit_code == 2
    assert "interactions.csv, row 5, column 'rating'" in result.output


@pytest.mark.slow
def test_train_evaluate_replay_and_lookup_on_a_two_file_dataset(env: Path) -> None:
    interactions, items = write_synthetic(env)
    files = ["--interactions", str(interactions), "--items", str(items)]

    trained = runner.invoke(app, ["train", "-q", *files, "--json", str(env / "train.json")])
    assert trained.exit_code == 0, trained.output
    manifest = json.loads((env / "train.json").read_text())
    assert manifest["version"] == 1
    assert manifest["dataset"] == "interactions"

    evaluated = runner.invoke(
        app, ["evaluate", "-q", *files, "--version", "1", "--json", str(env / "eval.json")]
    )
    assert evaluated.exit_code == 0, evaluated.output
    report = json.loads((env / "eval.json").read_text())
    assert set(report) == {"methods", "n_scaling", "paired", "dataset", "seed"}
    assert report["dataset"]["clusters"] == 8
    assert (env / "eval.png").exists()
    # On data where the next genre is the liked move, the learned planner finds it.
    methods = report["methods"]
    assert methods["best_of_n"]["positive_hit_at_1"] > methods["random"]["positive_hit_at_1"]

    replayed = runner.invoke(app, ["replay", "-q", *files, "--json", str(env / "replay.json")])
    assert replayed.exit_code == 0, replayed.output
    summary = json.loads((env / "replay.json").read_text())
    assert summary["users"] == 240
    assert summary["events"] == 240 * 36
    assert summary["planner"].startswith("best-of-n-v1-")
    sample = summary["sample_plans"][0]
    assert sample["description"] and sample["top_titles"]

    looked_up = runner.invoke(app, ["lookup", "user0", "nobody"])
    assert looked_up.exit_code == 0, looked_up.output
    assert "user nobody: no plan yet" in looked_up.output
    assert "user user0" in looked_up.output and "plan: [" in looked_up.output
    assert "keywords: " in looked_up.output


# -- errors: a user's mistake is one line, a bug keeps its traceback ---------------------------


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.strip()]


def test_demo_stack_without_the_triton_install_is_one_line(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = env / "no-triton"
    empty.mkdir()
    monkeypatch.setenv("TRITON_HOME", str(empty))
    result = runner.invoke(app, ["demo", "--stack", "-q"])
    assert result.exit_code == 2, result.output
    [line] = error_lines(result.output)
    assert line.startswith(f"error: tritonserver is not installed at {empty}")
    assert "run `make triton`" in line and "Traceback" not in result.output
    # It says so before the minute of training a model for the demo.
    assert not (env / "models").exists()


def test_lookup_when_the_stack_is_not_running_is_one_line(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    monkeypatch.setenv("EXPLORE_FEAST__ONLINE_STORE", "redis")
    monkeypatch.setenv("EXPLORE_REDIS__PORT", str(port))
    result = runner.invoke(app, ["lookup", "1"])
    assert result.exit_code == 2, result.output
    [line] = error_lines(result.output)
    assert line.startswith(f"error: redis at 127.0.0.1:{port} does not answer")
    assert "`explore stack up`" in line


def test_lookup_before_any_plan_was_written_is_one_line(env: Path) -> None:
    result = runner.invoke(app, ["lookup", "1"])
    assert result.exit_code == 2, result.output
    [line] = error_lines(result.output)
    assert line.startswith("error: no Feast registry at ") and "explore replay" in line


def test_worker_when_the_stack_is_not_running_is_one_line(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    monkeypatch.setenv("EXPLORE_KAFKA__BOOTSTRAP_SERVERS", f"127.0.0.1:{port}")
    result = runner.invoke(app, ["worker"])
    assert result.exit_code == 2, result.output
    [line] = error_lines(result.output)
    assert line == (
        f"error: no Kafka broker answers at 127.0.0.1:{port}; start it with `explore stack up` "
        "(or point the settings at a running one)"
    )


def test_precompute_when_redis_is_not_running_is_one_line(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EXPLORE_REDIS__PORT", str(free_port()))
    result = runner.invoke(app, ["precompute", "-q"])
    assert result.exit_code == 2, result.output
    [line] = error_lines(result.output)
    assert "does not answer" in line and line.startswith("error: redis at ")


def test_a_bug_in_a_job_keeps_its_traceback(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import plugin.jobs.lookup

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug, not the user's mistake")

    monkeypatch.setattr(plugin.jobs.lookup, "lookup", broken)
    result = runner.invoke(app, ["lookup", "1"])
    assert isinstance(result.exception, RuntimeError)
    assert "error:" not in result.output
    with pytest.raises(RuntimeError, match="a bug"):
        runner.invoke(app, ["lookup", "1"], catch_exceptions=False)


def run_entry_point(code: str, env: Path) -> subprocess.CompletedProcess[str]:
    """``explore`` as installed runs it: plugin.cli.app.main in a fresh interpreter."""
    environment = {**os.environ, "EXPLORE_VAR_DIR": str(env / "var")}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=environment, timeout=120
    )


def test_the_entry_point_prints_a_user_error_as_one_line(env: Path) -> None:
    done = run_entry_point(
        "import sys; from plugin.cli.app import main; "
        "sys.argv = ['explore', 'monitor', '--since', 'last week']; main()",
        env,
    )
    assert done.returncode == 2
    assert done.stderr == "error: --since must be YYYY-MM-DD, not 'last week'\n"


def test_the_entry_point_shows_a_bugs_traceback(env: Path) -> None:
    done = run_entry_point(
        "import sys; import plugin.cli.app as cli\n"
        "def broken(*args, **kwargs):\n"
        "    raise RuntimeError('a bug, not the user s mistake')\n"
        "cli.settings = broken\n"
        "sys.argv = ['explore', 'settings']; cli.main()",
        env,
    )
    assert done.returncode == 1
    assert "Traceback (most recent call last)" in done.stderr
    assert done.stderr.rstrip().endswith("RuntimeError: a bug, not the user s mistake")
    assert "error:" not in done.stderr


def test_the_stack_demo_job_checks_the_triton_install_before_training(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from plugin.errors import MissingPrerequisite
    from plugin.jobs.stack_demo import run_stack_demo
    from plugin.settings import load_settings

    monkeypatch.setenv("TRITON_HOME", str(env / "no-triton"))
    with pytest.raises(MissingPrerequisite, match="run `make triton`"):
        run_stack_demo(load_settings(planner={"kind": "triton"}), limit=10)
    assert not (env / "models").exists()
