"""The platform bench on a tiny configuration: structure and sanity, never timings.

A real redis-server and tansu, the real worker path, the untrained id model; the figures
asserted are ones any working run has (memory grows with users, the uncut table is larger
than the cut one, every drained event was handled, the lever runs are paired).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from plugin.bench.levers import CONFIGS, lever_bench
from plugin.bench.platform import PlatformOptions, drain_only, platform_bench
from plugin.bench.platform_report import plot_platform, render_platform
from plugin.bench.report import targets
from plugin.settings import load_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_the_platform_bench_measures_every_section(tmp_path: Path) -> None:
    settings = load_settings(var_dir=tmp_path / "var")
    options = PlatformOptions(
        target_users=10_000,
        target_clusters=50,
        memory_users=(300, 600, 900),
        memory_cluster_users=300,
        clusters=(30, 40, 50),  # more than the window of 20: something is novel
        table_sample=60,
        worker_events=600,
        worker_users=(1_000, 5_000, 10_000),
        drain_events=600,
    )
    doc = platform_bench(
        settings,
        options,
        echo=lambda _: None,
        more={"levers": lambda lab: lever_bench(lab, users=5_000, clusters=50, events=600)},
    )
    memory = [r["bytes"] for r in doc["memory_by_users"]]
    assert memory == sorted(memory) and memory[0] > 0
    assert doc["fits"]["memory_vs_users"]["b_bytes_per_user"] > 0
    row = doc["memory_by_users"][0]
    assert row["server_us_per_row_written"] > 0 and row["server_us_per_row_read"] > 0
    for row in doc["table_by_clusters"]:
        assert row["histories_ranked"] == min(60, row["histories_all"])
        assert row["full_bytes_per_entry"] >= row["bytes_per_entry"] > 0
    # 50 clusters: 36 of 50 kept per entry, the cut is smaller.
    last = doc["table_by_clusters"][-1]
    assert last["full_bytes_per_entry"] > last["bytes_per_entry"]
    assert last["all_is"] == "extrapolated"
    for row in doc["worker_by_users"] + doc["worker_by_clusters"]:
        assert row["events"] == 100 and row["replans"] > 0 and row["table_hit_rate"] == 1.0
    drain = doc["drain"]
    assert drain["events"] == 600 and drain["raw_per_s"] > drain["worker_per_s"] > 0
    assert drain["profile"]["areas"]
    levers = doc["levers"]
    assert [r["config"] for r in levers["summary"]] == [c[0] for c in CONFIGS]
    assert len(levers["runs"]) == 2 * len(CONFIGS)
    assert levers["summary"][0]["ratio_to_before"] == 1.0
    text = render_platform(doc)
    assert "fitted growth" in text and "Kafka drain" in text and "hot-path levers" in text
    assert plot_platform(doc, tmp_path / "platform.png").stat().st_size > 0


def test_the_drain_alone_checks_the_marker_in_the_batches_round_trips(tmp_path: Path) -> None:
    settings = load_settings(var_dir=tmp_path / "var")
    options = PlatformOptions(
        target_users=5_000, target_clusters=40, drain_events=400, drain_profile=False
    )
    doc = drain_only(settings, options, echo=lambda _: None)
    drain = doc["drain"]
    assert drain["events"] == 400 and drain["raw_per_s"] > drain["worker_per_s"] > 0
    # As `explore worker` runs: the marker checked twice a batch, without GETs of its own.
    assert drain["generation_in_store"] and drain["generation_checks"] >= 2
    assert "load" in doc["meta"] and "profile" not in drain
    (target,) = targets(doc)
    assert target["target"].startswith("worker events/s through Kafka >= 20,000")
