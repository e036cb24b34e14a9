"""prefect.yaml is generated from the problem specs: the committed file is what the generator writes, and
each problem gets its own deployments, schedules and triggers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from flywheel.cli import app
from flywheel.contracts.problem import SpecError
from flywheel.deployments import (
    DRIFT_EVENT,
    PROMOTED_EVENT,
    deployment_name,
    load_problem_specs,
    model_resource_id,
    render,
)
from flywheel.deployments_cli import PREFECT_YAML, generated_prefect_yaml

runner = CliRunner()

SPEC = """\
name: {name}
model_name: {model}
source: data.csv
task: regression
target: {{column: y}}
{extra}"""


def write_specs(folder: Path, *specs: tuple[str, str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, model, extra in specs:
        (folder / f"{name}.yaml").write_text(SPEC.format(name=name, model=model, extra=extra))
    return folder


def by_flow(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``FLOW/NAME`` -> deployment; the flow is read from the entrypoint, as Prefect does."""
    out = {}
    for d in document["deployments"]:
        flow = d["entrypoint"].split(":")[1]
        out[f"{'batch-inference' if flow == 'inference' else flow}/{d['name']}"] = d
    return out


def test_the_committed_prefect_yaml_is_what_the_generator_writes() -> None:
    assert PREFECT_YAML.read_text(encoding="utf-8") == generated_prefect_yaml(), (
        "prefect.yaml is stale: run `flywheel deployments write`"
    )
    result = runner.invoke(app, ["deployments", "write", "--check"])
    assert result.exit_code == 0, result.output


def test_check_fails_with_a_diff_on_a_stale_file(tmp_path: Path) -> None:
    stale = tmp_path / "prefect.yaml"
    stale.write_text(PREFECT_YAML.read_text().replace("problem: flights", "problem: planes", 1))
    result = runner.invoke(app, ["deployments", "write", "--check", "--path", str(stale)])
    assert result.exit_code == 1
    assert "-      problem: planes" in result.output and "+      problem: flights" in result.output
    assert "is stale: run `flywheel deployments write`" in result.output
    written = runner.invoke(app, ["deployments", "write", "--path", str(stale)])
    assert written.exit_code == 0, written.output
    assert stale.read_text() == generated_prefect_yaml()


def test_two_specs_give_two_sets_of_deployments_with_distinct_triggers(tmp_path: Path) -> None:
    folder = write_specs(
        tmp_path,
        ("churn", "churn-model", "schedules: {training: '0 4 * * *', monitoring: 600}\n"),
        ("prices", "price-model", "schedules: {training: null, monitoring: null, inference: null}\n"),
    )
    document = yaml.safe_load(render(load_problem_specs(folder), "3.8.8"))
    deployments = by_flow(document)
    flows = ("training", "monitoring", "batch-inference", "deployment")
    assert set(deployments) == {deployment_name(f, p) for f in flows for p in ("churn", "prices")}
    for problem in ("churn", "prices"):
        for flow in flows[:3]:
            assert deployments[f"{flow}/{problem}"]["parameters"]["problem"] == problem
    assert deployments["deployment/churn"]["parameters"]["model_name"] == "churn-model"
    assert deployments["deployment/prices"]["parameters"]["model_name"] == "price-model"

    triggers = {
        (name, t["match"]["prefect.resource.id"], tuple(t["expect"]), t["name"])
        for name, d in deployments.items()
        for t in d.get("triggers", [])
    }
    assert triggers == {
        ("training/churn", "flywheel.model.churn-model", (DRIFT_EVENT,), "retrain churn-model on drift"),
        (
            "deployment/churn",
            "flywheel.model.churn-model",
            (PROMOTED_EVENT,),
            "serve the new churn-model champion",
        ),
        ("training/prices", "flywheel.model.price-model", (DRIFT_EVENT,), "retrain price-model on drift"),
        (
            "deployment/prices",
            "flywheel.model.price-model",
            (PROMOTED_EVENT,),
            "serve the new price-model champion",
        ),
    }
    # schedules from each spec; null is no schedule (written as [] so prefect deploy never asks for one)
    assert deployments["training/churn"]["schedules"] == [
        {
            "cron": "0 4 * * *",
            "timezone": "UTC",
            "active": True,
            "parameters": {"reason": "schedule (0 4 * * * UTC)"},
        }
    ]
    assert deployments["monitoring/churn"]["schedules"] == [{"interval": 600, "active": True}]
    assert deployments["batch-inference/churn"]["schedules"][0]["cron"] == "0 5 * * *"  # the spec default
    for flow in ("training", "monitoring", "batch-inference"):
        assert deployments[f"{flow}/prices"]["schedules"] == []
    assert deployments["deployment/prices"]["schedules"][0]["cron"] == "30 5 * * *"
    # one work pool, templated from the Prefect variables provision writes, shared by every deployment
    assert document["definitions"]["work_pool"] == {"name": "{{ prefect.variables.flywheel_work_pool }}"}
    assert all(d["work_pool"] is document["definitions"]["work_pool"] for d in document["deployments"])
    assert all(
        d["parameters"]["stack"] == "{{ prefect.variables.flywheel_stack }}" for d in document["deployments"]
    )


