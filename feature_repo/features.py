"""Feast definitions: who the entities are and which features the plugin writes online.

The plugin writes every view through its push source (``write_to_online_store``); the file
sources behind them only give Feast an offline schema and are not read by the plugin.
"""

from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource
from feast.types import Array, Float64, Int64, String
from feast.value_type import ValueType

_OFFLINE = Path(__file__).resolve().parent / "data"

user = Entity(
    name="user",
    join_keys=["user_id"],
    value_type=ValueType.STRING,
    description="A viewer of the video service.",
)
cluster = Entity(
    name="cluster",
    join_keys=["cluster_id"],
    value_type=ValueType.INT64,
    description="A leaf interest cluster of the ClusterCatalog.",
)


def _push_source(name: str) -> PushSource:
    return PushSource(
        name=f"{name}_push",
        batch_source=FileSource(
            name=f"{name}_offline",
            path=str(_OFFLINE / f"{name}.parquet"),
            timestamp_field="event_timestamp",
        ),
    )


user_cluster_sequence = FeatureView(
    name="user_cluster_sequence",
    entities=[user],
    # Feast does not enforce ttl online; it documents how stale a sequence may be offline.
    ttl=timedelta(days=365),
    schema=[
        Field(
            name="recent_clusters",
            dtype=Array(Int64),
            description="most recent unique clusters, most recent first, at most W",
        ),
        Field(name="history", dtype=Array(Int64), description="the first K recent clusters"),
        Field(name="last_event_id", dtype=String),
        Field(name="last_event_time_us", dtype=Int64, description="epoch microseconds"),
        Field(name="event_count", dtype=Int64),
        Field(name="positive_count", dtype=Int64),
        Field(
            name="planned_history",
            dtype=Array(Int64),
            description="history of the last confirmed plan",
        ),
        Field(
            name="planned_window",
            dtype=Array(Int64),
            description="the recent clusters that plan avoided, sorted",
        ),
        Field(name="planned_at_us", dtype=Int64, description="event time of that plan, epoch us"),
        Field(
            name="revision_us",
            dtype=Int64,
            description="strictly increasing per-user write stamp (the rows' event timestamp)",
        ),
    ],
    source=_push_source("user_cluster_sequence"),
    online=True,
)

exploration_plan = FeatureView(
    name="exploration_plan",
    entities=[user],
    ttl=timedelta(days=365),
    schema=[
        Field(name="cluster_id", dtype=Int64, description="the planned next novel cluster"),
        Field(name="description", dtype=String, description="its keyword description"),
        Field(name="candidates", dtype=Array(Int64), description="the n candidates, best first"),
        Field(name="scores", dtype=Array(Float64), description="their scores, same order"),
        Field(name="history", dtype=Array(Int64), description="the history it was planned from"),
        Field(name="model_version", dtype=String),
        Field(name="planned_at_us", dtype=Int64, description="event time planned at, epoch us"),
    ],
    source=_push_source("exploration_plan"),
    online=True,
)

cluster_items = FeatureView(
    name="cluster_items",
    entities=[cluster],
    ttl=timedelta(days=365),
    schema=[
        Field(name="top_items", dtype=Array(String), description="most-watched items, best first"),
        Field(name="top_titles", dtype=Array(String), description="their titles, same order"),
        Field(name="description", dtype=String, description="its keywords"),
        Field(name="summary", dtype=String, description="a readable sentence, keywords if none"),
        Field(name="parent_description", dtype=String),
        Field(name="catalog_version", dtype=String),
    ],
    source=_push_source("cluster_items"),
    online=True,
)

history_candidate = Entity(
    name="history_candidate",
    join_keys=["history_candidate"],
    value_type=ValueType.STRING,
    description="A planning history and a candidate cluster: 'c1,c2>c' (most recent first).",
)

feedback_aggregates = FeatureView(
    name="feedback_aggregates",
    entities=[history_candidate],
    ttl=timedelta(days=365),
    schema=[
        Field(name="answered", dtype=Int64, description="plans of c for h that users answered"),
        Field(name="engaged", dtype=Int64, description="answers that engaged c"),
        Field(name="engaged_positive", dtype=Int64, description="answers that engaged c well"),
        Field(name="positive_rate", dtype=Float64, description="engaged_positive / answered"),
        Field(name="novel", dtype=Int64, description="answers that were novel moves"),
        Field(name="model_version", dtype=String, description="of the newest answered plan"),
        Field(name="revision_us", dtype=Int64, description="strictly increasing write stamp"),
    ],
    source=_push_source("feedback_aggregates"),
    online=True,
)

ranker = FeatureService(
    name="ranker",
    features=[exploration_plan, user_cluster_sequence[["history"]]],
    description="What the item ranker looks up per user: the plan and the history behind it.",
)
