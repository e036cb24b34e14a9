"""`flywheel data diff` on a real artifact store (the local stack under a temporary home), with snapshots
written by ingest's own writer, a source file, a real MLflow registry, and references that name nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from flywheel.cli import app
from flywheel.contracts.model_version import DatasetLineage, TrainingRecord
from stacks.components.artifact_store import ArtifactStore
from stacks.components.data_validator import WhylogsValidator
from stacks.loader import load_stack
from steps.data.ingest import Snapshot, write_snapshot

runner = CliRunner()


@pytest.fixture
def store(home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ArtifactStore]:
    monkeypatch.delenv("FLYWHEEL_PROBLEM", raising=False)
    yield ArtifactStore.from_stack(load_stack("local"))


def _flights(rows: int, shift: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "arr_delay": rng.normal(5 + shift, 30, rows),
            "distance": rng.normal(1000 + 400 * shift, 100, rows).round(),
            "carrier": rng.choice(["UA", "AA", "B6"], rows),
            "hour": rng.integers(5, 23, rows),
        }
    )


@pytest.fixture
def snapshots(store: ArtifactStore) -> tuple[Snapshot, Snapshot]:
    first = _flights(1_500, 0.0, 1)
    second = _flights(2_345, 1.0, 2).drop(columns=["hour"]).assign(tailnum="N1")
    second["carrier"] = second["carrier"].replace({"B6": "ZZ"})
    validator = WhylogsValidator()
    return (
        write_snapshot(first, "file:///first.csv", store, validator),
        write_snapshot(second, "file:///second.csv", store, validator),
    )


def test_two_snapshots_with_a_page(snapshots: tuple[Snapshot, Snapshot], tmp_path: Path) -> None:
    a, b = snapshots
    page = tmp_path / "out" / "diff.html"
    result = runner.invoke(
        app, ["data", "diff", a.digest, b.digest[:8], "--problem", "flights", "--html", str(page)]
    )
    assert result.exit_code == 0, result.output
    out = result.output
    assert out.startswith("1,500 -> 2,345 rows (+845, +56.3%)")
    assert "tailnum  added" in out and "hour     removed" in out
    assert "file:///first.csv" in out and "the snapshot's own (all 2,345 rows)" in out
    moved = out.splitlines()[0]
    assert "distance" in moved and "carrier" in moved
    assert "ZZ" in out and "B6" in out  # new and vanished carriers
    assert "Label balance (delayed)" in out
    html = page.read_text()
    assert "<h2>Drift per column</h2>" in html and "<h2>Label balance (delayed)</h2>" in html
    assert "data:image/png;base64," in html


def test_a_sample_bounds_the_rows_read(snapshots: tuple[Snapshot, Snapshot]) -> None:
    a, b = snapshots
    result = runner.invoke(app, ["data", "diff", a.digest, b.digest, "--sample", "500"])
    assert result.exit_code == 0, result.output
    assert result.output.count("a seeded sample of 500") == 2
    assert "no problem chosen" in result.output  # without a spec: no label balance, said so


def test_a_source_file_against_a_snapshot(snapshots: tuple[Snapshot, Snapshot], tmp_path: Path) -> None:
    a, _ = snapshots
    source = tmp_path / "later.csv"
    _flights(800, 0.0, 3).to_csv(source, index=False)
    result = runner.invoke(app, ["data", "diff", a.digest, str(source)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("1,500 -> 800 rows (-700, -46.7%); same columns and types")


def test_a_version_means_its_training_data(
    snapshots: tuple[Snapshot, Snapshot], store: ArtifactStore, tmp_path: Path
) -> None:
    from stacks.components import model_versions
    from stacks.components.tracking import configure_mlflow

    a, b = snapshots
    configure_mlflow(load_stack("local"))
    tags = DatasetLineage(a.digest, a.uri, a.source_uri, a.rows).to_tags()
    first = model_versions.register_version(str(tmp_path), "flight-delay", tags)
    model_versions.make_champion("flight-delay", first)
    tags = DatasetLineage(b.digest, b.uri, b.source_uri, b.rows).to_tags()
    tags |= TrainingRecord(feedback_digest="f" * 32, feedback_rows=1_200).to_tags()
    second = model_versions.register_version(str(tmp_path), "flight-delay", tags)
    result = runner.invoke(app, ["data", "diff", "flight-delay@champion", f"flight-delay/{second}"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("1,500 -> 2,345 rows")
    assert f"flight-delay v{first} (champion)" in result.output
    assert f"v{second} also learned from 1,200 feedback rows (snapshot {'f' * 32})" in result.output
    missing = runner.invoke(app, ["data", "diff", "flight-delay/99", a.digest])
    assert missing.exit_code == 1 and "no such model version 'flight-delay/99'" in missing.output
    assert "Traceback" not in missing.output
    gone = model_versions.register_version(
        str(tmp_path), "flight-delay", {"flywheel.dataset.digest": "ab" * 16}
    )
    lost = runner.invoke(app, ["data", "diff", f"flight-delay/{gone}", a.digest])
    assert lost.exit_code == 1 and f"learned from snapshot {'ab' * 16}, which is gone" in lost.output


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("deadbeefdeadbeef", "no snapshot 'deadbeefdeadbeef' in the artifact store"),
        ("file:///no/such/file.csv", "file:///no/such/file.csv"),
        ("not a reference!", "is not a snapshot digest, MODEL@ALIAS, MODEL/VERSION"),
        ("flight-delay@champion", "no such model version 'flight-delay@champion'"),
    ],
)
def test_bad_references_are_one_line_and_exit_1(
    snapshots: tuple[Snapshot, Snapshot], reference: str, message: str
) -> None:
    a, _ = snapshots
    result = runner.invoke(app, ["data", "diff", a.digest, reference])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_a_sample_beyond_the_bound_is_refused(snapshots: tuple[Snapshot, Snapshot]) -> None:
    a, b = snapshots
    result = runner.invoke(app, ["data", "diff", a.digest, b.digest, "--sample", "999999999"])
    assert result.exit_code == 2 and "--sample" in result.output
