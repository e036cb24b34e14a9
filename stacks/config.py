"""The stack model: which infrastructure a run uses, as frozen, strictly validated pydantic models.

A stack file is read once per run and then passed around, so it is frozen (no step can change
the infrastructure under another) and strict (`extra="forbid"`, no type coercion): a misspelt
key or a `port: "80x"` is an error at load time that names the file, the component and the
key, not a silently ignored setting discovered after an hour of training.

The file shape is ZenML's `zenml stack export` (`stack_name`, `components: {type: {name,
flavor, configuration}}`), so stacks move to and from ZenML (see `zenml_io.py`). Each flavor is
a component class whose `flavor` is a `Literal` and whose `configuration` is that flavor's model;
a type with several models is a union discriminated by `flavor`, so pydantic chooses the model
and `FLAVORS` is read off the `Stack` fields rather than kept as a second list. Secret
references (`{{name.key}}`, `${VAR}`) stay references in these models; `Stack.require_secrets()`
checks them and the convenience accessors resolve them where a value is needed.

These models own the defaults of what they configure: code that runs a component (the whylogs
validator, the retraining policy, a flow's tuning and compute settings) takes its settings from
them, and a stack without the component gets the model's defaults (`Stack.tuner_config()` and
the like). That direction is the only one open: stacks import no step, flow or service, while
steps and flows may import stacks.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Generic, Literal, TypeVar, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails

from stacks import secret_keys, secrets
from stacks.paths import has_url_scheme, resolve_db_uri, resolve_path

__all__ = [
    "DEFAULT_SERVER_LIMITS",
    "FLAVORS",
    "REQUIRED_TYPES",
    "ArtifactStoreComponent",
    "ArtifactStoreConfig",
    "Component",
    "ComponentType",
    "ComputeComponent",
    "ComputeConfig",
    "DaskCluster",
    "DataValidatorComponent",
    "DeployerConfig",
    "DockerDeployerConfig",
    "DockerModelDeployer",
    "DriftThreshold",
    "ExperimentTrackerComponent",
    "FileLineage",
    "FileLineageConfig",
    "HttpLineage",
    "HttpLineageConfig",
    "KubernetesDeployerConfig",
    "KubernetesModelDeployer",
    "Lineage",
    "LineageComponent",
    "LocalDeployerConfig",
    "LocalModelDeployer",
    "MetricsComponent",
    "MlflowRegistryConfig",
    "MlflowTrackerConfig",
    "ModelDeployer",
    "ModelDeployerComponent",
    "ModelRegistryComponent",
    "OptunaConfig",
    "OrchestratorComponent",
    "PredictionStoreComponent",
    "PrefectOrchestratorConfig",
    "PrometheusConfig",
    "RedisStreamConfig",
    "RetrainingPolicyConfig",
    "RolloutPolicy",
    "RolloutStep",
    "ServerLimits",
    "ServiceLevelObjectives",
    "SqlPredictionStoreConfig",
    "Stack",
    "StackError",
    "StreamComponent",
    "TrainingMode",
    "TunerComponent",
    "WhylogsConfig",
    "parse_stack",
]

STACK_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
TOP_LEVEL_KEYS = ("stack_name", "components", "zenml_version")


class StackError(ValueError):
    """A stack that cannot be used; the message names the file, component and key, one line each."""


class ComponentType(StrEnum):
    """The kinds of infrastructure a stack can name (ZenML's names where ZenML has the type)."""

    ORCHESTRATOR = "orchestrator"
    ARTIFACT_STORE = "artifact_store"
    EXPERIMENT_TRACKER = "experiment_tracker"
    MODEL_REGISTRY = "model_registry"
    DATA_VALIDATOR = "data_validator"
    MODEL_DEPLOYER = "model_deployer"
    TUNER = "tuner"
    COMPUTE = "compute"
    PREDICTION_STORE = "prediction_store"
    LINEAGE = "lineage"
    STREAM = "stream"
    METRICS = "metrics"


REQUIRED_TYPES: tuple[ComponentType, ...] = (ComponentType.ORCHESTRATOR, ComponentType.ARTIFACT_STORE)


class _Config(BaseModel):
    """Base of every configuration: frozen, unknown keys rejected, no silent type coercion.

    No configuration holds a credential in plain text: a value under a secret key (`auth_token`,
    `storage_options.secret`, see `secret_keys.py`) must be a secret reference and a URL must not
    carry a password, or validation fails, so no file, export or log line can carry one. For the
    same reason pydantic's errors omit the input and `repr()` masks secret keys.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, hide_input_in_errors=True)

    @model_validator(mode="after")
    def _no_plain_secrets(self) -> _Config:
        found = secret_keys.plain_secrets(self.model_dump(mode="python"))
        if found:
            namespace = _secret_namespace(type(self))
            raise ValueError("\n".join(secret_keys.refusal(f, namespace) for f in found))
        return self

    def __repr_args__(self) -> Any:
        masked = secret_keys.mask_tree(dict(super().__repr_args__()))
        return list(masked.items())


# --------------------------------------------------------------------------- configurations

DASK_SCHEMES = ("tcp://", "tls://", "ws://", "wss://", "ucx://", "inproc://")
DASK_CLUSTER_KEYS = ("dask_address", "dask_n_workers", "dask_threads_per_worker")
DEFAULT_DASK_WORKERS = 2
DEFAULT_DASK_THREADS = 1
"""A LocalCluster's size when neither the orchestrator nor the compute component gives one."""


def _dask_address(v: str | None) -> str | None:
    """A Dask scheduler address as distributed.Client takes it: scheme://host:port."""
    if v is not None and not (v.startswith(DASK_SCHEMES) and len(v.split("://", 1)[1]) > 0):
        raise ValueError(
            "dask_address must be a scheduler address such as tcp://dask-scheduler:8786 "
            f"(got {secret_keys.mask_url(v)!r})"
        )
    return v


class PrefectOrchestratorConfig(_Config):
    """Where flows run: a Prefect API (None = Prefect's ephemeral local API), work pool, task runner."""

    api_url: str | None = None
    work_pool: str | None = None
    work_pool_type: str = "process"
    job_variables: dict[str, Any] = Field(default_factory=dict)
    task_runner: Literal["threads", "dask"] = "threads"
    max_workers: int = Field(default=4, ge=1)
    dask_address: str | None = None  # a running scheduler; None with task_runner dask: a LocalCluster
    dask_n_workers: int = Field(default=DEFAULT_DASK_WORKERS, ge=1)
    dask_threads_per_worker: int = Field(default=DEFAULT_DASK_THREADS, ge=1)

    @field_validator("api_url")
    @classmethod
    def _http_api_url(cls, v: str | None) -> str | None:
        if v is not None and not secrets.is_secret_ref(v) and not v.startswith(("http://", "https://")):
            raise ValueError(
                "api_url must be an http(s) URL such as http://127.0.0.1:4200/api "
                f"(got {secret_keys.mask_url(v)!r})"
            )
        return v

    @field_validator("dask_address")
    @classmethod
    def _scheduler_address(cls, v: str | None) -> str | None:
        return _dask_address(v)

    @model_validator(mode="after")
    def _dask_needs_dask_runner(self) -> PrefectOrchestratorConfig:
        if self.dask_address is not None and self.task_runner != "dask":
            raise ValueError("dask_address is set but task_runner is 'threads'; set task_runner: dask")
        return self


class ArtifactStoreConfig(_Config):
    """An fsspec location: a local folder (relative to flywheel home) or an s3/gs/az URI."""

    path: str = Field(min_length=1)
    storage_options: dict[str, Any] = Field(default_factory=dict)


class MlflowTrackerConfig(_Config):
    """MLflow tracking server or database; key names are ZenML's MLflow tracker's."""

    tracking_uri: str = Field(min_length=1)
    experiment_name: str = Field(default="flywheel", min_length=1)
    tracking_username: str | None = None
    tracking_password: str | None = None
    tracking_token: str | None = None

    @model_validator(mode="after")
    def _username_with_password(self) -> MlflowTrackerConfig:
        if (self.tracking_username is None) != (self.tracking_password is None):
            raise ValueError("tracking_username and tracking_password must be given together")
        return self


class MlflowRegistryConfig(_Config):
    """MLflow model registry; None means the experiment tracker's tracking_uri."""

    registry_uri: str | None = None


TrainingMode = Literal["full", "incremental"]
"""How a retrain learns: ``full`` trains anew on the source plus the feedback; ``incremental`` continues
boosting the champion on the collected feedback."""


class RetrainingPolicyConfig(_Config):
    """When monitoring asks for a retrain (N drifting windows of the last M, an AUC floor, cooldowns), and
    how: drift in the inputs means a full retrain; decay of realized performance with steady inputs means
    ``decay_mode`` (the champion still fits its inputs, it only needs the newest labels)."""

    features: list[str] | None = None  # watched columns; null = every model feature
    include_prediction: bool = True  # the prediction distribution counts as a column
    min_drifted_features: int = Field(default=2, ge=1)
    n_windows: int = Field(default=3, ge=1)
    of_last: int = Field(default=4, ge=1)
    min_window_rows: int = Field(default=500, ge=1)  # fewer rows: sampling noise alone passes 0.15
    auc_floor: float | None = Field(default=0.6, gt=0, lt=1)
    min_labels: int = Field(default=200, ge=1)
    cooldown_hours: float = Field(default=24, ge=0)  # since the last retrain monitoring asked for
    # since the champion was registered (give a new champion its own traffic); null = cooldown_hours
    champion_cooldown_hours: float | None = Field(default=None, ge=0)
    decay_mode: TrainingMode = "incremental"  # realized AUC under the floor, no window drifting
    full_below_auc: float | None = Field(default=None, gt=0, lt=1)  # decay this deep is not mild: full

    @model_validator(mode="after")
    def _n_within_m(self) -> RetrainingPolicyConfig:
        if self.n_windows > self.of_last:
            raise ValueError(f"n_windows ({self.n_windows}) cannot exceed of_last ({self.of_last})")
        deep, floor = self.full_below_auc, self.auc_floor
        if deep is not None and floor is not None and deep >= floor:
            raise ValueError(
                f"full_below_auc ({self.full_below_auc}) must be under auc_floor ({self.auc_floor})"
            )
        return self


DriftThreshold = Annotated[float, Field(gt=0, le=1)]
"""How far a column's distribution may move before it counts as drifting (a Hellinger distance)."""


class WhylogsConfig(_Config):
    """Validation and drift thresholds (Hellinger by default: KS p-values flag everything)."""

    drift_algorithm: Literal["hellinger", "ks", "chi2"] = "hellinger"
    drift_threshold: DriftThreshold = 0.15
    max_nan_fraction: float = Field(default=0.2, ge=0, le=1)
    min_rows: int = Field(default=50, ge=1)
    min_minority_fraction: float = Field(default=0.01, ge=0, le=0.5)
    profile_batch_size: int = Field(default=10_000, ge=1)
    profile_window_seconds: int = Field(default=300, ge=1)
    retraining: RetrainingPolicyConfig = Field(default_factory=RetrainingPolicyConfig)


class ServerLimits(_Config):
    """How long the service waits for a client and how many it holds: the one owner of these numbers.

    uvicorn's defaults wait forever for a connection that sends nothing or sends its headers slowly, wait
    forever on shutdown for a client that sent half a body, and accept connections until the process runs
    out of file descriptors (then even /ready fails). Every path that starts the service renders these
    into its options (``stacks.components.deployers.server_options``); the service itself reads the header
    timeout, connection cap, body timeout and body size from the same stack. Counts are per server process
    (each of ``workers``). uvicorn takes whole seconds for the keep-alive and shutdown timeouts.
    """

    header_timeout_s: float = Field(default=10.0, gt=0, le=300)  # open, or a request's 1st byte -> headers
    body_timeout_s: float = Field(default=30.0, gt=0, le=3600)  # headers -> the whole body received
    keep_alive_timeout_s: int = Field(default=5, ge=1, le=3600)  # idle between requests on a connection
    graceful_shutdown_timeout_s: int = Field(default=10, ge=1, le=3600)  # in-flight requests on SIGTERM
    limit_concurrency: int = Field(default=1000, ge=1, le=1_000_000)  # connections or requests -> 503 past it
    max_connections: int = Field(default=2000, ge=1, le=1_000_000)  # past it a new connection is closed
    backlog: int = Field(default=2048, ge=1, le=65535)  # accept queue (the kernel caps it at somaxconn)
    max_body_bytes: int = Field(default=2_000_000, ge=1, le=1_000_000_000)  # larger: 413

    @model_validator(mode="after")
    def _connections_hold_the_concurrency(self) -> ServerLimits:
        if self.max_connections < self.limit_concurrency:
            raise ValueError(
                f"max_connections ({self.max_connections}) is below limit_concurrency "
                f"({self.limit_concurrency}): connections would be dropped before any request is told 503"
            )
        return self


class RolloutStep(_Config):
    """One step of a staged rollout: the candidate in ``shadow`` (scores a copy, answers nothing) or
    ``canary`` (answers ``fraction`` of the requests), held ``hold_s`` and at least ``min_requests``
    candidate answers (or shadow scores) while every guardrail holds."""

    stage: Literal["shadow", "canary"]
    fraction: float = Field(default=0.0, ge=0.0, le=1.0)
    hold_s: float = Field(default=60.0, gt=0, le=7 * 86400)
    min_requests: int = Field(default=200, ge=0, le=100_000_000)

    @model_validator(mode="after")
    def _fraction_of_stage(self) -> RolloutStep:
        if self.stage == "canary" and not 0.0 < self.fraction < 1.0:
            raise ValueError("a canary step answers a fraction between 0 and 1 of the requests (1: promote)")
        if self.stage == "shadow" and self.fraction != 0.0:
            raise ValueError("a shadow step answers no request: leave fraction out")
        return self


class Guardrails(_Config):
    """What a rollout step must keep, measured on the candidate's answers (and shadow scores) of the step:
    a broken one rolls the candidate back."""

    max_error_rate: float = Field(default=0.01, ge=0.0, le=1.0)  # failed candidate scorings / all
    max_p99_ms: float = Field(default=50.0, gt=0)  # the candidate's scoring latency
    max_p99_ratio: float = Field(default=3.0, gt=0)  # candidate p99 / champion p99 over the same step
    max_mean_shift: float = Field(default=0.15, ge=0.0)  # |mean prediction: candidate - champion|
    # the realized metric (the gate's, from the labels /feedback brings back), once both versions have
    # min_labels labelled rows in the step: the candidate may trail the champion by max_metric_drop at most
    min_labels: int = Field(default=200, ge=1, le=10_000_000)
    max_metric_drop: float = Field(default=0.02, ge=0.0)


class RolloutPolicy(_Config):
    """How a candidate that passed the gate reaches all traffic: ``immediate`` (the alias moves at once,
    the local default) or ``staged`` (``steps``, then the alias moves; a broken guardrail rolls it back)."""

    strategy: Literal["immediate", "staged"] = "immediate"
    steps: list[RolloutStep] = Field(
        default_factory=lambda: [
            RolloutStep(stage="shadow", hold_s=120, min_requests=500),
            RolloutStep(stage="canary", fraction=0.1, hold_s=120, min_requests=200),
            RolloutStep(stage="canary", fraction=0.5, hold_s=120, min_requests=500),
        ],
        min_length=1,
        max_length=20,
    )
    guardrails: Guardrails = Field(default_factory=Guardrails)
    check_every_s: float = Field(default=5.0, gt=0, le=3600)
    # a person approves (Prefect's pause with a form in the UI, or `flywheel model approve`): never, before
    # the alias moves, or before every step too; no answer within approval_timeout_s rejects
    approval: Literal["none", "before_promotion", "each_step"] = "none"
    approval_timeout_s: int = Field(default=86_400, ge=10, le=30 * 86_400)


DEFAULT_SERVER_LIMITS = ServerLimits()
"""The limits of a service whose stack has no model_deployer component (or no ``server`` block)."""


class LocalDeployerConfig(_Config):
    """Serve the champion as a local process."""

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    workers: int = Field(default=1, ge=1)
    max_batch_size: int = Field(default=1000, ge=1)
    auth_token: str | None = None
    ready_timeout_s: float = Field(default=60, gt=0)  # how long `deploy` waits for /ready
    server: ServerLimits = Field(default_factory=ServerLimits)
    rollout: RolloutPolicy = Field(default_factory=RolloutPolicy)


class DockerDeployerConfig(_Config):
    """Serve the champion in a local Docker container."""

    image: str = "flywheel:latest"
    port: int = Field(default=8080, ge=1, le=65535)
    workers: int = Field(default=1, ge=1)
    max_batch_size: int = Field(default=1000, ge=1)
    auth_token: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    build: bool = True  # `docker build` this repository's Dockerfile before `docker run`
    ready_timeout_s: float = Field(default=120, gt=0)
    server: ServerLimits = Field(default_factory=ServerLimits)
    rollout: RolloutPolicy = Field(default_factory=RolloutPolicy)


class KubernetesDeployerConfig(_Config):
    """Serve the champion as a Kubernetes Deployment and Service."""

    image: str = Field(min_length=1)
    namespace: str = "default"
    replicas: int = Field(default=2, ge=1)
    port: int = Field(default=8080, ge=1, le=65535)
    cpu: str = "500m"
    memory: str = "1Gi"
    max_batch_size: int = Field(default=1000, ge=1)
    auth_token: str | None = None
    service_type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = "ClusterIP"
    ready_timeout_s: float = Field(default=300, gt=0)  # `kubectl rollout status --timeout`
    server: ServerLimits = Field(default_factory=ServerLimits)
    rollout: RolloutPolicy = Field(default_factory=RolloutPolicy)


DeployerConfig = LocalDeployerConfig | DockerDeployerConfig | KubernetesDeployerConfig


class OptunaConfig(_Config):
    """Where the study lives: None = in memory (one process), or a SQLAlchemy URL (shared by workers).

    A PostgreSQL URL carries a password, so it may be given whole as a reference
    (`${FLYWHEEL_OPTUNA_DB_URL}`); references inside a URL are not supported.
    """

    storage: str | None = None
    sampler: Literal["tpe", "random"] = "tpe"
    pruner: Literal["median", "hyperband", "none"] = "median"

    @field_validator("storage")
    @classmethod
    def _url_or_ref(cls, v: str | None) -> str | None:
        if v is not None and not secrets.is_secret_ref(v) and not has_url_scheme(v):
            raise ValueError(
                "storage must be a SQLAlchemy URL (sqlite:///optuna.db, postgresql://...), a whole "
                "secret reference such as ${FLYWHEEL_OPTUNA_DB_URL}, or null "
                f"(got {secret_keys.mask_url(v)!r})"
            )
        return v


class ComputeConfig(_Config):
    """Where the numeric work runs inside a step: XGBoost's device and threads, and the DataFrame engine.

    ``engine: dask`` trains with ``xgboost.dask`` and scores partition by partition on the run's Dask
    cluster. A run has one cluster: the orchestrator's when its task runner is dask, else the one named
    here (``dask_address``, or a LocalCluster of ``dask_n_workers`` on the flow's machine).
    """

    device: Literal["cpu", "cuda"] = "cpu"
    n_jobs: int | None = Field(default=None, ge=1)
    engine: Literal["pandas", "dask"] = "pandas"
    dask_address: str | None = None
    dask_n_workers: int | None = Field(default=None, ge=1)
    dask_threads_per_worker: int | None = Field(default=None, ge=1)
    partition_rows: int = Field(default=100_000, ge=1_000)  # rows per Dask partition (and Parquet part)

    @field_validator("dask_address")
    @classmethod
    def _scheduler_address(cls, v: str | None) -> str | None:
        return _dask_address(v)

    @model_validator(mode="after")
    def _dask_keys_need_dask_engine(self) -> ComputeConfig:
        cluster_keys = [k for k in DASK_CLUSTER_KEYS if getattr(self, k) is not None]
        if cluster_keys and self.engine != "dask":
            raise ValueError(f"{', '.join(cluster_keys)} set but engine is 'pandas'; set engine: dask")
        if self.dask_address is not None and len(cluster_keys) > 1:
            raise ValueError(
                "dask_n_workers and dask_threads_per_worker size a LocalCluster; a scheduler at "
                "dask_address has its own workers: give one or the other"
            )
        return self


TABLE_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,62}$"
"""A SQL table name that needs no quoting in SQLite or PostgreSQL (63 bytes: PostgreSQL's limit)."""


