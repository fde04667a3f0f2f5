"""The processing core: apply a batch of watch events to user state, decide who needs a replan.

Pure and framework-free: no Kafka, Feast or Triton here. Every driver (the embedded replay,
the Faust worker, the benchmarks) calls :func:`apply_batch` and :func:`confirm_plans`.

Rules
-----
* **Order.** Events are applied in the total order (event_time, event_id). Each user keeps a
  watermark, the key of the last applied event.
* **Idempotence.** An event whose key is at or below the user's watermark changes nothing, so a
  replayed or duplicated event is harmless, in any batch and after any crash.
* **Late events.** An event older than the watermark is *late*: it is counted and skipped. The
  sequence is a recency list; rewriting history for a late event would change the plan's input
  after the fact and make replays depend on arrival order. Within one batch, events are sorted
  first, so order inside a batch never matters.
* **Unknown items** (not in the catalog) are counted and skipped.
* **Sequence.** ``recent_clusters`` holds the user's most recent unique clusters, most recent
  first, at most W (the novelty window). The planning history is its first K entries.
* **Revision.** Every state change gets a per-user revision stamp that strictly increases:
  ``max(last event time, previous revision + 2 us)`` for a batch's changes and confirmations.
  Stores that keep only writes newer than the stored one (Feast's Redis store) are stamped with
  it, so two batches that end on events of the same second, or a plan confirmed without a new
  event, are never dropped. A *repair* (a deferred replan made without a new event,
  :func:`owed_replans`) confirms with ``previous revision + 1 us``: a batch that started from
  the same state always stamps higher, so whichever of the two is written last, the batch's
  state wins and a repair never overwrites a newer state or plan.
* **Replan.** A user needs a replan when the planner's input moved since their last confirmed
  plan (their history, or the set of recent clusters the plan had to avoid), and at least
  ``replan_debounce_s`` of event time has passed since that plan. Comparing the avoided set,
  not only the history, matters when a user returns to their planned history within a batch
  (or while a replan was deferred): the old plan may propose a cluster they have just watched.
  With it, a user's plan is always the plan of their current state, wherever batch boundaries
  fell. A pending replan survives in the state, so a crash between the state write and the plan
  write is repaired the next time the user is seen, or sooner by the worker's repair loop
  (drivers keep a durable record of the users owed a replan, :mod:`plugin.core.ports`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta

from plugin.core.catalog import ClusterCatalog
from plugin.core.events import ORDER_KEY, WatchEvent
from plugin.core.planning import ExplorationPlan, PlanRequest
from plugin.settings import DataSettings, SequenceSettings

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class UserClusterSequence:
    """One user's state: recent unique clusters plus what the core needs to stay idempotent."""

    user_id: str
    recent_clusters: tuple[int, ...] = ()
    last_event_time: datetime | None = None
    last_event_id: str = ""
    event_count: int = 0
    positive_count: int = 0
    planned_history: tuple[int, ...] = ()
    # The recent clusters that plan had to avoid, sorted: its ``excluded`` set.
    planned_window: tuple[int, ...] = ()
    planned_at: datetime | None = None
    # A store write stamp, not part of the user's state: equal states may differ in it.
    revision_us: int = field(default=0, compare=False)

    def history(self, k: int) -> tuple[int, ...]:
        """The planning history: the K most recent unique clusters, most recent first."""
        return self.recent_clusters[:k]

    def plan_is_current(self, k: int) -> bool:
        """True when the last confirmed plan was made from this state's planner input."""
        return self.history(k) == self.planned_history and self.planned_window == tuple(
            sorted(self.recent_clusters)
        )

    def watermark(self) -> tuple[datetime, str] | None:
        if self.last_event_time is None:
            return None
        return (self.last_event_time, self.last_event_id)


@dataclass
class BatchStats:
    """What happened to one batch; drivers sum these into metrics and reports."""

    applied: int = 0
    stale: int = 0  # at or below the watermark: replayed, duplicated or late
    unknown_items: int = 0
    users_changed: int = 0
    replans: int = 0
    debounced: int = 0

    def add(self, other: BatchStats) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass(frozen=True)
class BatchResult:
    """State of every user the batch changed or replans, and the replans it asks for."""

    states: dict[str, UserClusterSequence]
    replans: list[PlanRequest]
    stats: BatchStats = field(default_factory=BatchStats)


def to_micros(moment: datetime) -> int:
    """Epoch microseconds, exact (no float rounding)."""
    delta = moment - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


# A batch moves a revision on by at least BATCH_STEP_US, a repair by exactly REPAIR_STEP_US:
# from the same stored state, a batch always stamps higher than a repair (module docstring).
BATCH_STEP_US = 2
REPAIR_STEP_US = 1


_STATE_FIELDS = frozenset(f.name for f in fields(UserClusterSequence))


def evolve(state: UserClusterSequence, **changes: object) -> UserClusterSequence:
    """``dataclasses.replace`` for a state, without running ``__init__`` again.

    Why: it is called a few times per event, and ``replace`` re-runs the generated
    ``__init__`` with every field as a keyword: it was the core's largest cost in the drain
    profile. The state has no ``__post_init__`` (nothing to validate), so copying its fields
    and setting the changed ones makes the same object.
    """
    assert changes.keys() <= _STATE_FIELDS, f"not a state field: {set(changes) - _STATE_FIELDS}"
    new = object.__new__(UserClusterSequence)
    new.__dict__.update(state.__dict__)
    new.__dict__.update(changes)
    return new


def _revision(state: UserClusterSequence, step_us: int) -> int:
    event_us = to_micros(state.last_event_time) if state.last_event_time else 0
    return max(event_us, state.revision_us + step_us)


