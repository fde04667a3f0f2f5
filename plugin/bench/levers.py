"""What each hot-path lever of issue 15 buys, measured as paired ratios in one run.

The machine's load moves absolute figures by 2-3x between minutes (docs/BENCHMARKS.md), so
each configuration runs twice, in ascending then descending order, on the same redis-server,
the same platform events (``plugin.data.platform``: interleaved users with stored states,
500 clusters, replans on, the plan table warm in Redis) and fresh users each time; the table
reports each run's events/s and its ratio to the paired ``before`` run. Configurations are
cumulative:

* ``before``: the whole ranking in each table entry, protobuf objects per Feast value, the
  ``json`` + pydantic parser for every event (the code as issue 15 found it);
* ``+ n+W cut``: table entries keep the first n + W clusters (``plugin.adapters.plan_cache``);
* ``+ value codec``: Feast values written and read by hand
  (``plugin.adapters.feast_value_codec``);
* ``+ msgspec decode``: plain events through ``plugin.core.fast_events``;
* ``+ state evolve``: the core copies states without ``dataclasses.replace`` (all levers: the
  worker as it is now).

The older code paths are put back for a run by swapping one module attribute each (the
encoder lookup and the value decoder of the fast store, the fast decoder of the worker, the
core's state copy), restored after the run.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any
from unittest import mock

from feast.value_type import ValueType

from plugin.adapters import fast_redis_online_store
from plugin.adapters.feast_value_codec import UNSURE
from plugin.bench.platform import _Lab
from plugin.core import sequence
from plugin.streaming import worker as worker_module
from plugin.streaming.worker import Record

Echo = Callable[[str], None]
CONFIGS: tuple[tuple[str, bool, bool, bool, bool], ...] = (
    # name, n+W cut, value codec, msgspec decode, state evolve
    ("before", False, False, False, False),
    ("+ n+W cut", True, False, False, False),
    ("+ value codec", True, True, False, False),
    ("+ msgspec decode", True, True, True, False),
    ("+ state evolve", True, True, True, True),
)


def _no_plain_decoder(raw: bytes) -> Any:
    return UNSURE  # the lever is off: protobuf decodes every value


def _protobuf_encoder(value_type: ValueType) -> Callable[[Any], bytes]:
    encode = fast_redis_online_store.encode_value
    return lambda value: encode(value, value_type).SerializeToString()


@contextmanager
def _levers(lab: _Lab, cut: bool, codec: bool, decode: bool, evolve: bool) -> Iterator[None]:
    with ExitStack() as stack:
        lab.keep = cut
        stack.callback(setattr, lab, "keep", True)
        if not codec:
            stack.enter_context(
                mock.patch.object(fast_redis_online_store, "_byte_encoder", _protobuf_encoder)
            )
            stack.enter_context(
                mock.patch.object(fast_redis_online_store, "plain_or_unsure", _no_plain_decoder)
            )
        if not evolve:
            stack.enter_context(mock.patch.object(sequence, "evolve", dataclasses.replace))
        if not decode:
            stack.enter_context(
                mock.patch.object(worker_module, "fast_event", lambda *args, **kwargs: None)
            )
        yield


def lever_bench(
    lab: _Lab, *, users: int, clusters: int, events: int, echo: Echo = print
) -> dict[str, Any]:
    """Two paired rounds over :data:`CONFIGS` (see the module docstring)."""
    runs: list[dict[str, Any]] = []
    rounds = (CONFIGS, tuple(reversed(CONFIGS)))
    for number, order in enumerate(rounds, start=1):
        for name, cut, codec, decode, evolve in order:
            index = next(i for i, config in enumerate(CONFIGS) if config[0] == name)
            with _levers(lab, cut, codec, decode, evolve):
                prepared = lab.prepared_worker(users, clusters, events, tag=f"r{number}c{index}-")
                now = time.time()
                records = [
                    Record("watch-events", 0, offset, user.encode(), payload, now)
                    for offset, (user, payload) in enumerate(prepared.stream)
                ]
                batch = prepared.worker.settings.worker.batch_size
                # The first batch untimed: connections, scripts and caches warm for every run.
                prepared.worker.handle(records[:batch])
                started = time.perf_counter()
                for start in range(batch, len(records), batch):
                    prepared.worker.handle(records[start : start + batch])
                seconds = time.perf_counter() - started
            rate = (len(records) - batch) / seconds
            runs.append({"round": number, "config": name, "events_per_s": round(rate, 1)})
            echo(f"  levers round {number}: {name:18} {rate:8,.0f} events/s")
    summary = []
    for name, *_ in CONFIGS:
        ratios = []
        for number in (1, 2):
            base = next(r for r in runs if r["round"] == number and r["config"] == "before")
            this = next(r for r in runs if r["round"] == number and r["config"] == name)
            ratios.append(this["events_per_s"] / base["events_per_s"])
        rates = [r["events_per_s"] for r in runs if r["config"] == name]
        summary.append(
            {
                "config": name,
                "events_per_s_runs": rates,
                "ratio_to_before_runs": [round(x, 2) for x in ratios],
                "ratio_to_before": round(statistics.mean(ratios), 2),
            }
        )
    return {
        "users": users,
        "clusters": clusters,
        "events": events,
        "runs": runs,
        "summary": summary,
    }