class SqlPredictionStoreConfig(_Config):
    """Where batch inference keeps its predictions for the service to look up: a table through SQLAlchemy.

    ``url`` is a SQLAlchemy URL (``sqlite:///predictions.db`` lives under flywheel home); a URL that
    carries a password is given whole as a secret reference (``"{{predictions.db_url}}"``), as the
    tuner's storage is. ``fallback: live`` lets the service score a missing key live when the request
    carries the record's features; ``none`` answers 404. ``max_lookup_keys`` bounds one batch lookup.
    """

    url: str = Field(min_length=1)
    table: str = Field(default="predictions", pattern=TABLE_NAME_PATTERN)
    fallback: Literal["none", "live"] = "none"
    max_lookup_keys: int = Field(default=1000, ge=1, le=10_000)
    pool_size: int = Field(default=5, ge=1, le=100)  # connections the service keeps open per process
    timeout_s: float = Field(default=5.0, gt=0, le=300)  # connect (and SQLite lock) timeout

    @field_validator("url")
    @classmethod
    def _url_or_ref(cls, v: str) -> str:
        if not secrets.is_secret_ref(v) and not has_url_scheme(v):
            raise ValueError(
                "url must be a SQLAlchemy URL (sqlite:///predictions.db, postgresql://...) or a whole "
                '"{{predictions.db_url}}" secret reference '
                f"(got {secret_keys.mask_url(v)!r})"
            )
        return v


