"""Reading and writing model versions in MLflow: the one module that does.

Registration, promotion and the deployers write a version's tags and aliases here; the service, the flows,
lineage and the CLI read versions here, as :class:`~flywheel.contracts.model_version.ModelVersion` with
typed tags. What the keys and aliases are is :mod:`flywheel.contracts.model_version`; this module is the
MLflow side of it.

There is one alias lookup, :func:`alias_target`: it tells a registry that has no such model or alias
(:class:`AliasNotSet`) from one that cannot be read (``RegistryUnavailable``), so no caller takes a broken
registry for an empty one. MLflow is imported inside the functions: it takes seconds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flywheel.contracts.model_version import (
    CHALLENGER,
    CHAMPION,
    CHAMPION_HISTORY_TAG,
    FEATURE_SCHEMA_ARTIFACT,
    TAG_VALUE_LIMIT,
    ModelVersion,
    VersionTags,
    format_history,
    parse_history,
    parse_reference,
)
from flywheel.contracts.rollout import ROLLOUT_TAG, RolloutState
from flywheel.contracts.schema import FeatureSchema
from stacks.components.registry_health import (
    RegistryUnavailable,
    check_registry,
    describe_error,
    registry_location,
)

__all__ = [
    "AliasNotSet",
    "VersionNotFound",
    "alias_target",
    "alias_version",
    "by_alias",
    "feature_schema",
    "get_version",
    "make_champion",
    "mark_challenger",
    "register_version",
    "resolve",
    "run_dataset_digest",
    "set_tags",
]

_MISSING = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND")
"""MLflow's error codes for a model or alias that is not there (a local store, a server)."""


class AliasNotSet(LookupError):
    """The registry answered: it has no model of that name, or the model has no such alias."""


def alias_target(model_name: str, alias: str = CHAMPION) -> str:
    """The version an alias points at; :class:`AliasNotSet` when the registry has no such model or alias,
    ``RegistryUnavailable`` when it cannot be read (with the database or URL named, and why)."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    check_registry()
    where = registry_location(mlflow.get_registry_uri() or mlflow.get_tracking_uri())
    try:
        return str(MlflowClient().get_model_version_by_alias(model_name, alias).version)
    except MlflowException as exc:
        if exc.error_code not in _MISSING:
            raise RegistryUnavailable(f"{where} cannot be read: {describe_error(exc)}") from exc
        missing = exc
    except Exception as exc:  # the database driver's errors: a malformed file, a locked or dead server
        raise RegistryUnavailable(f"{where} cannot be read: {describe_error(exc)}") from exc
    try:  # which of the two is missing: the answer names the one to fix
        MlflowClient().get_registered_model(model_name)
    except MlflowException as exc:
        if exc.error_code in _MISSING:
            raise AliasNotSet(f"{where} has no registered model named {model_name!r}") from missing
        raise RegistryUnavailable(f"{where} cannot be read: {describe_error(exc)}") from exc
    raise AliasNotSet(f"model {model_name!r} in {where} has no {alias!r} alias") from missing


def alias_version(model_name: str, alias: str = CHAMPION) -> str | None:
    """The version an alias points at, or None (no such model or alias); ``RegistryUnavailable`` when
    the registry cannot be read, so that a broken registry is not taken for an empty one."""
    try:
        return alias_target(model_name, alias)
    except AliasNotSet:
        return None


def get_version(model_name: str, version: str) -> ModelVersion:
    """One version, its aliases and tags (MlflowException when there is no such version)."""
    from mlflow import MlflowClient

    return _typed(MlflowClient().get_model_version(model_name, str(version)))


class VersionNotFound(LookupError):
    """A ``MODEL@ALIAS`` or ``MODEL/VERSION`` that names no version, or a registry that cannot say: the
    message is the one line a command prints (``no such model version 'x/9': ...``)."""


def resolve(reference: str) -> ModelVersion:
    """The version ``MODEL@ALIAS``, ``MODEL/VERSION`` or ``MODEL`` (its champion) names;
    :class:`VersionNotFound` otherwise, whatever the cause (no model, alias or version; no registry)."""
    from mlflow.exceptions import MlflowException

    name, alias, version = parse_reference(reference)
    try:
        if alias:
            version = alias_target(name, alias)
        return get_version(name, str(version))
    except (MlflowException, LookupError, RegistryUnavailable) as exc:
        why = exc.message if isinstance(exc, MlflowException) else str(exc)
        raise VersionNotFound(f"no such model version {reference!r}: {why}") from exc


def by_alias(model_name: str, alias: str = CHAMPION) -> ModelVersion | None:
    """The version an alias names, or None (no such model or alias); ``RegistryUnavailable`` as
    :func:`alias_version`."""
    version = alias_version(model_name, alias)
    return None if version is None else get_version(model_name, version)


def _typed(mv: Any) -> ModelVersion:
    tags = VersionTags(dict(mv.tags or {}))
    return ModelVersion(
        name=str(mv.name),
        version=str(mv.version),
        run_id=str(mv.run_id or tags.run_id),
        aliases=tuple(getattr(mv, "aliases", None) or ()),
        created_at=(mv.creation_timestamp or 0) / 1000,
        tags=tags,
    )


def register_version(model_uri: str, model_name: str, tags: Mapping[str, str]) -> str:
    """A new version of ``model_name`` from a logged model, created with ``tags``; returns its number."""
    import mlflow

    created = mlflow.register_model(model_uri, model_name, tags=_cut(tags))
    return str(created.version)


def versions(model_name: str, limit: int = 1000) -> list[ModelVersion]:
    """The model's versions, newest first (at most ``limit``); [] for a model the registry does not know."""
    from mlflow import MlflowClient

    client = MlflowClient()
    found = client.search_model_versions(f"name = '{model_name}'", max_results=limit)
    if not found:
        return []
    # a search leaves the aliases out: the registered model has them
    named: dict[str, list[str]] = {}
    for alias, version in (client.get_registered_model(model_name).aliases or {}).items():
        named.setdefault(str(version), []).append(alias)
    typed = [
        dataclasses.replace(mv, aliases=tuple(sorted(named.get(mv.version, ())))) for mv in map(_typed, found)
    ]
    return sorted(typed, key=lambda v: int(v.version), reverse=True)


