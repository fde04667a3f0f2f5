"""The `explore` command line end to end on a dataset in the two-file format."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from plugin.cli.app import app

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
        "EXPLORE_MODELS__MIN_COUNT": "3",
        "EXPLORE_CLUSTERS__LEAF_CLUSTERS": "8",
        "EXPLORE_CLUSTERS__PARENT_CLUSTERS": "2",
        "EXPLORE_SEQUENCE__NOVELTY_WINDOW": "4",
        "EXPLORE_PLANNER__CANDIDATES": "4",
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
    assert set(report) == {"methods", "n_scaling", "dataset", "seed"}
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
