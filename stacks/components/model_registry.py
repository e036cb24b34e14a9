"""The MLflow model registry as the service and the flows see it: the model contract and loading a version.

The feature schema (names, kinds, vocabularies, nullability, training ranges, classes) is the contract
between training, serving and monitoring; it is defined in :mod:`flywheel.contracts.schema`.

A registry that cannot be read (a missing or corrupt database, an unreachable server) raises
:class:`RegistryUnavailable` with one sentence naming it, and a registry that answers but has no such model
or alias raises :class:`AliasNotSet`: the service reports either as a state and keeps checking, so neither
may surface as a driver's traceback. A SQLite database is looked at read-only before MLflow opens it,
because MLflow turns a missing or empty file into a fresh database, which a reader must never do.
"""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flywheel.contracts.schema import FeatureSchema

CHAMPION = "champion"
CHALLENGER = "challenger"
TAG = "flywheel"


@dataclass
class LoadedModel:
    """A registered version, ready to predict: the booster plus everything a response or a report names."""

    name: str
    version: str
    run_id: str
    booster: Any
    schema: FeatureSchema
    threshold: float
    task: str
    dataset_digest: str
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    created_at: float = 0.0  # registration time (epoch seconds)
    loaded_at: float = field(default_factory=time.time)

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "run_id": self.run_id,
            "task": self.task,
            "threshold": self.threshold,
            "dataset_digest": self.dataset_digest,
            "dataset_source": self.tags.get(f"{TAG}.dataset.source"),
            "snapshot": self.tags.get(f"{TAG}.dataset.snapshot"),
            "promotion": self.tags.get(f"{TAG}.promotion.reason"),
            "metrics": self.metrics,
            "features": [c.to_dict() for c in self.schema.columns],
            "classes": self.schema.classes,
            "loaded_at": self.loaded_at,
        }


class RegistryUnavailable(RuntimeError):
    """The registry cannot be read: a missing, empty or corrupt database, or a server that does not answer."""


class AliasNotSet(LookupError):
    """The registry answered: it has no model of that name, or the model has no such alias."""


def registry_location(uri: str) -> str:
    """How a message names a registry: a SQLite database by its path, anything else by its URL with any
    password left out (a message ends up in logs and on an unauthenticated endpoint)."""
    path = _sqlite_path(uri)
    if path is not None:
        return f"the MLflow database {path}"
    parts = urllib.parse.urlsplit(uri)
    if parts.password is not None:
        host = parts.hostname or ""
        netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
        uri = urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    return f"the MLflow registry at {uri}"


def check_registry(timeout_s: float = 5.0) -> None:
    """Raise :class:`RegistryUnavailable` when the registry (or tracking store) MLflow points at cannot be
    read, without letting MLflow open it: a SQLite file must exist and hold MLflow's tables, an HTTP server
    must answer at all (MLflow's own client retries a dead server for minutes)."""
    import mlflow

    tracking = mlflow.get_tracking_uri()
    registry = mlflow.get_registry_uri() or tracking
    _check_store(registry, "registered_models", timeout_s)
    if tracking != registry:
        _check_store(tracking, "runs", timeout_s)


def _sqlite_path(uri: str) -> str | None:
    """The file of a ``sqlite:///`` URI; None for other URIs and in-memory SQLite."""
    if not uri.startswith("sqlite:"):
        return None
    from sqlalchemy.engine import make_url

    database = make_url(uri).database
    return None if not database or database == ":memory:" else str(Path(database).expanduser().absolute())


def _check_store(uri: str, table: str, timeout_s: float) -> None:
    path = _sqlite_path(uri)
    if path is not None:
        _check_sqlite(path, table)
    elif uri.startswith(("http://", "https://")):
        _check_server(uri, timeout_s)


def _check_sqlite(path: str, table: str) -> None:
    where = f"the MLflow database {path}"
    file = Path(path)
    if not file.exists():
        raise RegistryUnavailable(f"{where} does not exist")
    if not file.is_file():
        raise RegistryUnavailable(f"{where} is not a file")
    if file.stat().st_size == 0:
        raise RegistryUnavailable(f"{where} is empty")
    try:
        with contextlib.closing(sqlite3.connect(f"{file.as_uri()}?mode=ro", uri=True)) as db:
            found = db.execute(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (table,)
            ).fetchone()
    except sqlite3.Error as exc:
        raise RegistryUnavailable(f"{where} cannot be read: {exc}") from exc
    if found is None:
        raise RegistryUnavailable(f"{where} is not an MLflow database (it has no {table} table)")


