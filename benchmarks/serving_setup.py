"""The serving benchmark's model and in-process figures: a realistic champion trained and registered with the
steps directly (as tests/unit/serving/conftest.py does, bigger), request bodies from its test rows, and the
in-process floor (the booster alone, then the service's own request path without HTTP)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


@dataclass
class Trained:
    spec: Any
    sample_rows: int
    dataset: Any
    parts: Any
    booster: Any
    profile: bytes
    seconds: float


@dataclass
class Registered:
    version: str
    run_id: str
    seconds: float


def train_model(train_rows: int, rounds: int, max_depth: int, seed: int) -> Trained:
    """A flights booster on ``train_rows`` sampled flights (the whole year), fixed parameters."""
    from flywheel.contracts.problem import load_spec
    from stacks.components.data_validator import WhylogsValidator
    from steps.data.features import build_dataset
    from steps.data.sources import read_source
    from steps.data.split import split
    from steps.model import reference, train
    from steps.model.xgb import base_params

    started = time.perf_counter()
    spec = load_spec("flights")
    flights = read_source(spec.source)
    weather = read_source(spec.joins[0].source)
    sample = (
        flights.sample(n=min(train_rows, len(flights)), random_state=1).sort_index().reset_index(drop=True)
    )
    dataset = build_dataset(sample, spec, {"weather": weather})
    parts = split(dataset, spec)
    params = {
        **base_params(spec, n_jobs=2, seed=seed),
        "max_depth": max_depth,
        "eta": 0.1,
        "subsample": 0.8,
        "colsample_bytree": 0.8,
    }
    booster = train.train(parts.train, params, rounds)
    profile = reference.training_profile(booster, parts.train, WhylogsValidator(), parts.test)
    return Trained(spec, len(sample), dataset, parts, booster, profile, time.perf_counter() - started)


def register_model(trained: Trained, *, promote: bool, reason: str) -> Registered:
    """Register ``trained`` in FLYWHEEL_HOME's MLflow; with ``promote`` through the real promotion step."""
    from mlflow import MlflowClient

    from steps.data.ingest import Snapshot
    from steps.model import promote as promotion
    from steps.model import register, track
    from steps.model.evaluate import score
    from steps.model.xgb import predict

    started = time.perf_counter()
    spec, parts = trained.spec, trained.parts
    run_id = track.start_run("flywheel", spec, {"flywheel.bench": "serving"})
    snapshot = Snapshot(
        "b" * 32, spec.source, "file:///bench", "file:///bench", trained.sample_rows, [], "now"
    )
    registered = register.register(
        trained.booster,
        run_id=run_id,
        model_name=spec.model_name,
        schema=trained.dataset.schema,
        example=register.input_example(parts.test.frame, trained.dataset.schema),
        training_profile=trained.profile,
        lineage=track.lineage_tags(snapshot, {}, reason),
        threshold=0.3,
    )
    test_p = predict(trained.booster, parts.test.X)
    for key, value in score(parts.test.y.to_numpy(), test_p, "binary").items():
        MlflowClient().log_metric(run_id, f"test.{key}", value)
    if promote:
        promotion.promote(spec, registered.version, test_p, parts.test)
    track.finish_run(run_id, {}, 0.0, "FINISHED")
    return Registered(registered.version, run_id, time.perf_counter() - started)


def json_records(frame: pd.DataFrame, rows: int) -> list[dict[str, Any]]:
    """JSON-ready request records (categoricals as strings, missing as null), tiled up to ``rows``."""
    out = frame.astype(object).where(frame.notna(), None)
    records = out.to_dict("records")
    while len(records) < rows:
        records = records + records
    return [
        {str(k): (v if v is None or isinstance(v, str) else float(v)) for k, v in r.items()}
        for r in records[:rows]
    ]


def complete_record(frame: pd.DataFrame) -> dict[str, Any]:
    """The first test row without a missing value: a typical single request."""
    full = frame[frame.notna().all(axis=1)]
    return json_records(full.head(1) if len(full) else frame.head(1), 1)[0]


def per_call(fn: Callable[[], object], calls: int, repeats: int) -> float:
    """Median over ``repeats`` of the mean seconds per call over ``calls`` calls (after one warm-up)."""
    fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - started) / calls)
    return statistics.median(times)


@dataclass
class Floor:
    rows: list[dict[str, Any]]
    service_path: list[dict[str, Any]]
    seconds: dict[int, float]
    predictions_1000: np.ndarray