STREAM_NAME_PATTERN = r"^[A-Za-z0-9_.:{}-]{1,200}$"
"""A Redis key as a stream name; ``{model}`` is replaced by the served model's name (a plain replacement)."""
MODEL_PLACEHOLDER = "{model}"


class RedisStreamConfig(_Config):
    """Where the streaming consumer (``flywheel stream serve``) reads records and writes predictions: Redis
    streams read through a consumer group, so several consumers share the work and a record whose
    consumer died is claimed by another (at-least-once).

    ``url`` is a ``redis://`` URL; one that carries a password is given whole as a secret reference
    (``"{{redis.url}}"``). Stream names may hold ``{model}``: one stack serves every model's streams. A
    record is acknowledged only once its prediction (or its dead letter) is written, in one transaction.
    ``claim_idle_ms`` is how long a record may sit with a consumer that stopped answering before another
    takes it; ``max_deliveries`` is how often a record may be taken without an outcome before it goes to
    the dead letters (a record that kills every consumer must not stop the stream). ``max_len`` bounds the
    output and dead-letter streams (Redis trims the oldest entries, approximately).
    """

    url: str = Field(min_length=1)
    input_stream: str = Field(default="flywheel:{model}:requests", pattern=STREAM_NAME_PATTERN)
    output_stream: str = Field(default="flywheel:{model}:predictions", pattern=STREAM_NAME_PATTERN)
    dead_letter_stream: str = Field(default="flywheel:{model}:dead-letter", pattern=STREAM_NAME_PATTERN)
    group: str = Field(default="flywheel", pattern=r"^[A-Za-z0-9_.:-]{1,100}$")
    batch_size: int = Field(default=100, ge=1, le=10_000)  # records taken per read
    block_ms: int = Field(default=1000, ge=1, le=60_000)  # how long a read waits for records
    claim_idle_ms: int = Field(default=30_000, ge=100, le=86_400_000)
    max_deliveries: int = Field(default=5, ge=1, le=1000)
    max_record_bytes: int = Field(default=1_048_576, ge=64, le=64 * 1_048_576)
    max_len: int = Field(default=1_000_000, ge=1000, le=1_000_000_000)
    metrics_port: int | None = Field(default=None, ge=0, le=65535)  # the consumer's /metrics; 0: a free port
    timeout_s: float = Field(default=5.0, gt=0, le=300)  # connect and command timeout (reads add block_ms)

    @field_validator("url")
    @classmethod
    def _redis_url(cls, v: str) -> str:
        if not secrets.is_secret_ref(v) and not v.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(
                'url must be a redis:// (rediss://, unix://) URL or a whole "{{redis.url}}" secret '
                f"reference (got {secret_keys.mask_url(v)!r})"
            )
        return v

    def stream_names(self, model_name: str) -> tuple[str, str, str]:
        """(input, output, dead letter) for ``model_name``."""
        return tuple(  # type: ignore[return-value]
            name.replace(MODEL_PLACEHOLDER, model_name)
            for name in (self.input_stream, self.output_stream, self.dead_letter_stream)
        )


