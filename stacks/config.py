"""The stack model: which infrastructure a run uses, as frozen, strictly validated pydantic models.

A stack file is read once per run and then passed around, so it is frozen (no step can change
the infrastructure under another) and strict (`extra="forbid"`, no type coercion): a misspelt
key or a `port: "80x"` is an error at load time that names the file, the component and the
key, not a silently ignored setting discovered after an hour of training.

The file shape is ZenML's `zenml stack export` (`stack_name`, `components: {type: {name,
flavor, configuration}}`), so stacks move to and from ZenML (see `zenml_io.py`). Secret
references (`{{name.key}}`, `${VAR}`) stay references in these models; `Stack.require_secrets()`
checks them and the convenience accessors resolve them where a value is needed.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

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
    "ExperimentTrackerComponent",
    "KubernetesDeployerConfig",
    "LocalDeployerConfig",
    "MlflowRegistryConfig",
    "MlflowTrackerConfig",
    "ModelDeployerComponent",
    "ModelRegistryComponent",
    "OptunaConfig",
    "OrchestratorComponent",
    "PrefectOrchestratorConfig",
    "ServerLimits",
    "Stack",
    "StackError",
    "TunerComponent",
    "WhylogsConfig",
    "parse_stack",
]

STACK_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
TOP_LEVEL_KEYS = ("stack_name", "components", "zenml_version")
COMPONENT_KEYS = ("name", "flavor", "configuration", "type")


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
    dask_n_workers: int = Field(default=2, ge=1)
    dask_threads_per_worker: int = Field(default=1, ge=1)

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


class RetrainingPolicyConfig(_Config):
    """When monitoring asks for a retrain: N drifting windows of the last M, an AUC floor, a cooldown."""

    features: list[str] | None = None  # watched columns; null = every model feature
    include_prediction: bool = True  # the prediction distribution counts as a column
    min_drifted_features: int = Field(default=2, ge=1)
    n_windows: int = Field(default=3, ge=1)
    of_last: int = Field(default=4, ge=1)
    min_window_rows: int = Field(default=500, ge=1)  # fewer rows: sampling noise alone passes 0.15
    auc_floor: float | None = Field(default=0.6, gt=0, lt=1)
    min_labels: int = Field(default=200, ge=1)
    cooldown_hours: float = Field(default=24, ge=0)

    @model_validator(mode="after")
    def _n_within_m(self) -> RetrainingPolicyConfig:
        if self.n_windows > self.of_last:
            raise ValueError(f"n_windows ({self.n_windows}) cannot exceed of_last ({self.of_last})")
        return self


class WhylogsConfig(_Config):
    """Validation and drift thresholds (Hellinger by default: KS p-values flag everything)."""

    drift_algorithm: Literal["hellinger", "ks", "chi2"] = "hellinger"
    drift_threshold: float = Field(default=0.15, gt=0, le=1)
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


FLAVORS: dict[ComponentType, dict[str, type[_Config]]] = {
    ComponentType.ORCHESTRATOR: {"prefect": PrefectOrchestratorConfig},
    ComponentType.ARTIFACT_STORE: {
        "local": ArtifactStoreConfig,
        "s3": ArtifactStoreConfig,
        "gcs": ArtifactStoreConfig,
        "azure": ArtifactStoreConfig,
    },
    ComponentType.EXPERIMENT_TRACKER: {"mlflow": MlflowTrackerConfig},
    ComponentType.MODEL_REGISTRY: {"mlflow": MlflowRegistryConfig},
    ComponentType.DATA_VALIDATOR: {"whylogs": WhylogsConfig},
    ComponentType.MODEL_DEPLOYER: {
        "local": LocalDeployerConfig,
        "docker": DockerDeployerConfig,
        "kubernetes": KubernetesDeployerConfig,
    },
    ComponentType.TUNER: {"optuna": OptunaConfig},
    ComponentType.COMPUTE: {"local": ComputeConfig, "dask": ComputeConfig},
}
"""Flavors per component type and the configuration model each one takes."""

SECRET_NAMESPACES: dict[ComponentType, str] = {
    ComponentType.ORCHESTRATOR: "prefect",
    ComponentType.ARTIFACT_STORE: "storage",
    ComponentType.EXPERIMENT_TRACKER: "mlflow",
    ComponentType.MODEL_REGISTRY: "mlflow",
    ComponentType.DATA_VALIDATOR: "whylogs",
    ComponentType.MODEL_DEPLOYER: "serving",
    ComponentType.TUNER: "optuna",
    ComponentType.COMPUTE: "dask",
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
    """One piece of infrastructure: a type, a name, a flavor and that flavor's configuration."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    type: ClassVar[ComponentType]
    name: str = Field(min_length=1)
    flavor: str
    configuration: C

    @model_validator(mode="before")
    @classmethod
    def _configuration_for_flavor(cls, data: Any) -> Any:
        """Build the flavor's configuration model from a plain dict (programmatic construction)."""
        if isinstance(data, dict) and isinstance(data.get("flavor"), str):
            config_cls = FLAVORS[cls.type].get(data["flavor"])
            raw = data.get("configuration")
            if config_cls is not None and (raw is None or isinstance(raw, dict)):
                data = {**data, "configuration": config_cls.model_validate(raw or {})}
        return data

    @model_validator(mode="after")
    def _flavor_matches_configuration(self) -> Component[C]:
        config_cls = FLAVORS[self.type].get(self.flavor)
        if config_cls is None:
            raise ValueError(
                f"unknown flavor '{self.flavor}'; known flavors for {self.type}: {_known(self.type)}"
            )
        if not isinstance(self.configuration, config_cls):
            raise ValueError(
                f"flavor '{self.flavor}' takes a {config_cls.__name__} configuration, "
                f"not {type(self.configuration).__name__}"
            )
        return self

    def label(self) -> str:
        """How error messages and reports name this component."""
        return f"component '{self.type}' (name '{self.name}', flavor '{self.flavor}')"


