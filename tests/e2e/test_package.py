"""The model as a dependency: ``flywheel package`` builds a wheel of a registered version, the wheel goes into
a fresh virtual environment (xgboost and numpy only: no MLflow, pandas or pydantic there), and in that
environment it predicts what the service answers for the same records, bit for bit, and rejects a bad
record with the service's errors. A binary (flights), a multiclass and a regression model."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from serving.app import create_app
from serving.settings import ServiceSettings
from tests.unit.serving.conftest import local_home, record_from, train_and_register

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
ROWS = 1_000

VENV_SCRIPT = r"""
import importlib, importlib.metadata as md, importlib.util, json, sys

job = json.load(open(sys.argv[1]))
out = {"models": {}}
for package, given in job.items():
    model = importlib.import_module(package)
    answer = {"name": model.MODEL_NAME, "version": model.MODEL_VERSION, "task": model.TASK}
    answer["predict"] = model.predict(given["records"]).tolist()
    if model.TASK != "regression":
        answer["proba"] = model.predict_proba(given["records"]).tolist()
    else:
        try:
            model.predict_proba(given["records"])
        except TypeError as exc:
            answer["no_proba"] = str(exc)
    answer["empty"] = list(model.predict([]).shape)
    answer["bad"] = []
    for batch in given["bad"]:
        try:
            model.predict(batch)
            answer["bad"].append(None)
        except model.InvalidRecords as exc:
            answer["bad"].append(
                {"errors": exc.errors, "total": exc.total, "complete": exc.complete, "message": str(exc)}
            )
    out["models"][package] = answer