def _check_server(uri: str, timeout_s: float) -> None:
    """Any answer counts: a 401 or 404 from a proxy still means the server is there, and so does a TLS
    handshake this probe cannot verify (MLflow's client has its own CA and TLS settings)."""
    parts = urllib.parse.urlsplit(uri)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host  # an IPv6 address
    netloc = host if parts.port is None else f"{host}:{parts.port}"  # credentials stay out of the probe
    probe = urllib.parse.urlunsplit(parts._replace(netloc=netloc)).rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(probe, timeout=timeout_s):
            pass
    except urllib.error.HTTPError:
        return
    except (OSError, ValueError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        if isinstance(reason, ssl.SSLError):
            return
        raise RegistryUnavailable(f"{registry_location(uri)} cannot be reached: {reason}") from exc


def alias_target(model_name: str, alias: str = CHAMPION) -> str:
    """The version an alias points at; :class:`AliasNotSet` when the registry has no such model or alias,
    :class:`RegistryUnavailable` when it cannot be read (with the database or URL named, and why)."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    check_registry()
    where = registry_location(mlflow.get_registry_uri() or mlflow.get_tracking_uri())
    try:
        return str(MlflowClient().get_model_version_by_alias(model_name, alias).version)
    except MlflowException as exc:
        if exc.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise RegistryUnavailable(f"{where} cannot be read: {describe_error(exc)}") from exc
        missing = exc
    except Exception as exc:  # the database driver's errors: a malformed file, a locked or dead server
        raise RegistryUnavailable(f"{where} cannot be read: {describe_error(exc)}") from exc
    try:  # which of the two is missing: the answer names the one to fix
        MlflowClient().get_registered_model(model_name)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise AliasNotSet(f"{where} has no registered model named {model_name!r}") from missing
        raise RegistryUnavailable(f"{where} cannot be read: {describe_error(exc)}") from exc
    raise AliasNotSet(f"model {model_name!r} in {where} has no {alias!r} alias") from missing


def alias_version(model_name: str, alias: str = CHAMPION) -> str | None:
    """The version an alias points at, or None (no such model or alias); :class:`RegistryUnavailable` when
    the registry cannot be read, so that a broken registry is not taken for an empty one."""
    try:
        return alias_target(model_name, alias)
    except AliasNotSet:
        return None


def describe_error(exc: BaseException) -> str:
    """``Type: first line`` of an exception, shortened and with any password in a URL starred out: drivers
    append the SQL and a help URL, and MLflow's client quotes the URL it called, credentials included."""
    cause = getattr(exc, "orig", None) or exc  # SQLAlchemy's wrapper: the driver's own error says it
    lines = str(cause).strip().splitlines()
    text = _URL_PASSWORD.sub(r"\1***@", lines[0] if lines else "")
    text = text if len(text) <= 300 else text[:297] + "..."
    return f"{type(cause).__name__}: {text}" if text else type(cause).__name__


_URL_PASSWORD = re.compile(r"(://[^/\s:@]+:)[^@\s/]+@")


def load_model(model_name: str, version: str) -> LoadedModel:
    """Load a version's booster (native XGBoost, no pyfunc), its feature schema, threshold and metrics."""
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient()
    mv = client.get_model_version(model_name, version)
    tags = dict(mv.tags or {})
    run_id = str(mv.run_id or tags.get(f"{TAG}.run_id", ""))
    booster = mlflow.xgboost.load_model(f"models:/{model_name}/{version}")
    schema_path = mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path="model_meta/feature_schema.json"
    )
    schema = FeatureSchema.from_dict(json.loads(Path(schema_path).read_text()))
    run = client.get_run(run_id)
    metrics = {
        k.removeprefix("test."): float(v) for k, v in run.data.metrics.items() if k.startswith("test.")
    }
    return LoadedModel(
        name=model_name,
        version=str(version),
        run_id=run_id,
        booster=booster,
        schema=schema,
        threshold=float(tags.get(f"{TAG}.threshold", 0.5)),
        task=schema.task,
        dataset_digest=tags.get(f"{TAG}.dataset.digest", ""),
        metrics=metrics,
        tags=tags,
        created_at=(mv.creation_timestamp or 0) / 1000,
    )