class OrchestratorComponent(Component[PrefectOrchestratorConfig]):
    """Runs the flows (Prefect)."""

    type: ClassVar[ComponentType] = ComponentType.ORCHESTRATOR


class ArtifactStoreComponent(Component[ArtifactStoreConfig]):
    """Holds data snapshots, profiles and reports (fsspec)."""

    type: ClassVar[ComponentType] = ComponentType.ARTIFACT_STORE

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
        schemes = ARTIFACT_SCHEMES.get(self.flavor, ())
        if not any(path.startswith(s) and len(path) > len(s) for s in schemes):
            raise ValueError(
                f"key 'path': {path!r} does not match flavor '{self.flavor}': "
                f"expected a URI starting with {' or '.join(schemes)} and a bucket"
            )
        return self


class ExperimentTrackerComponent(Component[MlflowTrackerConfig]):
    """Records runs, parameters, metrics and plots (MLflow)."""

    type: ClassVar[ComponentType] = ComponentType.EXPERIMENT_TRACKER


class ModelRegistryComponent(Component[MlflowRegistryConfig]):
    """Versions models and their aliases (MLflow)."""

    type: ClassVar[ComponentType] = ComponentType.MODEL_REGISTRY


class DataValidatorComponent(Component[WhylogsConfig]):
    """Profiles data and scores drift (whylogs)."""

    type: ClassVar[ComponentType] = ComponentType.DATA_VALIDATOR


class ModelDeployerComponent(Component[DeployerConfig]):
    """Serves the champion model: a local process, a Docker container or Kubernetes."""

    type: ClassVar[ComponentType] = ComponentType.MODEL_DEPLOYER


class TunerComponent(Component[OptunaConfig]):
    """Hyperparameter search and where its study is stored (Optuna)."""

    type: ClassVar[ComponentType] = ComponentType.TUNER


class ComputeComponent(Component[ComputeConfig]):
    """Device, parallelism and DataFrame engine inside steps."""

    type: ClassVar[ComponentType] = ComponentType.COMPUTE

    @model_validator(mode="after")
    def _dask_flavor_uses_dask(self) -> ComputeComponent:
        if self.flavor == "dask" and self.configuration.engine != "dask":
            raise ValueError(
                "flavor 'dask' computes on a Dask cluster but engine is 'pandas'; "
                "set engine: dask, or use flavor 'local'"
            )
        return self


COMPONENT_CLASSES: dict[ComponentType, type[Component[Any]]] = {
    ComponentType.ORCHESTRATOR: OrchestratorComponent,
    ComponentType.ARTIFACT_STORE: ArtifactStoreComponent,
    ComponentType.EXPERIMENT_TRACKER: ExperimentTrackerComponent,
    ComponentType.MODEL_REGISTRY: ModelRegistryComponent,
    ComponentType.DATA_VALIDATOR: DataValidatorComponent,
    ComponentType.MODEL_DEPLOYER: ModelDeployerComponent,
    ComponentType.TUNER: TunerComponent,
    ComponentType.COMPUTE: ComputeComponent,
}


# --------------------------------------------------------------------------- stack

DEFAULT_DASK_WORKERS = 2


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
    model_deployer: ModelDeployerComponent | None = None
    tuner: TunerComponent | None = None
    compute: ComputeComponent | None = None

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
                compute.dask_threads_per_worker or 1,
            )
        return None

    def optuna_storage(self) -> str | None:
        """The tuner's storage URL, secret-resolved and SQLite-anchored; None means in memory."""
        if self.tuner is None or self.tuner.configuration.storage is None:
            return None
        return resolve_db_uri(self.resolve(self.tuner.configuration.storage))

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


def describe_validation_error(exc: ValidationError, model: type[BaseModel] | None = None) -> list[str]:
    """One readable line per pydantic error: `unknown key 'pth'; did you mean 'path'?`.

    No line shows a credential: an input under a secret key is shown by its type only, and any
    URL in a line has its password masked (a validator may quote the value it rejects).
    """
    fields = tuple(model.model_fields) if model is not None else ()
    lines: list[str] = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"])
        kind = err["type"]
        msg = str(err["msg"])
        if kind == "extra_forbidden":
            lines.append(f"unknown key '{loc}'{_suggest(loc, fields)}")
        elif kind == "missing":
            lines.append(f"missing required key '{loc}'")
        elif kind in ("value_error", "assertion_error"):
            msg = msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
            lines.extend(f"key '{loc}': {m}" if loc else m for m in msg.splitlines())
        else:
            shown = _show(err.get("input"), secret_keys.is_secret_path(err["loc"]))
            lines.append(f"key '{loc}': {msg} (got {shown})")
    return [secret_keys.redact(line) for line in lines]


