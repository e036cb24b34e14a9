"""The wheel's names (PEP 503 / PEP 440 normalised), its RECORD, and the same bytes for the same model."""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb

from flywheel.contracts.schema import FeatureColumn, FeatureSchema
from flywheel.packaging.build import build_wheel
from flywheel.packaging.wheel import WheelNameError, wheel_name


@pytest.mark.parametrize(
    ("model", "version", "distribution", "package", "normalised"),
    [
        ("flight-delay", "3", "flywheel-model-flight-delay", "flywheel_model_flight_delay", "3"),
        ("Flight_Delay.v2", "03", "flywheel-model-flight-delay-v2", "flywheel_model_flight_delay_v2", "3"),
        ("  churn  (EU) ", "12", "flywheel-model-churn-eu", "flywheel_model_churn_eu", "12"),
    ],
)
def test_names(model: str, version: str, distribution: str, package: str, normalised: str) -> None:
    name = wheel_name(model, version)
    assert (name.distribution, name.package, name.version) == (distribution, package, normalised)
    assert name.filename == f"{package}-{normalised}-py3-none-any.whl"
    assert name.package.isidentifier()


@pytest.mark.parametrize(
    ("model", "version"), [("---", "1"), ("ok", "1.0"), ("ok", "v1"), ("ok", ""), ("ok", "9" * 40)]
)
def test_names_that_make_no_package(model: str, version: str) -> None:
    with pytest.raises(WheelNameError):
        wheel_name(model, version)


def _booster() -> xgb.Booster:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 2)).astype(np.float32)
    return xgb.train({"objective": "binary:logistic", "nthread": 1}, xgb.DMatrix(x, label=x[:, 0] > 0), 3)


SCHEMA = FeatureSchema(
    [FeatureColumn("a", "numeric"), FeatureColumn("b", "numeric", nullable=False)], "y", "binary", ["0", "1"]
)


def test_record_lists_every_file_and_the_bytes_repeat(tmp_path: Path) -> None:
    booster = _booster()
    first = build_wheel("tiny", "2", booster, SCHEMA, 0.4, tmp_path / "one").path
    second = build_wheel("tiny", "2", booster, SCHEMA, 0.4, tmp_path / "two").path
    assert first.read_bytes() == second.read_bytes()
    with zipfile.ZipFile(first) as archive:
        names = archive.namelist()
        record = archive.read("flywheel_model_tiny-2.dist-info/RECORD").decode().splitlines()
        listed = dict(line.rsplit(",", 2)[0:2] for line in record)
        assert set(listed) == set(names)
        for path, digest in listed.items():
            if path.endswith("RECORD"):
                assert digest == ""
                continue
            data = archive.read(path)
            expected = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            assert digest == f"sha256={expected}"
        meta = archive.read("flywheel_model_tiny-2.dist-info/METADATA").decode()
        assert "Name: flywheel-model-tiny\nVersion: 2\n" in meta
        assert "Requires-Dist: numpy>=1.26\n" in meta and "Requires-Dist: xgboost<" in meta
        assert "Tag: py3-none-any" in archive.read("flywheel_model_tiny-2.dist-info/WHEEL").decode()
        loaded = xgb.Booster()
        loaded.load_model(bytearray(archive.read("flywheel_model_tiny/model.ubj")))
    probe = np.array([[0.5, -1.0], [np.nan, 2.0]], dtype=np.float32)
    assert np.array_equal(loaded.inplace_predict(probe), booster.inplace_predict(probe))
