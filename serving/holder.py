"""The served model and its hot swap.

``current`` is one reference, replaced in a single assignment once a new version is loaded and warmed up,
so a request sees either the old model or the new one, never half of each. A version that fails to load
leaves the old one serving; the failure is counted on /metrics and logged, and retried after a back-off.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
from pydantic import BaseModel

from serving.columns import BatchReader
from serving.encoding import RowEncoder
from serving.metrics import ServiceMetrics
from serving.predictor import InplacePredictor
from serving.schemas import batch_model, columns_model, record_model
from stacks.components.model_registry import LoadedModel, alias_version, load_model

log = logging.getLogger("flywheel.serving")


@dataclass
class Served:
    """A loaded model plus what a request needs from it, built once per version."""

    model: LoadedModel
    encoder: RowEncoder
    record: type[BaseModel]
    batch: type[BaseModel]
    columns: type[BaseModel]
    reader: BatchReader
    predictor: InplacePredictor

    @property
    def version(self) -> str:
        return self.model.version

    @cached_property
    def categories(self) -> dict[str, list[str]]:
        """Vocabulary of each categorical feature, for the traffic profiles (decoded off the request path)."""
        return {c.name: c.categories or [] for c in self.model.schema.columns if c.kind == "categorical"}

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        return self.predictor(matrix)


def prepare(model: LoadedModel, max_batch_size: int) -> Served:
    """Build encoder and request models, and warm the booster up so the first request is not slow."""
    model.booster.set_param({"nthread": 1})  # one row at a time: threads cost more than they give
    record = record_model(model.schema)
    served = Served(
        model,
        RowEncoder(model.schema),
        record,
        batch_model(record, max_batch_size),
        columns_model(model.schema, max_batch_size),
        BatchReader(model.schema, max_batch_size),
        InplacePredictor(model.booster),
    )
    warm = np.zeros((8, len(model.schema.columns)), dtype=np.float32)
    for _ in range(3):
        served.predict(warm[:1])
        served.predict(warm)
    return served


class ModelHolder:
    def __init__(self, model_name: str, metrics: ServiceMetrics, max_batch_size: int) -> None:
        self.model_name = model_name
        self.metrics = metrics
        self.max_batch_size = max_batch_size
        self.current: Served | None = None
        self.last_error: str | None = None
        self._failed: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def load(self, version: str) -> Served:
        served = prepare(load_model(self.model_name, version), self.max_batch_size)
        self.current = served  # the swap: one reference assignment
        self.metrics.serving(self.model_name, served.version)
        self.metrics.model_loads.labels(outcome="loaded").inc()
        self.last_error = None
        log.info("serving %s v%s", self.model_name, served.version)
        return served

    def refresh(self, retry_after_s: float = 60.0) -> bool:
        """Load the champion if the alias moved; True when a new version is now served."""
        version = alias_version(self.model_name)
        if version is None or (self.current is not None and version == self.current.version):
            return False
        failed_at = self._failed.get(version)
        if failed_at is not None and time.monotonic() - failed_at < retry_after_s:
            return False
        try:
            self.load(version)
        except Exception as exc:  # any failure must keep the old model serving
            self._failed[version] = time.monotonic()
            self.last_error = f"v{version}: {type(exc).__name__}: {exc}"
            self.metrics.model_loads.labels(outcome="failed").inc()
            log.error(
                "could not load %s v%s, still serving %s: %s",
                self.model_name,
                version,
                "nothing" if self.current is None else f"v{self.current.version}",
                exc,
            )
            return False
        self._failed.pop(version, None)
        return True

    def start_watching(self, interval_s: float) -> None:
        def loop() -> None:
            while not self._stop.wait(interval_s):
                try:
                    self.refresh()
                except Exception as exc:  # the registry may be briefly unreachable
                    log.warning("champion check failed: %s", exc)

        self._thread = threading.Thread(target=loop, name="champion-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def info(self) -> dict[str, Any]:
        if self.current is None:
            return {"name": self.model_name, "version": None, "last_error": self.last_error}
        return {**self.current.model.info(), "last_error": self.last_error}