def _parse_component(ctype: ComponentType, entry: object) -> tuple[Component[Any] | None, list[str]]:
    """Validate one `components.<type>` entry; return the component or error lines (no file prefix)."""
    where = f"component '{ctype}'"
    if isinstance(entry, list):
        if not entry:
            return None, [f"{where}: empty list; give one mapping with name, flavor and configuration"]
        if len(entry) > 1:
            names = ", ".join(repr(e.get("name")) if isinstance(e, dict) else _show(e) for e in entry)
            return None, [
                f"{where}: {len(entry)} components given ({names}); a stack has at most one per type"
            ]
        entry = entry[0]
    if not isinstance(entry, dict):
        return None, [f"{where}: expected a mapping with name, flavor and configuration, got {_show(entry)}"]

    name, flavor = entry.get("name"), entry.get("flavor")
    if isinstance(name, str) and isinstance(flavor, str):
        where = f"component '{ctype}' (name '{name}', flavor '{flavor}')"
    errors = [
        f"{where}: unknown key '{k}'{_suggest(str(k), COMPONENT_KEYS)}"
        for k in entry
        if k not in COMPONENT_KEYS
    ]
    if "type" in entry and entry["type"] != ctype.value:
        errors.append(f"{where}: key 'type' is {_show(entry['type'])} but the entry is under '{ctype}'")
    if name is None:
        errors.append(f"{where}: missing required key 'name'")
    elif not isinstance(name, str) or not name:
        errors.append(f"{where}: key 'name' must be a non-empty string (got {_show(name)})")
    if flavor is None:
        errors.append(f"{where}: missing required key 'flavor'; known flavors for {ctype}: {_known(ctype)}")
    elif not isinstance(flavor, str) or flavor not in FLAVORS[ctype]:
        errors.append(f"{where}: unknown flavor {_show(flavor)}; known flavors for {ctype}: {_known(ctype)}")
    if errors:
        return None, errors

    assert isinstance(name, str) and isinstance(flavor, str)
    raw = entry.get("configuration")
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        return None, [f"{where}: key 'configuration' must be a mapping (got {_show(raw)})"]
    config_cls = FLAVORS[ctype][flavor]
    try:
        config = config_cls.model_validate(raw)
    except ValidationError as exc:
        return None, [f"{where}: {line}" for line in describe_validation_error(exc, config_cls)]
    try:
        component = COMPONENT_CLASSES[ctype](name=name, flavor=flavor, configuration=config)
    except ValidationError as exc:
        return None, [f"{where}: {line}" for line in describe_validation_error(exc)]
    return component, []


def parse_stack(data: object, source: str) -> Stack:
    """Validate a loaded stack document (ZenML export shape) into a Stack; StackError lists every problem.

    `components` maps a type to one `{name, flavor, configuration}` mapping (what ZenML
    writes); a one-item list is accepted too. `zenml_version` is accepted and ignored.
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
    name = data.get("stack_name")
    if name is None:
        errors.append("missing required top-level key 'stack_name'")
    elif not isinstance(name, str) or not re.match(STACK_NAME_PATTERN, name):
        errors.append(
            f"stack_name must be letters, digits, '_', '.' or '-' (it names a file), got {_show(name)}"
        )

    built: dict[ComponentType, Component[Any]] = {}
    seen: set[ComponentType] = set()
    raw_components = data.get("components")
    if raw_components is None:
        errors.append("missing required top-level key 'components'")
    elif not isinstance(raw_components, dict):
        errors.append(f"'components' must map component types to components, got {_show(raw_components)}")
    else:
        known_types = [t.value for t in ComponentType]
        for key, entry in raw_components.items():
            if key not in known_types:
                errors.append(
                    f"unknown component type {_show(key)}{_suggest(str(key), known_types)}; "
                    f"known types: {', '.join(known_types)}"
                )
                continue
            ctype = ComponentType(key)
            seen.add(ctype)
            component, problems = _parse_component(ctype, entry)
            errors.extend(problems)
            if component is not None:
                built[ctype] = component
        for required in REQUIRED_TYPES:
            if required not in seen:
                errors.append(
                    f"missing required component '{required}' (every stack needs "
                    f"{' and '.join(t.value for t in REQUIRED_TYPES)})"
                )
    if errors:
        raise StackError("\n".join(f"{source}: {e}" for e in errors))

    try:
        return Stack.model_validate(
            {"name": name, "source": source, **{t.value: c for t, c in built.items()}}
        )
    except ValidationError as exc:
        raise StackError("\n".join(f"{source}: {line}" for line in describe_validation_error(exc))) from None