def in_process(model_name: str, version: str, records: list[dict[str, Any]], quick: bool) -> Floor:
    """The booster alone on the service's float32 code matrix (nthread=1), through XGBoost's public
    ``inplace_predict`` and through the service's direct call of the same C function, then the service's
    request path (JSON decode, validation, encoding, predict, JSON encode) in process: what HTTP adds is
    the rest."""
    import orjson

    from serving.holder import prepare
    from stacks.components.model_registry import load_model

    served = prepare(load_model(model_name, version), 1000)  # the service's own preparation: nthread=1
    matrix = served.encoder.encode(records)
    repeats = 3 if quick else 7
    plan = {1: 300 if quick else 1000, 1000: 20 if quick else 50, 10_000: 3 if quick else 10}
    seconds: dict[int, float] = {}
    rows = []
    public = served.predictor.public  # XGBoost's own Booster.inplace_predict: the floor
    for n, calls in plan.items():
        part = np.ascontiguousarray(matrix[:n])
        seconds[n] = per_call(lambda part=part: public(part), calls, repeats)  # type: ignore[misc]
        direct = per_call(lambda part=part: served.predict(part), calls, repeats)  # type: ignore[misc]
        rows.append(
            {
                "rows": n,
                "ms_per_call": seconds[n] * 1000,
                "us_per_row": seconds[n] * 1e6 / n,
                "rows_per_s": n / seconds[n],
                "service_call_ms": direct * 1000,  # the service's call: the same C function, set up once
            }
        )

    def stages(batch: list[dict[str, Any]]) -> dict[str, float]:
        """The service's own steps: a single record through the request model and the row encoder, a batch
        through the column-wise reader (validation and encoding in one pass)."""
        body = orjson.dumps({"records": batch} if len(batch) > 1 else batch[0])
        payload = orjson.loads(body)

        def validate_encode() -> np.ndarray:
            if len(batch) > 1:
                checked = served.reader.from_records(payload)
                if checked is None:
                    raise RuntimeError("the benchmark batch missed the service's fast path")
                return checked
            return served.encoder.encode([served.record.model_validate(payload).__dict__])

        m = validate_encode()
        p = served.predict(m)

        def respond() -> bytes:
            values = p.tolist()
            items = [
                {"prediction": v, "decision": d} for v, d in zip(values, (p >= 0.3).tolist(), strict=True)
            ]
            return orjson.dumps({"request_id": "x", "model_version": version, "predictions": items})

        calls = 500 if len(batch) == 1 else 20
        if quick:
            calls //= 5
        return {
            "decode": per_call(lambda: orjson.loads(body), calls, repeats),
            "validate_encode": per_call(validate_encode, calls, repeats),
            "predict": per_call(lambda: served.predict(m), calls, repeats),
            "respond": per_call(respond, calls, repeats),
        }

    service_path = []
    for n in (1, 1000):
        parts = stages(records[:n])
        total = sum(parts.values())
        service_path.append(
            {
                "rows": n,
                **{f"{k}_ms": v * 1000 for k, v in parts.items()},
                "total_ms": total * 1000,
                "predict_share": parts["predict"] / total,
            }
        )
    return Floor(rows, service_path, seconds, served.predict(np.ascontiguousarray(matrix[:1000])))


def save_booster_and_schema(trained: Trained, folder: Path) -> tuple[Path, Path]:
    import json

    folder.mkdir(parents=True, exist_ok=True)
    booster_path = folder / "model.ubj"
    trained.booster.save_model(str(booster_path))
    schema_path = folder / "feature_schema.json"
    schema_path.write_text(json.dumps(trained.dataset.schema.to_dict()))
    return booster_path, schema_path


def flow_input(
    model_name: str, version: str, sample_rows: int | None
) -> tuple[Any, pd.DataFrame, pd.DataFrame]:
    """The batch flow's own model and encoded rows, rebuilt the way the flow builds them (same seed)."""
    from flywheel.contracts.problem import load_spec
    from stacks.components.model_registry import load_model
    from steps.data import features
    from steps.data.sources import read_source

    spec = load_spec("flights")
    model = load_model(model_name, version)
    raw = read_source(spec.source)
    if sample_rows is not None and sample_rows < len(raw):
        raw = raw.sample(n=sample_rows, random_state=42).sort_index().reset_index(drop=True)
    weather = read_source(spec.joins[0].source)
    derived = features.derive(raw, spec, {"weather": weather})
    return model, raw, features.encode(derived, model.schema)


def raw_throughput(model: Any, encoded: pd.DataFrame, chunk_rows: int, repeats: int) -> dict[str, float]:
    """In-place predict alone over the flow's rows, in the flow's chunks, with the flow's booster settings."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        for start in range(0, len(encoded), chunk_rows):
            model.booster.inplace_predict(encoded.iloc[start : start + chunk_rows], validate_features=False)
        times.append(time.perf_counter() - started)
    seconds = statistics.median(times)
    return {"seconds": seconds, "rows_per_s": len(encoded) / seconds}


def score_direct(model: Any, encoded: pd.DataFrame, chunk_rows: int) -> dict[str, float]:
    """The flow's score step called directly on the same rows, no Prefect: its own predict and total times
    (the rest is writing Parquet parts and profiling)."""
    from stacks.components.artifact_store import ArtifactStore
    from stacks.components.data_validator import WhylogsValidator
    from stacks.loader import load_stack
    from steps.inference.score import score_chunks

    stack = load_stack("local")
    result = score_chunks(
        model,
        encoded,
        ArtifactStore.from_stack(stack),
        WhylogsValidator.from_stack(stack),
        "bench/score-direct",
        chunk_rows=chunk_rows,
    )
    return {
        "predict": result.predict_seconds,
        "write and profile": result.total_seconds - result.predict_seconds,
        "total": result.total_seconds,
    }


def code_matrix(encoded: pd.DataFrame) -> np.ndarray:
    """The float32 matrix the service builds: categories as their codes, missing as NaN."""
    columns = []
    for name in encoded.columns:
        series = encoded[name]
        if isinstance(series.dtype, pd.CategoricalDtype):
            codes = series.cat.codes.to_numpy().astype(np.float32)
            codes[codes < 0] = np.nan
            columns.append(codes)
        else:
            columns.append(series.to_numpy(dtype=np.float32))
    return np.ascontiguousarray(np.column_stack(columns))