def test_the_generated_file_is_a_valid_prefect_project() -> None:
    from prefect.cli.deploy._models import PrefectYamlModel

    text = generated_prefect_yaml()
    assert text.startswith("# Generated by `flywheel deployments write`")
    project = PrefectYamlModel.model_validate(yaml.safe_load(text))
    names = {(d.entrypoint, d.name) for d in project.deployments}
    assert ("flows/training.py:training", "flights") in names
    assert ("flows/deployment.py:deployment", "diamonds") in names
    assert project.pull == [
        {
            "prefect.deployments.steps.set_working_directory": {
                "directory": "{{ prefect.variables.flywheel_project_dir }}"
            }
        }
    ]


def test_the_flows_emit_the_events_the_triggers_expect() -> None:
    from flywheel.contracts import events

    assert (DRIFT_EVENT, PROMOTED_EVENT) == (events.DRIFT_DETECTED, events.MODEL_PROMOTED)
    flows = PREFECT_YAML.parent / "flows"
    training, monitoring = (flows / "training.py").read_text(), (flows / "monitoring.py").read_text()
    assert "event=events.MODEL_PROMOTED," in training and "event=events.DRIFT_DETECTED," in monitoring
    for source in (training, monitoring):  # on the model's resource, the id the triggers match
        assert source.count("resource=events.model_resource(spec.model_name, ") == 1
    assert model_resource_id("flight-delay") == "flywheel.model.flight-delay"
    assert events.model_resource("flight-delay", "3") == {
        "prefect.resource.id": "flywheel.model.flight-delay",
        "prefect.resource.name": "flight-delay",
        "flywheel.model.version": "3",
    }


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        ((("a", "same", ""), ("b", "same", "")), "problems 'a' and 'b' share the model_name 'same'"),
        ((("a", "m{{ x }}", ""),), "model_name may not hold"),
        ((("a", "m", "description: '{{ prefect.variables.x }}'\n"),), "description may not hold"),
    ],
)
def test_specs_that_would_collide_or_template_are_refused(
    tmp_path: Path, specs: tuple[tuple[str, str, str], ...], message: str
) -> None:
    with pytest.raises(SpecError, match=message):
        render(load_problem_specs(write_specs(tmp_path, *specs)), "3.8.8")
    with pytest.raises(SpecError, match="no problem spec"):
        load_problem_specs(tmp_path / "empty")


def test_specs_from_another_folder_are_passed_to_the_flows_by_path(tmp_path: Path) -> None:
    from flywheel.contracts.problem import load_spec

    folder = write_specs(tmp_path / "specs", ("churn", "churn-model", ""), ("prices", "price-model", ""))
    target = tmp_path / "prefect.yaml"
    args = ["deployments", "write", "--problems", str(folder), "--path", str(target)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    deployments = by_flow(yaml.safe_load(target.read_text()))
    for problem in ("churn", "prices"):
        for flow in ("training", "monitoring", "batch-inference"):
            ref = deployments[f"{flow}/{problem}"]["parameters"]["problem"]
            assert ref == str((folder / f"{problem}.yaml").resolve())
            assert load_spec(ref).name == problem  # what the flow run does with it
    assert runner.invoke(app, [*args, "--check"]).exit_code == 0
    missing = runner.invoke(app, ["deployments", "write", "--problems", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "Invalid value for '--problems'" in missing.output


def test_automations_say_what_they_do_and_pass_parameters_the_flows_take() -> None:
    """The trigger's parameters must be parameters of the flow it runs: Prefect refuses a run with an
    unknown one. Monitoring's policy picks the training mode; the trigger hands it over as ``mode``."""
    import inspect

    from flows.deployment import deployment
    from flows.training import training

    takes = {
        "training": set(inspect.signature(training.fn).parameters),
        "deployment": set(inspect.signature(deployment.fn).parameters),
    }
    deployments = by_flow(yaml.safe_load(generated_prefect_yaml()))
    for flow, event, name in (
        ("training", DRIFT_EVENT, "retrain flight-delay on drift"),
        ("deployment", PROMOTED_EVENT, "serve the new flight-delay champion"),
    ):
        (trigger,) = deployments[f"{flow}/flights"]["triggers"]
        assert trigger["name"] == name
        assert trigger["description"].startswith(f"On {event} for flywheel.model.flight-delay: runs {flow}/")
        assert set(trigger["parameters"]) <= takes[flow], trigger["parameters"]
    (retrain,) = deployments["training/flights"]["triggers"]
    assert retrain["parameters"]["mode"] == "{{ event.payload.mode }}"
    assert inspect.signature(training.fn).parameters["mode"].default == "full"
    # and monitoring puts it in the event's payload
    assert '"mode": decision.mode,' in (PREFECT_YAML.parent / "flows" / "monitoring.py").read_text()