def next_revision(state: UserClusterSequence, step_us: int = BATCH_STEP_US) -> UserClusterSequence:
    """Stamp a changed state with a revision newer than any the user had."""
    return evolve(state, revision_us=_revision(state, step_us))


def push_cluster(recent: tuple[int, ...], cluster_id: int, window: int) -> tuple[int, ...]:
    """Move ``cluster_id`` to the front of the recent unique clusters, bounded by ``window``."""
    if recent and recent[0] == cluster_id:
        return recent
    return (cluster_id, *(c for c in recent if c != cluster_id))[:window]


def apply_event(
    state: UserClusterSequence,
    event: WatchEvent,
    cluster_id: int,
    positive: bool,
    window: int,
) -> UserClusterSequence:
    """Apply one event that is known to be newer than the state's watermark."""
    return evolve(
        state,
        recent_clusters=push_cluster(state.recent_clusters, cluster_id, window),
        last_event_time=event.event_time,
        last_event_id=event.event_id,
        event_count=state.event_count + 1,
        positive_count=state.positive_count + int(positive),
    )


def needs_replan(state: UserClusterSequence, k: int, debounce: timedelta) -> bool:
    """True when the planner's input moved since the last confirmed plan and the debounce has
    passed."""
    if not state.recent_clusters or state.plan_is_current(k):
        return False
    if state.planned_at is None or state.last_event_time is None:
        return True
    return state.last_event_time - state.planned_at >= debounce


def plan_request(state: UserClusterSequence, k: int) -> PlanRequest:
    """What the planner needs for one user: the history and the clusters a plan must avoid."""
    assert state.last_event_time is not None, "a replanned user has applied at least one event"
    return PlanRequest(
        user_id=state.user_id,
        history=state.history(k),
        excluded=frozenset(state.recent_clusters),
        as_of=state.last_event_time,
        window=state.recent_clusters,  # most recent first, for a recency-weighted window term
    )


def apply_batch(
    events: Iterable[WatchEvent],
    states: Mapping[str, UserClusterSequence],
    catalog: ClusterCatalog,
    sequence: SequenceSettings,
    engagement: DataSettings,
) -> BatchResult:
    """Apply a batch of validated events to the given user states.

    ``states`` must hold the current state of every user in the batch that has one (users
    missing from it start empty). The result holds users whose state changed or who need a
    replan, and a replan request for each of the latter, including users whose events were
    all stale but whose replan is still pending.
    """
    stats = BatchStats()
    current: dict[str, UserClusterSequence] = {}
    changed: set[str] = set()
    for event in sorted(events, key=ORDER_KEY):
        state = current.get(event.user_id) or states.get(event.user_id)
        if state is None:
            state = UserClusterSequence(user_id=event.user_id)
        current[event.user_id] = state
        mark = state.watermark()
        if mark is not None and ORDER_KEY(event) <= mark:
            stats.stale += 1
            continue
        cluster_id = catalog.cluster_of(event.item_id)
        if cluster_id is None:
            stats.unknown_items += 1
            continue
        positive = event.is_positive(engagement.positive_rating, engagement.positive_watch_ratio)
        current[event.user_id] = apply_event(
            state, event, cluster_id, positive, sequence.novelty_window
        )
        changed.add(event.user_id)
        stats.applied += 1

    k = sequence.history_length
    debounce = timedelta(seconds=sequence.replan_debounce_s)
    replans: list[PlanRequest] = []
    for user_id in sorted(current):
        if user_id in changed:
            current[user_id] = next_revision(current[user_id])
        state = current[user_id]
        if needs_replan(state, k, debounce):
            replans.append(plan_request(state, k))
        elif state.recent_clusters and not state.plan_is_current(k):
            stats.debounced += 1
    stats.users_changed = len(changed)
    stats.replans = len(replans)
    touched = changed | {request.user_id for request in replans}
    return BatchResult(
        states={user_id: current[user_id] for user_id in sorted(touched)},
        replans=replans,
        stats=stats,
    )


def owed_replans(
    states: Mapping[str, UserClusterSequence], sequence: SequenceSettings
) -> BatchResult:
    """The replans still owed to ``states`` (stored states, no new events): the same rule as
    :func:`apply_batch` applies at the end of a batch, so a repaired plan is the plan the user
    would have got had the planner answered in time. Confirm them with
    ``confirm_plans(..., repair=True)``."""
    k = sequence.history_length
    debounce = timedelta(seconds=sequence.replan_debounce_s)
    owed = {
        user_id: state
        for user_id, state in sorted(states.items())
        if needs_replan(state, k, debounce)
    }
    stats = BatchStats(replans=len(owed))
    return BatchResult(
        states=owed, replans=[plan_request(s, k) for s in owed.values()], stats=stats
    )


def confirm_plans(
    states: Mapping[str, UserClusterSequence],
    plans: Sequence[ExplorationPlan],
    repair: bool = False,
) -> dict[str, UserClusterSequence]:
    """Record written plans in the user states: returns the states that now carry a plan.

    Call it only after the plans are durably written, then write the returned states; the
    pending-replan rule makes any crash in between safe. ``repair``: the states are stored ones
    replanned without a new event (:func:`owed_replans`), stamped so that any batch from the
    same state outranks them.
    """
    step = REPAIR_STEP_US if repair else BATCH_STEP_US
    confirmed: dict[str, UserClusterSequence] = {}
    for plan in plans:
        state = states.get(plan.user_id)
        if state is None:
            continue
        # One copy: the revision depends only on fields the confirmation does not change.
        confirmed[plan.user_id] = evolve(
            state,
            planned_history=plan.history,
            planned_window=tuple(sorted(state.recent_clusters)),
            planned_at=plan.as_of,
            revision_us=_revision(state, step),
        )
    return confirmed
