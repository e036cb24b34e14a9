"""The fair `mlflow models serve` baseline: a pyfunc that can score the flights model from JSON.

MLflow's xgboost flavor's pyfunc builds a DMatrix without ``enable_categorical`` and so rejects string
categoricals. This wrapper does what that pyfunc would need to: string columns become pandas categoricals with
the training vocabulary (from the model's feature schema), numbers become floats, and the booster predicts in
place on one thread, as the Flywheel service does.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

from mlflow.pyfunc.model import PythonModel


class CategoricalBooster(PythonModel):
    def load_context(self, context: Any) -> None:
        import xgboost as xgb

        self.booster = xgb.Booster()
        self.booster.load_model(context.artifacts["booster"])
        self.booster.set_param({"nthread": 1})
        schema = json.loads(Path(context.artifacts["feature_schema"]).read_text())
        self.columns: list[tuple[str, str, list[str] | None]] = [
            (c["name"], c["kind"], c.get("categories")) for c in schema["columns"]
        ]

    # no type hints on the inputs: MLflow 3 would read them as a schema of its own (the signature is logged);
    # it says so once with a UserWarning that its own warning set-up does not let a filter silence
    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        import numpy as np
        import pandas as pd

        frame = pd.DataFrame(index=model_input.index)
        for name, kind, categories in self.columns:
            if name not in model_input.columns:
                frame[name] = np.nan
                continue
            series = model_input[name]
            if kind == "categorical":
                frame[name] = pd.Categorical(series.where(series.notna(), None), categories=categories)
            else:
                frame[name] = pd.to_numeric(series, errors="coerce").astype("float64")
        return np.asarray(self.booster.inplace_predict(frame, validate_features=False), dtype="float64")


def log_wrapper(booster_path: Path, schema_path: Path, signature: Any, run_id: str) -> str:
    """Log the wrapper into ``run_id``; returns its model URI. The class travels as code (``code_paths``)."""
    import mlflow

    quiet = logging.getLogger("mlflow")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # the cloudpickle and missing-input-example notices: known, by design
    try:
        with warnings.catch_warnings(), mlflow.start_run(run_id=run_id):
            warnings.simplefilter("ignore", UserWarning)
            info = mlflow.pyfunc.log_model(
                name="pyfunc-wrapper",
                python_model=CategoricalBooster(),
                artifacts={"booster": str(booster_path), "feature_schema": str(schema_path)},
                signature=signature,
                code_paths=[str(Path(__file__).parent)],
                pip_requirements=["mlflow", "xgboost", "pandas", "numpy"],  # no environment inference
            )
    finally:
        quiet.setLevel(level)
    return str(info.model_uri)