class ServiceLevelObjectives(_Config):
    """What each model's service promises, over ``window_days``: Prometheus' recording and alert rules are
    generated from these (stacks/components/prometheus.py) and the monitoring report shows the error
    budget left."""

    latency_p99_ms: float = Field(default=50.0, gt=0)  # of /predict*, per service
    availability: float = Field(default=0.999, gt=0, lt=1)  # answers that are not a 5xx
    freshness_days: float = Field(default=30.0, gt=0)  # the champion no older than this
    profiling_loss: float = Field(default=0.001, ge=0, lt=1)  # rows profiling may drop
    window_days: int = Field(default=28, ge=1, le=365)
    alert_for_s: int = Field(default=120, ge=0, le=86_400)  # how long a breach lasts before it alerts


class PrometheusConfig(_Config):
    """A Prometheus that scrapes every model service (``make up`` and staging start Debian's package on
    ``port``; ``url`` is where its HTTP API answers), with rules made from ``slos``. The rollout guardrails
    and the monitoring report read the figures from it."""

    url: str = Field(default="http://127.0.0.1:9090", pattern=r"^https?://")
    port: int = Field(default=9090, ge=1, le=65535)  # the one the scripts start listens here
    scrape_interval_s: int = Field(default=5, ge=1, le=3600)
    evaluation_interval_s: int = Field(default=5, ge=1, le=3600)
    retention_days: int = Field(default=30, ge=1, le=3650)
    slos: ServiceLevelObjectives = Field(default_factory=ServiceLevelObjectives)
    timeout_s: float = Field(default=5.0, gt=0, le=120)


DEFAULT_LINEAGE_FILE = "lineage/openlineage.jsonl"
"""Where OpenLineage run events go when the stack names no lineage component (under flywheel home)."""


class FileLineageConfig(_Config):
    """OpenLineage run events appended, one JSON object a line, to a local file (relative: under flywheel
    home), which any OpenLineage reader can load; a local path only, since object stores cannot append."""

    path: str = Field(default=DEFAULT_LINEAGE_FILE, min_length=1)

    @field_validator("path")
    @classmethod
    def _local_path(cls, v: str) -> str:
        if has_url_scheme(v):
            raise ValueError(f"path must be a local file path, not a URL (got {v!r}); use flavor 'http'")
        return v


class HttpLineageConfig(_Config):
    """OpenLineage run events POSTed to a consumer's lineage API (Marquez and the like:
    ``{url}/{endpoint}``); ``api_key`` is a secret reference sent as a bearer token."""

    url: str = Field(pattern=r"^https?://")
    endpoint: str = "api/v1/lineage"
    timeout_s: float = Field(default=5.0, gt=0, le=60)  # one event's POST; a dead consumer costs this much
    api_key: str | None = None


SECRET_NAMESPACES: dict[ComponentType, str] = {
    ComponentType.ORCHESTRATOR: "prefect",
    ComponentType.ARTIFACT_STORE: "storage",
    ComponentType.EXPERIMENT_TRACKER: "mlflow",
    ComponentType.MODEL_REGISTRY: "mlflow",
    ComponentType.DATA_VALIDATOR: "whylogs",
    ComponentType.MODEL_DEPLOYER: "serving",
    ComponentType.TUNER: "optuna",
    ComponentType.COMPUTE: "dask",
    ComponentType.PREDICTION_STORE: "predictions",
    ComponentType.LINEAGE: "lineage",
    ComponentType.STREAM: "redis",
    ComponentType.METRICS: "prometheus",
}
"""The `name` of the `{{name.key}}` reference a refusal suggests, per component type."""


