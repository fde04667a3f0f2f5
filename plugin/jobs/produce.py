"""Replaying a dataset into the events topic (``explore produce``)."""

from __future__ import annotations

from itertools import islice

from kafka.errors import KafkaError
from tqdm import tqdm

from plugin.adapters.kafka_io import ProduceReport, event_messages, produce
from plugin.data.datasets import DatasetError, load_dataset
from plugin.errors import InvalidInput, ServerUnreachable
from plugin.jobs.prerequisites import START_STACK, require_kafka
from plugin.settings import Settings


def produce_dataset(
    settings: Settings,
    limit: int | None = None,
    skip: int = 0,
    rate: float | None = None,
    progress: bool = False,
) -> ProduceReport:
    """Send the dataset's events after the first ``skip`` (the next ``limit`` of them) to the
    events topic in time order, keyed by user, at ``rate`` per second or as fast as possible."""
    require_kafka(settings)
    try:
        loaded = load_dataset(settings.data)
    except (DatasetError, FileNotFoundError) as exc:
        raise InvalidInput(str(exc)) from exc
    total = len(loaded.interactions) - skip
    if limit is not None:
        total = min(total, limit)
    events = islice(loaded.events(), skip, skip + max(0, total))
    with tqdm(total=total, unit="ev", disable=not progress, desc="produce") as bar:
        try:
            return produce(settings, event_messages(events), rate=rate, on_progress=bar.update)
        except KafkaError as exc:
            raise ServerUnreachable(
                f"producing to {settings.kafka.bootstrap_servers}: {exc}", START_STACK
            ) from exc