def set_tags(model_name: str, version: str, tags: Mapping[str, str]) -> None:
    """Set each tag on the version (values cut to what MLflow accepts)."""
    from mlflow import MlflowClient

    client = MlflowClient()
    for key, value in _cut(tags).items():
        client.set_model_version_tag(model_name, str(version), key, value)


def set_description(model_name: str, version: str, text: str) -> None:
    """The version's description, which MLflow's version page shows first (the gate's decision, in words)."""
    from mlflow import MlflowClient

    MlflowClient().update_model_version(model_name, str(version), description=text[:5000])


def make_champion(model_name: str, version: str) -> None:
    """Point the champion alias at ``version`` and add it to the champion history; the challenger alias
    leaves it if it named it."""
    from mlflow import MlflowClient

    client = MlflowClient()
    history = champion_history(model_name)
    client.set_registered_model_alias(model_name, CHAMPION, str(version))
    if not history or history[-1] != str(version):
        client.set_registered_model_tag(
            model_name, CHAMPION_HISTORY_TAG, format_history([*history, str(version)])
        )
    if alias_version(model_name, CHALLENGER) == str(version):
        client.delete_registered_model_alias(model_name, CHALLENGER)


def rollout_state(model_name: str) -> RolloutState | None:
    """The rollout in progress (the registered model's tag), or None: no rollout, or a tag that does not
    parse."""
    from mlflow import MlflowClient

    tags = MlflowClient().get_registered_model(model_name).tags or {}
    return RolloutState.from_tag(tags.get(ROLLOUT_TAG))


def set_rollout(model_name: str, state: RolloutState | None) -> None:
    """Start or move a rollout (``state``), or end it (None): every replica follows at its next watch tick."""
    from mlflow import MlflowClient

    client = MlflowClient()
    if state is None:
        with contextlib.suppress(Exception):  # no tag to delete is the state asked for
            client.delete_registered_model_tag(model_name, ROLLOUT_TAG)
        return
    client.set_registered_model_tag(model_name, ROLLOUT_TAG, state.to_tag())


def champion_history(model_name: str) -> list[str]:
    """The versions that held the champion alias, oldest first ([] for a model without the tag)."""
    from mlflow import MlflowClient

    tags = MlflowClient().get_registered_model(model_name).tags or {}
    return parse_history(tags.get(CHAMPION_HISTORY_TAG, ""))


class NothingToRollBackTo(LookupError):
    """The model has no champion, or no earlier champion that is still registered: the message says which."""


def previous_champion(model_name: str) -> tuple[ModelVersion, ModelVersion]:
    """(the champion, the version it took the alias from): the latest earlier entry of the champion history
    that is still registered, else the champion the gate compared it with; :class:`NothingToRollBackTo`."""
    from mlflow.exceptions import MlflowException

    current = by_alias(model_name)
    if current is None:
        raise NothingToRollBackTo(f"{model_name} has no champion to roll back")
    history = champion_history(model_name)
    while history and history[-1] == current.version:
        history.pop()
    promotion = current.tags.promotion
    fallback = [promotion.champion_version] if promotion and promotion.champion_version else []
    for version in [*reversed(history), *fallback]:
        if version == current.version:
            continue
        try:
            return current, get_version(model_name, version)
        except MlflowException:
            continue  # deleted since: the one before it
    raise NothingToRollBackTo(
        f"{model_name} v{current.version} has no earlier champion that is still registered"
    )


def roll_back(
    model_name: str, current: ModelVersion, previous: ModelVersion, record: Mapping[str, str]
) -> None:
    """Give the champion alias back to ``previous``: ``record`` (the rollback's tags) on ``current``, and
    the history cut back to ``previous`` (a second rollback goes further back, not forth again)."""
    from mlflow import MlflowClient

    set_tags(model_name, current.version, record)
    history = champion_history(model_name)
    while history and history[-1] != previous.version:
        history.pop()
    client = MlflowClient()
    client.set_registered_model_alias(model_name, CHAMPION, previous.version)
    client.set_registered_model_tag(
        model_name, CHAMPION_HISTORY_TAG, format_history(history or [previous.version])
    )


def mark_challenger(model_name: str, version: str) -> None:
    """Point the challenger alias at ``version`` (a candidate the gate kept out)."""
    from mlflow import MlflowClient

    MlflowClient().set_registered_model_alias(model_name, CHALLENGER, str(version))


def feature_schema(run_id: str) -> FeatureSchema:
    """The feature schema logged in a version's training run."""
    import mlflow

    path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=FEATURE_SCHEMA_ARTIFACT)
    return FeatureSchema.from_dict(json.loads(Path(path).read_text()))


def run_dataset_digest(run_id: str) -> str:
    """The digest of a run's first dataset input ("" without one): the lineage of a version whose tags
    predate the dataset tags."""
    from mlflow import MlflowClient

    run = MlflowClient().get_run(run_id)
    for dataset_input in run.inputs.dataset_inputs if run.inputs else []:
        return str(dataset_input.dataset.digest)
    return ""


def _cut(tags: Mapping[str, str]) -> dict[str, str]:
    return {k: str(v)[:TAG_VALUE_LIMIT] for k, v in tags.items()}
