"""A quiet worker while the Kafka broker is unreachable: exponential back-off, few log lines.

aiokafka retries a lost broker every ``retry_backoff_ms`` (100 ms), in the consumer's client,
its fetcher and its group coordinator, and in the producer's client, and each failed try logs
its own error: measured, about 78 lines a second (931 in a 12 s outage) under ``explore stack
down``. :class:`BrokerWatch` turns that into a few lines that say what is going on:

* the first connection error from aiokafka starts an *outage*: one warning, ``broker
  unreachable at <servers>, retrying every 1 s``, and aiokafka's retry interval becomes 1 s;
* while the outage lasts, aiokafka's warnings and errors are dropped (counted), and each time
  the interval has passed the interval doubles, up to :data:`MAX_BACKOFF_S`, with one line
  (``broker still unreachable ... retrying every 4 s``);
* :meth:`BrokerWatch.probe`, run every second by the app, opens a TCP connection to the
  bootstrap servers during an outage; once one accepts, the intervals go back to aiokafka's
  defaults so the clients reconnect at once, and one line says so (``broker reachable again
  ... after 12.1 s; 931 client errors not logged``);
* for :data:`SETTLE_S` after that, the clients' errors while they reconnect (a port that
  accepts before the broker serves, a coordinator still loading) are dropped without starting
  a new outage: measured, the first one came 23 ms after the probe connected. Errors that
  outlast the settling time start a new outage as usual.

The worker's own behaviour does not change: batches whose output cannot be delivered still
exit after ``streams.app.PUBLISH_TIMEOUT_S``, and the group is rejoined when the broker is back.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

log = logging.getLogger(__name__)

FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 30.0
# aiokafka's own default (retry_backoff_ms=100), restored when the broker is back.
DEFAULT_BACKOFF_S = 0.1
# After the broker accepts connections again, how long reconnect errors do not count as a new
# outage (a broker that accepts TCP is not yet serving metadata and group coordination).
SETTLE_S = 5.0

# What aiokafka logs when it cannot reach a broker (connect refused, node not ready, metadata).
_UNREACHABLE = (
    "Unable connect to node",
    "Connect call failed",
    "NodeNotReadyError",
    "KafkaConnectionError",
    "Unable to update metadata",
    "Unable to request metadata",
    "Coordinator load in progress",
    "Marking the coordinator dead",
)


class BrokerWatch(logging.Filter):
    """The broker's reachability as the worker sees it; also the log filter that keeps
    aiokafka's per-retry errors out of the log during an outage."""

    def __init__(self, bootstrap_servers: Sequence[str]) -> None:
        super().__init__()
        self.servers = list(bootstrap_servers)
        self.clients: list[Any] = []  # aiokafka consumers and producers whose back-off we set
        self._lock = threading.Lock()  # records come from Faust's consumer thread too
        self.down_since: float | None = None
        self.recovered_at: float | None = None
        self.backoff_s = FIRST_BACKOFF_S
        self.next_step_at = 0.0
        self.suppressed = 0
        self.outages = 0

    # -- the log filter ----------------------------------------------------------------------

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == __name__ or not record.name.startswith("aiokafka"):
            return True
        if record.levelno < logging.WARNING:
            return True
        message = record.getMessage()
        unreachable = any(mark in message for mark in _UNREACHABLE)
        now = time.monotonic()
        with self._lock:
            if self.down_since is None:
                if not unreachable:
                    return True
                if self.recovered_at is not None and now - self.recovered_at < SETTLE_S:
                    self.suppressed += 1  # reconnecting, not a new outage
                    return False
                self._start(now)
            else:
                self._maybe_step(now)
            self.suppressed += 1
        return False

    def _start(self, now: float) -> None:
        self.down_since = now
        self.outages += 1
        self.backoff_s = FIRST_BACKOFF_S
        self.next_step_at = now + self.backoff_s
        self.suppressed = 0
        self._apply(self.backoff_s)
        log.warning(
            "broker unreachable at %s, retrying every %.0f s",
            ",".join(self.servers),
            self.backoff_s,
            extra={"retry_every_s": self.backoff_s},
        )

    def _maybe_step(self, now: float) -> None:
        if now < self.next_step_at or self.backoff_s >= MAX_BACKOFF_S or self.down_since is None:
            return
        self.backoff_s = min(self.backoff_s * 2, MAX_BACKOFF_S)
        self.next_step_at = now + self.backoff_s
        self._apply(self.backoff_s)
        log.warning(
            "broker still unreachable at %s after %.0f s, retrying every %.0f s",
            ",".join(self.servers),
            now - self.down_since,
            self.backoff_s,
            extra={"retry_every_s": self.backoff_s, "client_errors_not_logged": self.suppressed},
        )

    # -- recovery ----------------------------------------------------------------------------

    @property
    def down(self) -> bool:
        return self.down_since is not None

    async def probe(self, timeout_s: float = 0.5) -> bool:
        """During an outage: whether a bootstrap server accepts a TCP connection now; if so,
        the outage ends (aiokafka's intervals restored, one line). True when reachable."""
        if self.down_since is None:
            return True
        for server in self.servers:
            host, _, port = server.rpartition(":")
            try:
                _, writer = await asyncio.wait_for(
                    asyncio.open_connection(host.strip("[]"), int(port)), timeout_s
                )
            except (TimeoutError, OSError, ValueError):
                continue
            writer.close()
            self._recovered(time.monotonic())
            return True
        with self._lock:
            self._maybe_step(time.monotonic())
        return False

    def _recovered(self, now: float) -> None:
        with self._lock:
            if self.down_since is None:
                return
            down_for, suppressed = now - self.down_since, self.suppressed
            self.down_since = None
            self.recovered_at = now
            self.backoff_s = FIRST_BACKOFF_S
            self._apply(DEFAULT_BACKOFF_S)
        log.warning(
            "broker reachable again at %s after %.1f s; %d client errors not logged",
            ",".join(self.servers),
            down_for,
            suppressed,
            extra={"down_s": round(down_for, 1), "client_errors_not_logged": suppressed},
        )

    # -- aiokafka's retry intervals ------------------------------------------------------------

    def _apply(self, seconds: float) -> None:
        """Set the retry interval of every known aiokafka client (private attributes, set
        where present: an aiokafka without them keeps its own interval, only the log stays
        quiet)."""
        for client in self.clients:
            # A consumer: its client, fetcher and group coordinator; a producer: its client.
            for part in (
                getattr(client, "_client", None),
                getattr(client, "client", None),
                getattr(client, "_fetcher", None),
            ):
                if part is not None and hasattr(part, "_retry_backoff"):
                    part._retry_backoff = seconds
            coordinator = getattr(client, "_coordinator", None)
            if coordinator is not None and hasattr(coordinator, "_retry_backoff_ms"):
                coordinator._retry_backoff_ms = seconds * 1000