out["importable"] = sorted(
    m for m in ("mlflow", "pandas", "prefect", "pydantic", "sklearn", "flywheel")
    if importlib.util.find_spec(m)
)
out["dists"] = {d.metadata["Name"]: d.version for d in md.distributions()}
out["requires"] = {
    d.metadata["Name"]: d.requires for d in md.distributions() if d.metadata["Name"].startswith("flywheel")
}
json.dump(out, open(sys.argv[2], "w"))
"""


def _synthetic(task: str, n: int = 1_500) -> pd.DataFrame:
    rng = np.random.default_rng(5)
    size = rng.normal(size=n)
    colour = rng.choice(["red", "green", "blue"], n)
    noise = rng.normal(size=n)
    noise[rng.random(n) < 0.1] = np.nan  # a feature that may be missing
    score = size + (colour == "red") * 1.2 + rng.normal(scale=0.3, size=n)
    target: Any = np.select([score < -0.3, score < 0.9], ["small", "medium"], "large")
    if task == "regression":
        target = score * 10.0
    return pd.DataFrame({"size": size, "colour": colour, "noise": noise, "target": target})


def _train_synthetic(model_name: str, task: str) -> Any:
    """A small model of ``task`` registered and made champion (no gate: the first version serves)."""
    from flywheel.contracts.problem import ProblemSpec
    from stacks.components.data_validator import WhylogsValidator
    from stacks.components.model_versions import make_champion
    from steps.data.features import build_dataset
    from steps.data.split import split
    from steps.model import reference, register, track, train
    from steps.model.xgb import base_params

    spec = ProblemSpec.model_validate(
        {
            "name": model_name,
            "model_name": model_name,
            "source": "x.csv",
            "task": task,
            "target": {"column": "target"},
        }
    )
    dataset = build_dataset(_synthetic(task), spec, {})
    parts = split(dataset, spec)
    params = base_params(spec, n_jobs=2, num_class=3 if task == "multiclass" else None)
    booster = train.train(parts.train, {**params, "max_depth": 3}, 20)
    run_id = track.start_run("flywheel", spec, {})
    registered = register.register(
        booster,
        run_id=run_id,
        model_name=model_name,
        schema=dataset.schema,
        example=register.input_example(parts.test.frame, dataset.schema),
        training_profile=reference.training_profile(booster, parts.train, WhylogsValidator(), parts.test),
        lineage={},
        threshold=0.5,
    )
    make_champion(model_name, registered.version)
    track.finish_run(run_id, {}, 0.0, "FINISHED")
    return parts.test


@pytest.fixture(scope="module")
def registry(
    tmp_path_factory: pytest.TempPathFactory, flights_sample: pd.DataFrame, weather: pd.DataFrame
) -> Iterator[dict[str, Any]]:
    home = tmp_path_factory.mktemp("package-home")
    with local_home(home):
        flights = train_and_register(flights_sample, weather)
        assert flights["promoted"]
        tests = {
            "flight-delay": flights["test"],
            "iris-like": _train_synthetic("iris-like", "multiclass"),
            "size-value": _train_synthetic("size-value", "regression"),
        }
        yield {"home": home, "tests": tests}


def _records(test: Any, rows: int) -> list[dict[str, Any]]:
    assert len(test.X) >= rows
    return [record_from(test, i) for i in range(rows)]


def _bad_batches(good: dict[str, Any]) -> list[list[Any]]:
    """Bad records a JSON body can carry, each after a good one (the error names record 1)."""
    numeric = next(k for k, v in good.items() if isinstance(v, float))
    categorical = next(k for k, v in good.items() if isinstance(v, str))
    return [
        [good, {**good, categorical: "no such value"}],
        [good, {**good, numeric: "12"}],
        [good, {**good, numeric: True, "unknown_field": 1}],
        [good, {k: v for k, v in good.items() if k != numeric} | {categorical: 7}],
        [good, "not a record"],
        [good, *[{**good, categorical: f"bad {i}"} for i in range(30)]],
    ]


def _uv() -> str:
    found = shutil.which("uv") or str(Path(sys.executable).with_name("uv"))
    assert Path(found).exists() or shutil.which(found), "uv is needed to make the test's virtual environment"
    return found


def _install(venv: Path, wheels: list[Path]) -> None:
    """A fresh environment with the wheels, and the xgboost and numpy this interpreter has (from uv's cache
    when they are there; from the index otherwise)."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT")}
    uv = _uv()
    subprocess.run(
        [uv, "venv", "-q", "--python", sys.executable, str(venv)], env=env, check=True, timeout=120
    )
    pins = [f"xgboost=={metadata.version('xgboost')}", f"numpy=={metadata.version('numpy')}"]
    command = [uv, "pip", "install", "-q", "--python", str(venv / "bin" / "python"), *map(str, wheels), *pins]
    cached = subprocess.run([*command, "--offline"], env=env, capture_output=True, text=True, timeout=300)
    if cached.returncode != 0:  # not in the cache: from the index
        subprocess.run(command, env=env, check=True, timeout=600)


def _service_answers(home: Path, model_name: str, records: list[Any], bad: list[list[Any]]) -> dict[str, Any]:
    settings = ServiceSettings(stack=None, model_name=model_name, profiling=False, watch_interval_s=3600)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLYWHEEL_HOME", str(home))
        with TestClient(create_app(settings)) as client:
            answered = client.post("/predict/batch", json={"records": records})
            assert answered.status_code == 200, answered.text
            rejected = [client.post("/predict/batch", json={"records": batch}) for batch in bad]
    assert all(r.status_code == 422 for r in rejected)
    return {"answer": answered.json(), "rejected": [r.json() for r in rejected]}


