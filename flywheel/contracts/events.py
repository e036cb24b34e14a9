"""The Prefect events the loop runs on, and the resource they are about.

The training flow emits ``MODEL_PROMOTED`` when a version becomes the champion, the monitoring flow
``DRIFT_DETECTED`` when the retraining policy fires; prefect.yaml's triggers (written by
``flywheel.deployments``) match them on one model's resource id, so one model's drift retrains that model
only. Emitters and triggers take both from here.
"""

from __future__ import annotations

from typing import Final

MODEL_PROMOTED: Final = "flywheel.model.promoted"
"""Emitted by flows/training.py when a new version becomes the champion; runs deployment/NAME."""
DRIFT_DETECTED: Final = "flywheel.model.drift-detected"
"""Emitted by flows/monitoring.py when the retraining policy fires; runs training/NAME."""
MODEL_ROLLED_BACK: Final = "flywheel.model.rolled-back"
"""Emitted when the champion alias is given back to the previous champion (by hand or by a guardrail)."""
MODEL_ROLLOUT_STEP: Final = "flywheel.model.rollout-step"
"""Emitted by flows/rollout.py as a candidate enters each step of a staged rollout."""
EVENTS: Final = (MODEL_PROMOTED, DRIFT_DETECTED, MODEL_ROLLED_BACK, MODEL_ROLLOUT_STEP)

RESOURCE_PREFIX: Final = "flywheel.model."
RESOURCE_ID: Final = "prefect.resource.id"
RESOURCE_NAME: Final = "prefect.resource.name"
VERSION_LABEL: Final = "flywheel.model.version"
"""The resource label naming the model version an event is about."""


def model_resource_id(model_name: str) -> str:
    """The Prefect resource id of a model's events (``flywheel.model.<name>``)."""
    return f"{RESOURCE_PREFIX}{model_name}"


def parse_model_resource_id(resource_id: str) -> str:
    """The model name of a resource id; ValueError for an id that is not a model's."""
    name = resource_id.removeprefix(RESOURCE_PREFIX)
    if name == resource_id or not name:
        raise ValueError(f"{resource_id!r} is not a model resource id ({RESOURCE_PREFIX}<name>)")
    return name


def model_resource(model_name: str, version: str) -> dict[str, str]:
    """The ``resource`` of an event about one version of a model."""
    return {
        RESOURCE_ID: model_resource_id(model_name),
        RESOURCE_NAME: model_name,
        VERSION_LABEL: str(version),
    }
