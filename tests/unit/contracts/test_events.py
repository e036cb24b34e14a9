"""Event names and the model resource id: what prefect.yaml's triggers match, as the flows emit it."""

from __future__ import annotations

import pytest

from flywheel.contracts import events


def test_the_names_the_deployed_triggers_match() -> None:
    """Deployed automations match these strings: renaming one silently disconnects the loop."""
    assert events.MODEL_PROMOTED == "flywheel.model.promoted"
    assert events.DRIFT_DETECTED == "flywheel.model.drift-detected"
    assert events.model_resource_id("flight-delay") == "flywheel.model.flight-delay"


@pytest.mark.parametrize("name", ["flight-delay", "diamond_price", "Model.v2"])
def test_resource_ids_round_trip(name: str) -> None:
    assert events.parse_model_resource_id(events.model_resource_id(name)) == name
    resource = events.model_resource(name, "7")
    assert resource[events.RESOURCE_ID] == events.model_resource_id(name)
    assert (resource[events.RESOURCE_NAME], resource[events.VERSION_LABEL]) == (name, "7")


@pytest.mark.parametrize("resource_id", ["prefect.flow-run.1", "flywheel.model.", "flywheel.stack.local"])
def test_other_resources_are_not_models(resource_id: str) -> None:
    with pytest.raises(ValueError, match="not a model resource id"):
        events.parse_model_resource_id(resource_id)
