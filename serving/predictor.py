"""XGBoost's in-place prediction on a dense float32 matrix, the wrapper's per-call set-up done once.

``Booster.inplace_predict`` is a thin wrapper over one C function, ``XGBoosterPredictFromDense``, but on
every call it re-checks which of a dozen input types it was given, JSON-encodes its arguments and the
array's interface, and builds a class to wrap the output. For the one-row requests of online serving that
is over half of the call: in a tight loop 132 vs 70 us a row for a 40-tree depth-8 model (311 vs 178 us
for 150 trees), and inside the loaded service, where every cache is cold, 288 vs 121 us. The service
always passes the same kind of input (a float32 matrix of the booster's own codes), so it calls the same
C function through XGBoost's own ctypes binding with the arguments encoded once.

The binding is not public API. It is checked once per model against ``inplace_predict`` on probe rows;
if it is missing (another XGBoost) or disagrees, the public wrapper is used and the reason logged.
"""

from __future__ import annotations

import ctypes
import json
import logging
from typing import Any

import numpy as np
import xgboost as xgb

log = logging.getLogger("flywheel.serving")

_INTERFACE = '{"data":[%d,true],"shape":[%d,%d],"strides":null,"typestr":"<f4","version":3}'


class InplacePredictor:
    """Predicts rows of a float32 matrix with ``booster``; returns float64 values, one per row (a row of
    class probabilities per row for a multiclass model)."""

    def __init__(self, booster: xgb.Booster) -> None:
        self.booster = booster
        self.direct = False
        try:
            self._lib_call, self._check_call, self._ulong = _binding()
            args = {
                "type": 0,
                "training": False,
                "iteration_begin": 0,
                "iteration_end": 0,
                "missing": float("nan"),
                "strict_shape": False,
                "cache_id": 0,
            }
            self._args = json.dumps(args).encode()
            self.direct = self._agrees(booster.num_features())
        except Exception as exc:  # any other XGBoost: the public method still works
            log.warning("in-place predict through the public wrapper (%s: %s)", type(exc).__name__, exc)

    def __call__(self, matrix: np.ndarray) -> np.ndarray:
        return self._direct(matrix) if self.direct else self.public(matrix)

    def _direct(self, matrix: np.ndarray) -> np.ndarray:
        data = np.ascontiguousarray(matrix, dtype=np.float32)
        rows, columns = data.shape
        interface = (_INTERFACE % (data.ctypes.data, rows, columns)).encode()
        predictions = ctypes.POINTER(ctypes.c_float)()
        shape = ctypes.POINTER(self._ulong)()
        dims = self._ulong()
        self._check_call(
            self._lib_call(
                self.booster.handle,
                interface,
                self._args,
                ctypes.c_void_p(),
                ctypes.byref(shape),
                ctypes.byref(dims),
                ctypes.byref(predictions),
            )
        )
        size = 1
        for i in range(dims.value):
            size *= shape[i]
        if size == rows:
            # the buffer belongs to the booster (reused by the next call on this thread): copy it out
            return np.ctypeslib.as_array(predictions, shape=(rows,)).astype(np.float64)
        if not rows or size % rows:
            raise ValueError(f"{size} predictions for {rows} rows")
        # multi:softprob: one probability per class, row after row
        return (
            np.ctypeslib.as_array(predictions, shape=(size,)).astype(np.float64).reshape(rows, size // rows)
        )

    def public(self, matrix: np.ndarray) -> np.ndarray:
        return np.asarray(self.booster.inplace_predict(matrix, validate_features=False), dtype=np.float64)

    def _agrees(self, features: int) -> bool:
        """The direct call against the public one on probe rows: missing values, zeros, small codes."""
        probe = np.zeros((4, features), dtype=np.float32)
        probe[0] = np.nan
        probe[2] = 1.0
        probe[3] = np.arange(features, dtype=np.float32) % 3
        for rows in (probe[:1], probe):
            if not np.allclose(self._direct(rows), self.public(rows), rtol=1e-6, atol=1e-7):
                log.warning("direct in-place predict disagrees with the wrapper: using the wrapper")
                return False
        return True


def _binding() -> tuple[Any, Any, Any]:
    """XGBoost's ctypes function for dense in-place prediction, its error check and its size type."""
    from xgboost.core import _LIB, _check_call, c_bst_ulong

    return _LIB.XGBoosterPredictFromDense, _check_call, c_bst_ulong