def _secret_namespace(config_cls: type[BaseModel]) -> str:
    for ctype, flavors in FLAVORS.items():
        if config_cls in flavors.values():
            return SECRET_NAMESPACES[ctype]
    return "stack"


ARTIFACT_SCHEMES: dict[str, tuple[str, ...]] = {
    "s3": ("s3://",),
    "gcs": ("gs://", "gcs://"),
    "azure": ("az://", "abfs://", "abfss://"),
}


def _known(ctype: ComponentType) -> str:
    return ", ".join(FLAVORS[ctype])


# --------------------------------------------------------------------------- components

C = TypeVar("C", bound=BaseModel)


class Component(BaseModel, Generic[C]):
    """One piece of infrastructure: a type, a name, a flavor and that flavor's configuration.

    A flavor is a class whose `flavor` is a `Literal` of its names and whose `configuration` is its
    model; the stack's field for a type is the union of the type's flavors discriminated by `flavor`
    (a type with one flavor class needs no union), so pydantic, not hand-written dispatch, picks the
    configuration model and the file keeps ZenML's `{name, flavor, configuration}` shape.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    type: ClassVar[ComponentType]
    name: str = Field(min_length=1)
    flavor: str
    configuration: C

    @model_validator(mode="before")
    @classmethod
    def _zenml_entry(cls, data: Any) -> Any:
        """ZenML's entry: `configuration` may be absent or null, `type` may repeat the component's type."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if "type" in data:
            given = data.pop("type")
            if given != cls.type.value:
                raise ValueError(f"key 'type' is {_show(given)} but the entry is under '{cls.type}'")
        if data.get("configuration") is None:
            data["configuration"] = {}
        return data

    @model_validator(mode="after")
    def _configuration_of_flavor(self) -> Component[C]:
        """A base class built directly (`ModelDeployerComponent`) must still pair flavor and model."""
        expected = FLAVORS[self.type][self.flavor]
        if not isinstance(self.configuration, expected):
            raise ValueError(
                f"flavor '{self.flavor}' takes a {expected.__name__} configuration, "
                f"not {type(self.configuration).__name__}"
            )
        return self

    def label(self) -> str:
        """How error messages and reports name this component."""
        return f"component '{self.type}' (name '{self.name}', flavor '{self.flavor}')"


class OrchestratorComponent(Component[PrefectOrchestratorConfig]):
    """Runs the flows (Prefect)."""

    type: ClassVar[ComponentType] = ComponentType.ORCHESTRATOR
    flavor: Literal["prefect"]


class ArtifactStoreComponent(Component[ArtifactStoreConfig]):
    """Holds data snapshots, profiles and reports (fsspec): every flavor takes the same configuration."""

    type: ClassVar[ComponentType] = ComponentType.ARTIFACT_STORE
    flavor: Literal["local", "s3", "gcs", "azure"]

    @model_validator(mode="after")
    def _path_matches_flavor(self) -> ArtifactStoreComponent:
        path = self.configuration.path
        if self.flavor == "local":
            if has_url_scheme(path) and not path.startswith("file://"):
                raise ValueError(
                    f"key 'path': {path!r} is a URL but flavor 'local' takes a local folder; "
                    "use the flavor that matches its scheme (s3, gcs, azure)"
                )
            return self
        schemes = ARTIFACT_SCHEMES[self.flavor]
        if not any(path.startswith(s) and len(path) > len(s) for s in schemes):
            raise ValueError(
                f"key 'path': {path!r} does not match flavor '{self.flavor}': "
                f"expected a URI starting with {' or '.join(schemes)} and a bucket"
            )
        return self


class ExperimentTrackerComponent(Component[MlflowTrackerConfig]):
    """Records runs, parameters, metrics and plots (MLflow)."""

    type: ClassVar[ComponentType] = ComponentType.EXPERIMENT_TRACKER
    flavor: Literal["mlflow"]


class ModelRegistryComponent(Component[MlflowRegistryConfig]):
    """Versions models and their aliases (MLflow)."""

    type: ClassVar[ComponentType] = ComponentType.MODEL_REGISTRY
    flavor: Literal["mlflow"]


class DataValidatorComponent(Component[WhylogsConfig]):
    """Profiles data and scores drift (whylogs)."""

    type: ClassVar[ComponentType] = ComponentType.DATA_VALIDATOR
    flavor: Literal["whylogs"]


class ModelDeployerComponent(Component[DeployerConfig]):
    """Serves the champion model; each flavor below is its own class with its own configuration."""

    type: ClassVar[ComponentType] = ComponentType.MODEL_DEPLOYER
    flavor: Literal["local", "docker", "kubernetes"]


class LocalModelDeployer(ModelDeployerComponent):
    """Serves the champion as a local process."""

    flavor: Literal["local"]
    configuration: LocalDeployerConfig


class DockerModelDeployer(ModelDeployerComponent):
    """Serves the champion in a local Docker container."""

    flavor: Literal["docker"]
    configuration: DockerDeployerConfig


class KubernetesModelDeployer(ModelDeployerComponent):
    """Serves the champion as a Kubernetes Deployment and Service."""

    flavor: Literal["kubernetes"]
    configuration: KubernetesDeployerConfig


ModelDeployer = Annotated[
    LocalModelDeployer | DockerModelDeployer | KubernetesModelDeployer, Field(discriminator="flavor")
]
"""A model_deployer entry: the flavor's class, chosen by its `flavor` key."""


class TunerComponent(Component[OptunaConfig]):
    """Hyperparameter search and where its study is stored (Optuna)."""

    type: ClassVar[ComponentType] = ComponentType.TUNER
    flavor: Literal["optuna"]


class ComputeComponent(Component[ComputeConfig]):
    """Device, parallelism and DataFrame engine inside steps."""

    type: ClassVar[ComponentType] = ComponentType.COMPUTE
    flavor: Literal["local", "dask"]

    @model_validator(mode="after")
    def _dask_flavor_uses_dask(self) -> ComputeComponent:
        if self.flavor == "dask" and self.configuration.engine != "dask":
            raise ValueError(
                "flavor 'dask' computes on a Dask cluster but engine is 'pandas'; "
                "set engine: dask, or use flavor 'local'"
            )
        return self


class PredictionStoreComponent(Component[SqlPredictionStoreConfig]):
    """The table of precomputed predictions batch inference writes and the service answers from."""

    type: ClassVar[ComponentType] = ComponentType.PREDICTION_STORE
    flavor: Literal["sql"]


class StreamComponent(Component[RedisStreamConfig]):
    """The Redis streams the streaming consumer reads records from and writes predictions to."""

    type: ClassVar[ComponentType] = ComponentType.STREAM
    flavor: Literal["redis"]


class MetricsComponent(Component[PrometheusConfig]):
    """The Prometheus that scrapes the services and holds the SLO rules."""

    type: ClassVar[ComponentType] = ComponentType.METRICS
    flavor: Literal["prometheus"]


