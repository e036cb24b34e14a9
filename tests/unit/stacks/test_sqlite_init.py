"""Several processes opening one new SQLite database at the same moment (two problems' first trainings on a
fresh stack: MLflow's tracker, Optuna's study storage) all get a working store: without the schema lock the
second one fails to create tables the first has just created (`table ... already exists`, or an alembic
revision mismatch)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]

CHILD = """
import sys, time
from pathlib import Path
from stacks.components.tracking import configure_mlflow
from stacks.loader import load_stack
from steps.model.tune import create_storage_tables
stack = load_stack("local")
gate, me, n = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])

def together(step):  # wait for the others, then all at once
    (gate / f"{step}-{me}").touch()
    deadline = time.monotonic() + 120
    while len(list(gate.glob(f"{step}-*"))) < n and time.monotonic() < deadline:
        time.sleep(0.005)

together("mlflow")
target = configure_mlflow(stack)
import mlflow, optuna
together("optuna")
create_storage_tables(stack.optuna_storage())
optuna.create_study(study_name=f"study-{me}", storage=stack.optuna_storage())
print("ok", mlflow.MlflowClient().get_experiment_by_name(target.experiment_name).experiment_id)
"""


@pytest.mark.slow
def test_concurrent_first_use_of_sqlite_tracker_and_study_storage(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    gate.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLYWHEEL_", "MLFLOW_"))}
    env |= {"FLYWHEEL_HOME": str(tmp_path / "home"), "MLFLOW_DISABLE_TELEMETRY": "true"}
    n = 3
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, str(gate), str(i), str(n)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(n)
    ]
    outputs = []
    try:
        for proc in procs:
            out, _ = proc.communicate(timeout=180)
            outputs.append((proc.returncode, out))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    for code, out in outputs:
        assert code == 0, out[-2000:]
    ids = {out.strip().splitlines()[-1] for _, out in outputs}
    assert len(ids) == 1 and next(iter(ids)).startswith("ok "), ids  # one experiment, seen by all
