"""One measurement of the scale benchmark, alone in a fresh process (``python -m benchmarks.scale_child``).

A fresh process per configuration, so one measurement's allocations (pandas, XGBoost, whylogs caches)
never inflate the next one's peak. Memory is the resident set of the whole process tree (this process
plus a LocalCluster's nanny and worker processes), sampled every 20 ms; ``ru_maxrss`` alone would miss the
workers. The last line printed is the result as JSON.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import psutil


class TreeRss:
    """Peak resident memory of this process and all its descendants, sampled in a thread."""

    def __init__(self, every_s: float = 0.02) -> None:
        self.every_s = every_s
        self.peak_total = 0
        self.peak_self = 0
        self.start_total = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        me = psutil.Process()
        own = me.memory_info().rss
        total = own
        for child in me.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:
                continue  # a worker that just exited
        self.peak_self = max(self.peak_self, own)
        self.peak_total = max(self.peak_total, total)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.every_s)

    def __enter__(self) -> TreeRss:
        self._sample()
        self.start_total = self.peak_total
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def _cluster(engine: str, workers: int) -> AbstractContextManager[Any]:
    if engine != "dask":
        return nullcontext(None)
    from distributed import Client, LocalCluster

    class Both:
        def __enter__(self) -> Any:
            self.cluster = LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=None)
            self.client = Client(self.cluster)
            self.client.wait_for_workers(workers)
            return self.client

        def __exit__(self, *exc: object) -> None:
            self.client.close()
            self.cluster.close()

    return Both()


def _warm(client: Any) -> None:
    """Import what the work needs on every worker first, so start-up is not counted as work."""

    def imports() -> None:
        import pandas  # noqa: F401
        import whylogs  # noqa: F401
        import xgboost  # noqa: F401

        import steps.inference.score_dask  # noqa: F401

    client.run(imports)


def _schema(path: Path) -> Any:
    from flywheel.contracts.schema import FeatureSchema

    return FeatureSchema.from_dict(json.loads(path.read_text()))


def train(job: dict[str, Any], client: Any) -> dict[str, Any]:
    """Read the encoded training rows and fit the fixed parameters for the fixed rounds."""
    import pandas as pd

    schema = _schema(Path(job["schema"]))
    started = time.perf_counter()
    if client is None:
        from steps.data.features import Dataset
        from steps.model.train import train as fit

        frame = pd.read_parquet(job["data"])
        read_s = time.perf_counter() - started
        booster = fit(Dataset(frame, schema), job["params"], job["rounds"])
    else:
        import dask
        import dask.dataframe as dd

        from steps.model import train_dask

        with dask.config.set({"dataframe.convert-string": False}):
            ddf = dd.read_parquet(job["data"], split_row_groups=True)
        categories = {
            c.name: pd.CategoricalDtype(c.categories) for c in schema.columns if c.kind == "categorical"
        }
        ddf = ddf.astype(categories)  # known categories: the vocabulary the pandas path encodes with
        read_s = 0.0  # lazy: the workers read while the matrix is built
        booster = train_dask.train(client, ddf, schema.names, schema.label, job["params"], job["rounds"])
    return {"seconds": time.perf_counter() - started, "read_s": read_s, "trees": booster.num_boosted_rounds()}


def score(job: dict[str, Any], client: Any) -> dict[str, Any]:
    """Score the raw rows the way the batch flow does: features, in-place predict, Parquet parts, profile."""
    import pandas as pd
    import xgboost as xgb

    from flywheel.contracts.problem import load_spec
    from stacks.components.artifact_store import ArtifactStore
    from stacks.components.data_validator import WhylogsValidator
    from stacks.components.model_registry import LoadedModel
    from steps.data import features

    spec = load_spec("flights")
    booster = xgb.Booster()
    booster.load_model(job["model"])
    model = LoadedModel("bench", "1", "-", booster, _schema(Path(job["schema"])), 0.5, "binary", "-")
    joined = {"weather": pd.read_parquet(job["weather"])}
    store = ArtifactStore(job["output"])
    validator = WhylogsValidator()
    started = time.perf_counter()
    if client is None:
        from steps.inference.score import score_chunks

        raw = pd.read_parquet(job["data"])
        encoded = features.encode(features.derive(raw, spec, joined), model.schema)
        result = score_chunks(model, encoded, store, validator, "pandas", chunk_rows=job["partition_rows"])
    else:
        from steps.inference.score_dask import read_snapshot, score_partitions

        ddf = read_snapshot(job["data"])
        result = score_partitions(client, model, ddf, spec, joined, store, validator, "dask")
    return {"seconds": time.perf_counter() - started, "rows": result.rows, "parts": len(result.parts)}


def main(job: dict[str, Any]) -> dict[str, Any]:
    work = {"train": train, "score": score}[job["kind"]]
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    with _cluster(job["engine"], job.get("workers", 2)) as client:
        startup_s = time.perf_counter() - started
        if client is not None:
            _warm(client)
        with TreeRss() as rss:
            out = work(job, client)
    return {
        **out,
        "startup_s": startup_s,
        "peak_rss_mb": rss.peak_total / 2**20,
        "start_rss_mb": rss.start_total / 2**20,
        "peak_driver_rss_mb": rss.peak_self / 2**20,
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
    }


if __name__ == "__main__":
    result = main(json.loads(sys.argv[1]))
    print(json.dumps(result), flush=True)
