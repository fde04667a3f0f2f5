"""Streaming settings, their environment form, metric labels and latency percentiles."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from plugin.adapters.kafka_io import client_options
from plugin.observability.metrics import LatencyRecorder, WorkerMetrics, rejection_kind
from plugin.settings import PROJECT_ROOT, SettingsError, load_settings, settings_environment
from streams.app import credentials


def test_sasl_needs_all_three_fields_and_never_prints_the_password() -> None:
    with pytest.raises(SettingsError, match="kafka"):
        load_settings(kafka={"security_protocol": "SASL_SSL", "sasl_username": "svc"})
    settings = load_settings(
        kafka={
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_username": "svc",
            "sasl_password": "hunter2",
        }
    )
    assert "hunter2" not in settings.model_dump_json()
    options = client_options(settings.kafka)
    assert options["sasl_plain_password"] == "hunter2"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    faust_credentials = credentials(settings.kafka)
    assert faust_credentials.password == "hunter2"


def test_topic_names_must_differ() -> None:
    with pytest.raises(SettingsError, match="must differ"):
        load_settings(kafka={"plans_topic": "watch-events"})


def test_the_batch_poll_must_fit_in_the_batch_window() -> None:
    with pytest.raises(SettingsError, match="batch_poll_s must be at most batch_within_s"):
        load_settings(worker={"batch_within_s": 0.004, "batch_poll_s": 0.005})
    assert load_settings(worker={"batch_within_s": 0.005}).worker.batch_poll_s == 0.005


def test_a_child_process_reads_the_same_settings_tree(tmp_path: Path) -> None:
    settings = load_settings(
        var_dir=tmp_path,
        kafka={"bootstrap_servers": "127.0.0.1:1234", "partitions": 3},
        feast={"online_store": "redis"},
        redis={"port": 7000, "password": "s3cret"},
        worker={"batch_size": 77, "log_format": "text"},
        cache={"enabled": False},
        # A nested section and list values: they pass as EXPLORE_MODELS__LLM__STEPS and JSON.
        models={"novelty": "llm", "llm": {"steps": 5, "method": "unfreeze"}},
        selection={"candidates": [2, 3], "temperatures": [0.5]},
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXPLORE_")}
    env.update(settings_environment(settings))
    code = "from plugin.settings import load_settings; print(load_settings().model_dump_json())"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=PROJECT_ROOT, capture_output=True, check=True
    ).stdout
    child = type(settings).model_validate_json(out)
    assert child.model_dump(exclude={"redis"}) == settings.model_dump(exclude={"redis"})
    assert child.redis.port == 7000
    assert settings_environment(settings)["EXPLORE_REDIS__PASSWORD"] == "s3cret"


def test_rejection_labels_stay_few() -> None:
    assert rejection_kind("not JSON: Expecting value") == "not_json"
    assert rejection_kind("rating: must be a finite number") == "invalid_rating"
    assert rejection_kind("event_time: in the future") == "invalid_event_time"
    assert rejection_kind("made_up_field_123: extra inputs are not permitted") == "invalid_other"
    assert rejection_kind("key: 'a' does not match user_id 'b'") == "key_mismatch"
    assert rejection_kind("payload larger than 16384 bytes") == "too_large"


def test_latency_percentiles_are_nearest_rank() -> None:
    recorder = LatencyRecorder(capacity=1000)
    recorder.extend(i / 1000 for i in range(1, 101))  # 1..100 ms
    assert recorder.quantile(0.5) == pytest.approx(0.050)
    assert recorder.quantile(0.99) == pytest.approx(0.099)
    summary = recorder.summary()
    assert (summary["p50_ms"], summary["p99_ms"], summary["max_ms"]) == (50.0, 99.0, 100.0)
    assert LatencyRecorder().summary() == {"count": 0}


def test_metrics_have_their_own_registry() -> None:
    first, second = WorkerMetrics(), WorkerMetrics()
    first.events_in.inc(3)
    first.reject("rating: must be a finite number")
    assert first.value("explore_events_in_total") == 3
    assert second.value("explore_events_in_total") == 0
    assert first.value("explore_rejections_total", reason="invalid_rating") == 1
