"""`explore monitor`, `explore refresh` and `explore feedback ...` from the command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from plugin.adapters.feedback_log import FeedbackLog
from plugin.cli.app import app
from plugin.observability.monitoring import sliding_series, window_stats
from tests.support.feedback import record as feedback_record


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        "EXPLORE_VAR_DIR": str(tmp_path / "var"),
        "EXPLORE_MODELS__REPOSITORY": str(tmp_path / "model_repository"),
        "EXPLORE_FEEDBACK__MONITOR_WINDOW": "20",
    }


def answers(count: int) -> list[Any]:
    """Plans of cluster 7 mostly, accepted early on and refused later."""
    r = feedback_record
    return [
        r(f"u{i}", 10 + i, (2, 1), 7 if i % 4 else i % 48, 7 if i < count // 2 else 3, i % 3 > 0)
        for i in range(count)
    ]


def test_monitor_prints_the_window_and_draws_it(env: dict[str, str], tmp_path: Path) -> None:
    records = answers(60)
    FeedbackLog(tmp_path / "var" / "feedback").append(records)
    out = tmp_path / "monitor.json"
    result = CliRunner().invoke(app, ["monitor", "--json", str(out)], env=env)
    assert result.exit_code == 0, result.output
    assert "acceptance_rate" in result.output and "latest 20" in result.output
    assert "model best-of-n-v1-cat" in result.output
    png = tmp_path / "var" / "monitor.png"
    assert png.stat().st_size > 10_000
    report = json.loads(out.read_text())
    latest = window_stats(records[-20:], 48)
    assert report["latest"]["acceptance_rate"] == pytest.approx(latest.acceptance_rate)
    assert report["latest"]["acceptance_rate"] == 0.0  # the late answers went elsewhere
    assert report["all"]["engaged_rate"] > 0.3
    assert report["series"][-1]["records"] == 20
    assert len(report["series"]) == len(sliding_series(records, 48, 20))


def test_monitor_without_records_says_where_they_come_from(env: dict[str, str]) -> None:
    result = CliRunner().invoke(app, ["monitor"], env=env)
    assert result.exit_code == 1
    assert "no feedback records" in result.output


def test_refresh_without_a_trained_version_changes_nothing(env: dict[str, str]) -> None:
    result = CliRunner().invoke(app, ["refresh"], env=env)
    assert result.exit_code == 2
    assert "no trained version" in result.output and "serving version is unchanged" in (
        result.output
    )


def test_feedback_stats_and_compact(env: dict[str, str], tmp_path: Path) -> None:
    log = FeedbackLog(tmp_path / "var" / "feedback")
    records = answers(6)
    log.append(records[:3])
    log.append(records[3:])
    runner = CliRunner()
    stats = runner.invoke(app, ["feedback", "stats"], env=env)
    assert stats.exit_code == 0 and "unique records: 6" in stats.output
    compact = runner.invoke(app, ["feedback", "compact"], env=env)
    assert compact.exit_code == 0 and "merged into 1 part(s)" in compact.output
    assert len(log.parts()) == 1 and log.read() == records


@pytest.mark.parametrize("command", [["refresh"], ["monitor"], ["feedback", "fresh-eval"]])
def test_help(command: list[str]) -> None:
    result = CliRunner().invoke(app, [*command, "--help"])
    assert result.exit_code == 0 and "Usage" in result.output