class LineageComponent(Component[FileLineageConfig | HttpLineageConfig]):
    """Where training, inference and monitoring runs send their OpenLineage run events."""

    type: ClassVar[ComponentType] = ComponentType.LINEAGE
    flavor: Literal["file", "http"]


class FileLineage(LineageComponent):
    """Run events appended to a JSON-lines file."""

    flavor: Literal["file"]
    configuration: FileLineageConfig


class HttpLineage(LineageComponent):
    """Run events sent to an OpenLineage HTTP consumer."""

    flavor: Literal["http"]
    configuration: HttpLineageConfig


Lineage = Annotated[FileLineage | HttpLineage, Field(discriminator="flavor")]
"""A lineage entry: the flavor's class, chosen by its `flavor` key."""


# --------------------------------------------------------------------------- stack


@dataclass(frozen=True)
class DaskCluster:
    """Where a run's Dask work goes: a scheduler address, or the size of a LocalCluster to start."""

    named_by: Literal["orchestrator", "compute"]
    address: str | None
    n_workers: int
    threads_per_worker: int

    def describe(self) -> str:
        if self.address:
            return f"Dask scheduler {self.address}"
        return f"Dask LocalCluster ({self.n_workers} workers x {self.threads_per_worker} threads)"


class Stack(BaseModel):
    """A named set of components, at most one per type; orchestrator and artifact store required."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    name: str = Field(pattern=STACK_NAME_PATTERN)
    source: str = "<memory>"
    orchestrator: OrchestratorComponent
    artifact_store: ArtifactStoreComponent
    experiment_tracker: ExperimentTrackerComponent | None = None
    model_registry: ModelRegistryComponent | None = None
    data_validator: DataValidatorComponent | None = None
    model_deployer: ModelDeployer | None = None
    tuner: TunerComponent | None = None
    compute: ComputeComponent | None = None
    prediction_store: PredictionStoreComponent | None = None
    lineage: Lineage | None = None
    stream: StreamComponent | None = None
    metrics: MetricsComponent | None = None

    @field_validator(*(t.value for t in ComponentType), mode="before")
    @classmethod
    def _one_mapping(cls, entry: Any) -> Any:
        """A type holds one `{name, flavor, configuration}` mapping (ZenML's form) or a one-item list."""
        if isinstance(entry, list):
            if not entry:
                raise ValueError("empty list; give one mapping with name, flavor and configuration")
            if len(entry) > 1:
                names = ", ".join(repr(e.get("name")) if isinstance(e, dict) else _show(e) for e in entry)
                raise ValueError(f"{len(entry)} components given ({names}); a stack has at most one per type")
            entry = entry[0]
        if not isinstance(entry, dict | Component):
            raise ValueError(f"expected a mapping with name, flavor and configuration, got {_show(entry)}")
        return entry

    @model_validator(mode="after")
    def _one_dask_cluster(self) -> Stack:
        orch = self.orchestrator.configuration
        if self.compute is None or orch.task_runner != "dask":
            return self
        named = [k for k in DASK_CLUSTER_KEYS if getattr(self.compute.configuration, k) is not None]
        if named:
            raise ValueError(
                f"{self.compute.label()}: {', '.join(named)} set, but the orchestrator's Dask task runner "
                "already names the run's cluster; set them on the orchestrator only"
            )
        return self

    @model_validator(mode="after")
    def _registry_has_a_uri(self) -> Stack:
        reg = self.model_registry
        if reg is not None and reg.configuration.registry_uri is None and self.experiment_tracker is None:
            raise ValueError(
                f"{reg.label()}: registry_uri is null and the stack has no experiment_tracker "
                "to take the tracking_uri from; set registry_uri or add an experiment_tracker"
            )
        return self

    def components(self) -> list[Component[Any]]:
        """The components present, in ComponentType order."""
        found = (self.component(t) for t in ComponentType)
        return [c for c in found if c is not None]

    def component(self, ctype: ComponentType | str) -> Component[Any] | None:
        """The component of a type, or None."""
        value: Component[Any] | None = getattr(self, ComponentType(ctype).value)
        return value

    def secret_refs(self) -> list[tuple[str, str, str]]:
        """Every secret reference, as (component name, dotted configuration key, reference)."""
        return [(c.name, key, ref) for c in self.components() for key, ref in _component_refs(c)]

    def secrets_api_url(self) -> str | None:
        """The Prefect API whose Secret blocks this stack's `{{name.key}}` references may live in.

        The orchestrator's api_url, the server the stack's flows run on (`make staging-up` saves the
        staging blocks there), so a shell without PREFECT_API_URL finds them; None when it is null
        or itself a reference (a reference cannot say where to look references up).
        """
        url = self.orchestrator.configuration.api_url
        return None if url is None or secrets.is_secret_ref(url) else url

    def secret_resolver(self, timeout: float = secrets.LOOKUP_TIMEOUT_S) -> secrets.SecretResolver:
        """A resolver for this stack's references (env, then its Prefect API, then PREFECT_API_URL's).

        Use one for an operation that resolves several references: it asks a dead server once.
        """
        return secrets.SecretResolver(self.secrets_api_url(), timeout)

    def resolve(self, value: str) -> str:
        """A value with its secret reference resolved the way this stack's code needs it (never log it)."""
        return self.secret_resolver().resolve(value)

    def resolve_tree(self, obj: Any) -> Any:
        """Every reference inside nested dicts and lists resolved (see `resolve`)."""
        return self.secret_resolver().resolve_tree(obj)

    def require_secrets(self) -> None:
        """Raise StackError naming file, component and key for every reference that cannot be resolved.

        Flows call this first, so a missing credential stops a run before any work is done.
        """
        problems = []
        resolver = self.secret_resolver()
        for c in self.components():
            for key, ref in _component_refs(c):
                try:
                    resolver.resolve(ref)
                except secrets.SecretNotFoundError as exc:
                    problems.append(f"{self.source}: {c.label()}: key '{key}': {exc}")
        if problems:
            raise StackError("\n".join(problems))

    # ---- convenience accessors: resolved values for the code that connects

    def artifact_root(self) -> str:
        """The artifact store root as a URI or absolute path (relative paths under flywheel home)."""
        return resolve_path(self.artifact_store.configuration.path)

    def storage_options(self) -> dict[str, Any]:
        """The artifact store's fsspec options with secret references resolved (never log these)."""
        resolved: dict[str, Any] = self.resolve_tree(self.artifact_store.configuration.storage_options)
        return resolved

    def mlflow_tracking_uri(self) -> str | None:
        """The tracker's URI, secret-resolved, relative SQLite under flywheel home; None if no tracker."""
        if self.experiment_tracker is None:
            return None
        return resolve_db_uri(self.resolve(self.experiment_tracker.configuration.tracking_uri))

    def mlflow_registry_uri(self) -> str | None:
        """The registry's URI (the tracking URI when registry_uri is null); None if no registry."""
        if self.model_registry is None:
            return None
        uri = self.model_registry.configuration.registry_uri
        if uri is None:
            return self.mlflow_tracking_uri()
        return resolve_db_uri(self.resolve(uri))

    def mlflow_env(self) -> dict[str, str]:
        """MLFLOW_TRACKING_USERNAME/PASSWORD/TOKEN for the tracker's credentials, resolved (may be empty)."""
        if self.experiment_tracker is None:
            return {}
        cfg = self.experiment_tracker.configuration
        pairs = {
            "MLFLOW_TRACKING_USERNAME": cfg.tracking_username,
            "MLFLOW_TRACKING_PASSWORD": cfg.tracking_password,
            "MLFLOW_TRACKING_TOKEN": cfg.tracking_token,
        }
        resolver = self.secret_resolver()
        return {k: resolver.resolve(v) for k, v in pairs.items() if v is not None}

    def dask_cluster(self) -> DaskCluster | None:
        """The run's Dask cluster, or None when neither the task runner nor the compute engine is dask.

        The orchestrator's cluster when its task runner is dask (tuning trials and Dask DataFrames then
        share it), else the compute component's; an address means a running scheduler, None a
        LocalCluster on the flow's machine.
        """
        orch = self.orchestrator.configuration
        compute = self.compute.configuration if self.compute else None
        if orch.task_runner == "dask":
            return DaskCluster(
                "orchestrator", orch.dask_address, orch.dask_n_workers, orch.dask_threads_per_worker
            )
        if compute is not None and compute.engine == "dask":
            return DaskCluster(
                "compute",
                compute.dask_address,
                compute.dask_n_workers or DEFAULT_DASK_WORKERS,
                compute.dask_threads_per_worker or DEFAULT_DASK_THREADS,
            )
        return None

    def data_validator_config(self) -> WhylogsConfig:
        """The data validator's configuration; without the component, its model's defaults."""
        return self.data_validator.configuration if self.data_validator else WhylogsConfig()

    def tuner_config(self) -> OptunaConfig:
        """The tuner's configuration; without the component, its model's defaults (in-memory study, TPE)."""
        return self.tuner.configuration if self.tuner else OptunaConfig()

    def compute_config(self) -> ComputeConfig:
        """The compute configuration; without the component, its model's defaults (pandas on the CPU)."""
        return self.compute.configuration if self.compute else ComputeConfig()

    def optuna_storage(self) -> str | None:
        """The tuner's storage URL, secret-resolved and SQLite-anchored; None means in memory."""
        if self.tuner is None or self.tuner.configuration.storage is None:
            return None
        return resolve_db_uri(self.resolve(self.tuner.configuration.storage))

    def prediction_store_url(self) -> str | None:
        """The prediction store's URL, secret-resolved, SQLite anchored (never log it); None without one."""
        if self.prediction_store is None:
            return None
        return resolve_db_uri(self.resolve(self.prediction_store.configuration.url))

    def stream_url(self) -> str | None:
        """The stream's Redis URL, secret-resolved (never log it: it may carry a password)."""
        if self.stream is None:
            return None
        return self.resolve(self.stream.configuration.url)

    def to_dict(self) -> dict[str, Any]:
        """The native file form (ZenML's export shape); references stay references.

        What every output of a stack prints or writes (`stack show`, `stack export`, the stack file
        a container or ConfigMap gets), so it is masked (`secret_keys.mask_tree`): lossless for a
        stack that validated, which holds references only, and safe for one that did not.
        """
        return {
            "stack_name": self.name,
            "components": {
                c.type.value: {
                    "name": c.name,
                    "flavor": c.flavor,
                    "configuration": secret_keys.mask_tree(c.configuration.model_dump(mode="json")),
                }
                for c in self.components()
            },
        }


def _component_refs(component: Component[Any]) -> list[tuple[str, str]]:
    return secrets.find_refs(component.configuration.model_dump(mode="python"))


def _flavor_classes(annotation: Any) -> list[type[Component[Any]]]:
    """The component classes in a Stack field's annotation (through Optional, Annotated and unions)."""
    if isinstance(annotation, type) and issubclass(annotation, Component):
        return [annotation]
    return [c for arg in get_args(annotation) for c in _flavor_classes(arg)]


_FLAVOR_CLASSES: dict[ComponentType, dict[str, type[Component[Any]]]] = {
    ctype: {
        flavor: cls
        for cls in _flavor_classes(Stack.model_fields[ctype.value].annotation)
        for flavor in get_args(cls.model_fields["flavor"].annotation)
    }
    for ctype in ComponentType
}
"""Each flavor's component class, read off the Stack's fields: the unions are the one list of flavors."""


def _configuration_model(cls: type[Component[Any]]) -> type[_Config]:
    model = cls.model_fields["configuration"].annotation
    assert isinstance(model, type) and issubclass(model, _Config), cls  # a flavor class names one model
    return model


FLAVORS: dict[ComponentType, dict[str, type[_Config]]] = {
    ctype: {flavor: _configuration_model(cls) for flavor, cls in classes.items()}
    for ctype, classes in _FLAVOR_CLASSES.items()
}
"""Flavors per component type and the configuration model each one takes."""

_TAGGED = frozenset(t for t, classes in _FLAVOR_CLASSES.items() if len(set(classes.values())) > 1)
"""The types whose field is a discriminated union: pydantic puts the flavor (the tag) in an error's loc."""


# --------------------------------------------------------------------------- parsing


def _show(value: object, secret: bool = False) -> str:
    """A short rendering of a bad input for an error message; under a secret key only its type."""
    if secret and value is not None:
        return f"a {type(value).__name__}, not shown"
    if isinstance(value, str | int | float | bool) or value is None:
        text = repr(secret_keys.mask_url(value) if isinstance(value, str) else value)
        return text if len(text) <= 60 else text[:57] + "..."
    return f"a {type(value).__name__}"


def _suggest(word: str, choices: list[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


def _model_type(annotation: Any) -> type[BaseModel] | None:
    """The one pydantic model an annotation holds (`RetrainingPolicyConfig`, `ServerLimits | None`)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    found = [m for arg in get_args(annotation) if (m := _model_type(arg)) is not None]
    return found[0] if len(found) == 1 else None


def _suggest_key(loc: tuple[Any, ...], model: type[BaseModel] | None) -> str:
    """`; did you mean 'retraining.n_windows'?`: a misspelt key matched in the model that holds it."""
    owner = model
    for part in loc[:-1]:
        if owner is None or not isinstance(part, str) or part not in owner.model_fields:
            return ""
        owner = _model_type(owner.model_fields[part].annotation)
    if owner is None or not loc:
        return ""
    close = difflib.get_close_matches(str(loc[-1]), list(owner.model_fields), n=1)
    prefix = "".join(f"{part}." for part in loc[:-1])
    return f"; did you mean '{prefix}{close[0]}'?" if close else ""


def _error_lines(err: ErrorDetails, loc: tuple[Any, ...], model: type[BaseModel] | None) -> list[str]:
    """The lines for one pydantic error whose `loc` is relative to `model` (no credential shown)."""
    key = ".".join(str(p) for p in loc)
    kind = err["type"]
    msg = str(err["msg"])
    if kind == "extra_forbidden":
        return [f"unknown key '{key}'{_suggest_key(loc, model)}"]
    if kind == "missing":
        return [f"missing required key '{key}'"]
    if kind in ("value_error", "assertion_error"):
        msg = msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
        return [f"key '{key}': {m}" if key else m for m in msg.splitlines()]
    shown = _show(err.get("input"), secret_keys.is_secret_path(loc))
    return [f"key '{key}': {msg} (got {shown})"]


def describe_validation_error(exc: ValidationError, model: type[BaseModel] | None = None) -> list[str]:
    """One readable line per pydantic error: `unknown key 'pth'; did you mean 'path'?`.

    No line shows a credential: an input under a secret key is shown by its type only, and any
    URL in a line has its password masked (a validator may quote the value it rejects).
    """
    lines = [line for err in exc.errors(include_url=False) for line in _error_lines(err, err["loc"], model)]
    return [secret_keys.redact(line) for line in lines]


def _entry(raw: object) -> object:
    """A component entry as the Stack validates it (a one-item list is its item)."""
    return raw[0] if isinstance(raw, list) and len(raw) == 1 else raw


def _where(ctype: ComponentType, raw: object) -> str:
    """How an error names a component: by the name and flavor its entry gives as text."""
    entry = _entry(raw)
    given = [
        f"{key} '{entry[key]}'"
        for key in ("name", "flavor")
        if isinstance(entry, dict) and isinstance(entry.get(key), str)
    ]
    return f"component '{ctype}' ({', '.join(given)})" if given else f"component '{ctype}'"


def _unknown_configuration_key(ctype: ComponentType, flavor: str, key: str) -> str | None:
    """`unknown key 'replicas'; flavor 'local' does not take it, flavor 'kubernetes' does`, or None."""
    own = FLAVORS[ctype][flavor]
    takers = [f"'{f}'" for f, cls in FLAVORS[ctype].items() if cls is not own and key in cls.model_fields]
    if not takers:
        return None
    noun = "flavor" if len(takers) == 1 else "flavors"
    verb = "does" if len(takers) == 1 else "do"
    return f"unknown key '{key}'; flavor '{flavor}' does not take it, {noun} {', '.join(takers)} {verb}"


def _component_error(
    ctype: ComponentType, raw: object, err: ErrorDetails, rest: tuple[Any, ...]
) -> list[str]:
    """The lines for one error inside a component entry; `rest` is its loc below the entry."""
    entry = _entry(raw)
    flavor = entry.get("flavor") if isinstance(entry, dict) else None
    kind = err["type"]
    known = f"known flavors for {ctype}: {_known(ctype)}"
    if kind == "union_tag_not_found" or (rest == ("flavor",) and kind == "missing"):
        return [f"missing required key 'flavor'; {known}"]
    if kind == "union_tag_invalid" or rest == ("flavor",):
        return [f"unknown flavor {_show(flavor)}; {known}"]
    if rest[:1] == ("configuration",) and isinstance(flavor, str) and flavor in FLAVORS[ctype]:
        inner = rest[1:]
        if not inner and kind in ("model_type", "model_attributes_type", "dict_type"):
            return [f"key 'configuration' must be a mapping (got {_show(err.get('input'))})"]
        if kind == "extra_forbidden" and len(inner) == 1:
            other = _unknown_configuration_key(ctype, flavor, str(inner[0]))
            if other is not None:
                return [other]
        return _error_lines(err, inner, FLAVORS[ctype][flavor])
    classes = _FLAVOR_CLASSES[ctype]
    model = classes.get(flavor) if isinstance(flavor, str) else None
    return _error_lines(err, rest, model or next(iter(classes.values())))


def _stack_errors(exc: ValidationError, document: dict[str, Any], components_given: bool) -> list[str]:
    """Lines for the errors of validating a stack document: each names its component, flavor and key."""
    types = {t.value: t for t in ComponentType}
    lines: list[str] = []
    flavor_wrong: set[ComponentType] = set()
    errors = exc.errors(include_url=False)
    for err in errors:
        loc = tuple(err["loc"])
        if (
            loc
            and loc[0] in types
            and (err["type"] in ("union_tag_invalid", "union_tag_not_found") or loc[1:] == ("flavor",))
        ):
            flavor_wrong.add(types[loc[0]])
    for err in errors:
        loc = tuple(err["loc"])
        head = loc[0] if loc else None
        if head == "name":
            if err["type"] == "missing":
                lines.append("missing required top-level key 'stack_name'")
            else:
                lines.append(
                    "stack_name must be letters, digits, '_', '.' or '-' (it names a file), "
                    f"got {_show(err.get('input'))}"
                )
        elif isinstance(head, str) and head in types:
            ctype = types[head]
            if len(loc) == 1 and err["type"] == "missing":
                if components_given:
                    lines.append(
                        f"missing required component '{ctype}' (every stack needs "
                        f"{' and '.join(t.value for t in REQUIRED_TYPES)})"
                    )
                continue
            rest = loc[2:] if ctype in _TAGGED and len(loc) > 1 else loc[1:]
            if ctype in flavor_wrong and rest[:1] == ("configuration",):
                continue  # checked against a flavor the entry does not have: noise
            where = _where(ctype, document[head])
            lines.extend(f"{where}: {line}" for line in _component_error(ctype, document[head], err, rest))
        else:  # the stack's own checks, whose messages name their components
            lines.extend(_error_lines(err, loc, None))
    return lines


def parse_stack(data: object, source: str) -> Stack:
    """Validate a loaded stack document (ZenML export shape) into a Stack; StackError lists every problem.

    `components` maps a type to one `{name, flavor, configuration}` mapping (what ZenML
    writes); a one-item list is accepted too. `zenml_version` is accepted and ignored. The
    document's shape is checked here; each component, its flavor and its configuration by the
    Stack model's discriminated unions, whose errors are rendered one line each.
    """
    if data is None:
        raise StackError(f"{source}: the file is empty; a stack needs stack_name and components")
    if not isinstance(data, dict):
        raise StackError(f"{source}: expected a mapping with stack_name and components, got {_show(data)}")

    errors = [
        f"unknown top-level key '{k}'{_suggest(str(k), TOP_LEVEL_KEYS)}; allowed: {', '.join(TOP_LEVEL_KEYS)}"
        for k in data
        if k not in TOP_LEVEL_KEYS
    ]
    document: dict[str, Any] = {"source": source}
    if data.get("stack_name") is not None:
        document["name"] = data["stack_name"]
    raw_components = data.get("components")
    if raw_components is None:
        errors.append("missing required top-level key 'components'")
    elif not isinstance(raw_components, dict):
        errors.append(f"'components' must map component types to components, got {_show(raw_components)}")
    else:
        known_types = [t.value for t in ComponentType]
        for key, entry in raw_components.items():
            if key in known_types:
                document[key] = entry
            else:
                errors.append(
                    f"unknown component type {_show(key)}{_suggest(str(key), known_types)}; "
                    f"known types: {', '.join(known_types)}"
                )
    try:
        stack = Stack.model_validate(document)
    except ValidationError as exc:
        errors.extend(_stack_errors(exc, document, isinstance(raw_components, dict)))
    else:
        if not errors:
            return stack
    raise StackError("\n".join(f"{source}: {secret_keys.redact(e)}" for e in errors))