def test_the_wheel_predicts_what_the_service_answers(registry: dict[str, Any], tmp_path: Path) -> None:
    from flywheel.cli import app
    from flywheel.packaging.build import package

    home, out = registry["home"], tmp_path / "wheels"
    with local_home(home):
        built = CliRunner().invoke(app, ["package", "flight-delay@champion", "-o", str(out)])
        assert built.exit_code == 0, built.output
        missing = CliRunner().invoke(app, ["package", "no-such-model@champion", "-o", str(out)])
        assert missing.exit_code == 1 and "no registered model named 'no-such-model'" in missing.output
        wheels = [
            Path(built.stdout.splitlines()[0]),
            package("iris-like/1", out).path,
            package("size-value@champion", out).path,
        ]
    assert [w.name for w in wheels] == [
        "flywheel_model_flight_delay-1-py3-none-any.whl",
        "flywheel_model_iris_like-1-py3-none-any.whl",
        "flywheel_model_size_value-1-py3-none-any.whl",
    ]
    with zipfile.ZipFile(wheels[0]) as archive:
        assert sorted(archive.namelist()) == [
            "flywheel_model_flight_delay-1.dist-info/METADATA",
            "flywheel_model_flight_delay-1.dist-info/RECORD",
            "flywheel_model_flight_delay-1.dist-info/WHEEL",
            "flywheel_model_flight_delay/__init__.py",
            "flywheel_model_flight_delay/model.json",
            "flywheel_model_flight_delay/model.ubj",
            "flywheel_model_flight_delay/py.typed",
            "flywheel_model_flight_delay/records.py",
        ]

    job: dict[str, Any] = {}
    service: dict[str, Any] = {}
    for (name, test), wheel in zip(registry["tests"].items(), wheels, strict=True):
        records = _records(test, ROWS if name == "flight-delay" else 200)
        bad = _bad_batches(records[0])
        job[wheel.name.split("-")[0]] = {"records": records, "bad": bad}
        service[wheel.name.split("-")[0]] = _service_answers(home, name, records, bad)

    venv = tmp_path / "venv"
    _install(venv, wheels)
    (tmp_path / "job.json").write_text(json.dumps(job))
    (tmp_path / "predict.py").write_text(VENV_SCRIPT)
    ran = subprocess.run(
        [
            str(venv / "bin" / "python"),
            str(tmp_path / "predict.py"),
            str(tmp_path / "job.json"),
            str(tmp_path / "out.json"),
        ],
        cwd=tmp_path,  # not the repository: nothing of flywheel is importable from there
        env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ran.returncode == 0, ran.stderr
    found = json.loads((tmp_path / "out.json").read_text())

    # only what the wheels need is there: no MLflow, Prefect, pandas, pydantic or flywheel
    assert found["importable"] == []
    assert set(found["dists"]) - {"numpy", "xgboost", "scipy"} - {
        d for d in found["dists"] if d.startswith("nvidia")
    } == {
        "flywheel-model-flight-delay",
        "flywheel-model-iris-like",
        "flywheel-model-size-value",
    }
    major = int(metadata.version("xgboost").split(".")[0])
    for requires in found["requires"].values():
        assert sorted(requires)[0] == "numpy>=1.26" and sorted(requires)[1].startswith(
            f"xgboost<{major + 1},>="
        )

    for package_name, answers in service.items():
        model = found["models"][package_name]
        body = answers["answer"]
        assert (model["name"], model["version"]) == (body["model_name"], body["model_version"])
        items = body["predictions"]
        assert len(model["predict"]) == len(items) == len(job[package_name]["records"])
        if model["task"] == "binary":
            assert model["proba"] == [p["prediction"] for p in items]  # exactly: the same float64 values
            assert model["predict"] == [p["decision"] for p in items]
            assert 0 < sum(model["predict"]) < len(items)  # both decisions occur: the threshold is tested
        elif model["task"] == "multiclass":
            assert model["proba"] == [list(p["probabilities"].values()) for p in items]
            assert model["predict"] == [p["predicted_class"] for p in items]
            assert len(set(model["predict"])) == 3
        else:
            assert model["task"] == "regression"
            assert model["predict"] == [p["prediction"] for p in items]
            assert "regression model: it has no probabilities" in model["no_proba"]
        assert model["empty"] == [0]
        for rejected, got in zip(answers["rejected"], model["bad"], strict=True):
            assert got is not None
            assert got["errors"] == [{**e, "loc": e["loc"][1:]} for e in rejected["detail"]]
            assert got["total"] == rejected.get("error_count", len(rejected["detail"]))
            assert got["complete"] == (not rejected.get("error_count_is_lower_bound", False))
            assert got["errors"][0]["field"].startswith("records.1")
            assert got["errors"][0]["msg"] in got["message"]
