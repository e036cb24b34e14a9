"""The whylogs data validator: profiles, constraints and drift scores behind one module.

whylogs 1.6.4 is the last release and is unmaintained upstream. It breaks on NumPy 2 through exactly one
removed alias, ``np.unicode_`` (whylogs issue #1600), so the alias is restored here before whylogs is imported
instead of pinning the whole stack to NumPy 1 (see README, "Dependencies"). Every other module goes through
this one, so replacing whylogs later touches a single file. Importing it is deferred to first use because it
costs about a second.
"""

from __future__ import annotations

import math
import os
import warnings
from typing import TYPE_CHECKING, Any

from flywheel.contracts.validation import CheckResult, ValidationReport
from stacks.config import Stack, WhylogsConfig

if TYPE_CHECKING:
    import pandas as pd
    from whylogs.core import DatasetProfileView

_WHYLOGS_READY = False


def _whylogs() -> Any:
    """Import whylogs once, with its analytics off and the NumPy 2 alias restored."""
    global _WHYLOGS_READY
    if not _WHYLOGS_READY:
        os.environ.setdefault("WHYLOGS_NO_ANALYTICS", "True")
        import numpy as np

        if not hasattr(np, "unicode_"):
            np.unicode_ = np.str_  # type: ignore[attr-defined]  # whylogs #1600, the only NumPy 2 break
        _vectorise_float_split()
        _WHYLOGS_READY = True
    import whylogs

    return whylogs


def _vectorise_float_split() -> None:
    """Split a float column with NumPy instead of one Python call per value; the same counts and arrays.

    whylogs tests every value of a float column for infinity with ``Series.apply(lambda x: np.isinf(x))``:
    a Python call per value, more than half of the time it takes to profile numeric data (batch scoring
    profiles a sample of every chunk; ingest profiles every row). For a NumPy float column, missing
    values are NaN, so whylogs' own rules give: nulls = NaNs = ``isnan``, infinities = ``isinf`` of the
    rest, floats = the rest. Every other dtype keeps whylogs' own code.
    """
    import numpy as np
    from whylogs.core.preprocessing import PreprocessedColumn

    original = PreprocessedColumn._pandas_split
    if getattr(original, "_flywheel_vectorised", False):
        return

    def split(self: Any, series: Any, parse_numeric_string: bool = False) -> None:
        dtype = getattr(series, "dtype", None)
        if not (isinstance(dtype, np.dtype) and dtype.kind == "f"):
            return original(self, series, parse_numeric_string)  # type: ignore[no-any-return]
        values = series.to_numpy(dtype="float64")
        missing = np.isnan(values)
        floats = values[~missing]
        self.null_count = int(missing.sum())
        if self.null_count:
            self.nan_count = self.null_count
        self.inf_count = int(np.isinf(floats).sum())
        self.numpy.floats = floats
        return None

    split._flywheel_vectorised = True  # type: ignore[attr-defined]
    PreprocessedColumn._pandas_split = split


class WhylogsValidator:
    """Profiles data sets and compares profiles with the thresholds of a stack's data_validator config.

    The thresholds and their defaults belong to the configuration model (``WhylogsConfig``), validated
    and bounded there; the validator takes one, so no default is written twice.
    """

    def __init__(self, config: WhylogsConfig | None = None) -> None:
        self.config = config if config is not None else WhylogsConfig()
        self.drift_algorithm = self.config.drift_algorithm
        self.drift_threshold = self.config.drift_threshold
        self.max_nan_fraction = self.config.max_nan_fraction
        self.min_rows = self.config.min_rows
        self.min_minority_fraction = self.config.min_minority_fraction

    @classmethod
    def from_stack(cls, stack: Stack) -> WhylogsValidator:
        return cls(stack.data_validator_config())

    # profiles -------------------------------------------------------------------------------------------
    def profile(self, frame: pd.DataFrame) -> DatasetProfileView:
        why = _whylogs()
        return why.log(pandas=_profilable(frame)).profile().view()

    @staticmethod
    def to_bytes(view: DatasetProfileView) -> bytes:
        data: bytes = view.serialize()
        return data

    @staticmethod
    def from_bytes(data: bytes) -> DatasetProfileView:
        _whylogs()
        from whylogs.core import DatasetProfileView

        return DatasetProfileView.deserialize(data)

    @staticmethod
    def merge(views: list[DatasetProfileView]) -> DatasetProfileView:
        merged = views[0]
        for view in views[1:]:
            merged = merged.merge(view)
        return merged

    @staticmethod
    def missing_fractions(view: DatasetProfileView) -> dict[str, float]:
        """Each profiled column's fraction of missing values (whylogs counts NaN among nulls)."""
        summary = view.to_pandas()
        out: dict[str, float] = {}
        for column, row in summary.iterrows():
            count = float(row.get("counts/n", 0) or 0)
            if count:
                out[str(column)] = float(row.get("counts/null", 0) or 0) / count
        return out

    # constraints ----------------------------------------------------------------------------------------
    def check_profile(
        self,
        view: DatasetProfileView,
        *,
        dataset: str,
        rows: int,
        nan_limits: dict[str, float],
        ranges: dict[str, tuple[float | None, float | None]],
        label: str | None = None,
    ) -> ValidationReport:
        """Run whylogs constraints for NaN fractions, value ranges and label balance on a profile."""
        _whylogs()
        from whylogs.core.constraints import ConstraintsBuilder
        from whylogs.core.constraints.factories import (
            is_in_range,
            mean_between_range,
            null_percentage_below_number,
        )

        report = ValidationReport(dataset=dataset, rows=rows)
        passed_rows = rows >= self.min_rows
        report.results.append(
            CheckResult("row count", "*", passed_rows, f"{rows:,} rows (minimum {self.min_rows:,})")
        )
        columns = view.get_columns()
        summary = view.to_pandas()
        checks: list[tuple[str, str, str, Any]] = []
        for column, limit in nan_limits.items():
            if column in columns:
                constraint = null_percentage_below_number(column_name=column, number=limit)
                checks.append(("missing values", column, f"at most {limit:.1%} missing", constraint))
        for column, (low, high) in ranges.items():
            if column in columns:
                lower = -math.inf if low is None else low
                upper = math.inf if high is None else high
                constraint = is_in_range(column_name=column, lower=lower, upper=upper)
                checks.append(("value range", column, f"values within [{lower}, {upper}]", constraint))
        if label is not None and label in columns:
            low, high = self.min_minority_fraction, 1.0 - self.min_minority_fraction
            constraint = mean_between_range(column_name=label, lower=low, upper=high)
            checks.append(
                ("label balance", label, f"positive rate within [{low:.1%}, {high:.1%}]", constraint)
            )
        for name, column, expectation, constraint in checks:
            # one builder per constraint: whylogs reports results grouped by column, not in insertion order
            builder = ConstraintsBuilder(dataset_profile_view=view)
            builder.add_constraint(constraint)
            (outcome,) = builder.build().generate_constraints_report()
            report.results.append(
                CheckResult(name, column, bool(outcome.passed), _observed(summary, column, name, expectation))
            )
        return report

    # drift ----------------------------------------------------------------------------------------------
    def drift_scores(
        self, reference: DatasetProfileView, target: DatasetProfileView
    ) -> dict[str, dict[str, Any]]:
        """Per-column drift, scored with the stack's algorithm (Hellinger by default: an effect size)."""
        _whylogs()
        from whylogs.viz.drift.column_drift_algorithms import calculate_drift_scores

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scores = calculate_drift_scores(
                target_view=target,
                reference_view=reference,
                drift_map=_drift_map(self.drift_algorithm, reference),
                with_thresholds=True,
            )
        result: dict[str, dict[str, Any]] = {}
        for column, score in scores.items():
            if not score and self.drift_algorithm == "hellinger":
                score = _discrete_hellinger(reference, target, column)
            if not score:
                continue
            statistic = float(score.get("statistic", math.nan))
            result[column] = {
                "algorithm": score.get("algorithm"),
                "statistic": statistic,
                "drifted": bool(statistic >= self.drift_threshold)
                if self.drift_algorithm == "hellinger"
                else score.get("drift_category") == "DRIFT",
            }
        return result


def _profilable(frame: pd.DataFrame, text: str = "object") -> pd.DataFrame:
    """whylogs does not understand pandas categoricals: profile their values as strings.

    ``text="str"`` keeps them in pandas' string dtype instead of objects: whylogs then takes its vectorised
    path for a string column rather than six per-value type checks, for the same statistics.
    """
    import pandas as pd

    out = frame.copy(deep=False)
    for name in out.columns:
        dtype = out[name].dtype
        is_string = pd.api.types.is_string_dtype(dtype) and not pd.api.types.is_object_dtype(dtype)
        if isinstance(dtype, pd.CategoricalDtype) or (is_string and text == "object"):
            out[name] = out[name].astype(text)
    return out


class ProfileAccumulator:
    """One profile fed frame after frame: the statistics of profiling each frame and merging the views,
    without building a profile, a view and a merge per frame (batch scoring profiles a sample of every
    chunk, and whylogs' fixed cost per call is a quarter of a 5,000-row profile)."""

    def __init__(self) -> None:
        _whylogs()
        from whylogs.core import DatasetProfile

        self._profile = DatasetProfile()
        self.rows = 0

    def track(self, frame: pd.DataFrame) -> None:
        self._profile.track(pandas=_profilable(frame, text="str"))
        self.rows += len(frame)

    def view(self) -> DatasetProfileView:
        return self._profile.view()


def _observed(summary: pd.DataFrame, column: str, name: str, expectation: str) -> str:
    """Describe what the profile saw next to what was expected, so a failure reads as a diagnosis."""
    if column not in summary.index:
        return expectation
    row = summary.loc[column]
    count = float(row.get("counts/n", 0) or 0)
    nulls = float(row.get("counts/null", 0) or 0)  # whylogs counts NaN among nulls too
    if name == "missing values":
        frac = nulls / count if count else 1.0
        return f"{expectation}; observed {frac:.1%} ({int(nulls):,} of {int(count):,})"
    if name == "value range":
        lo, hi = row.get("distribution/min"), row.get("distribution/max")
        return f"{expectation}; observed range [{_fmt(lo)}, {_fmt(hi)}]"
    if name == "label balance":
        return f"{expectation}; observed positive rate {_fmt(row.get('distribution/mean'))}"
    return expectation


def _fmt(value: Any) -> str:
    try:
        return f"{float(value):.4g}"
    except (TypeError, ValueError):
        return str(value)


def _drift_map(algorithm: str, reference: DatasetProfileView) -> dict[str, Any] | None:
    """Hellinger for every column (an effect size); None keeps whylogs' p-value tests (KS, chi-square)."""
    if algorithm != "hellinger":
        return None
    from whylogs.viz.drift.column_drift_algorithms import Hellinger

    return {column: Hellinger() for column in reference.get_columns()}


def _discrete_hellinger(
    reference: DatasetProfileView, target: DatasetProfileView, column: str
) -> dict[str, Any] | None:
    """Hellinger distance between frequent-item distributions, for the string columns whylogs skips.

    Items outside both top-k lists are pooled into one "other" bucket so the two PMFs each sum to one.
    """
    from whylogs.viz.utils.frequent_items_calculations import get_frequent_stats

    ref_column, tgt_column = reference.get_column(column), target.get_column(column)
    if ref_column is None or tgt_column is None:
        return None
    ref_stats = get_frequent_stats(ref_column, config=None)
    tgt_stats = get_frequent_stats(tgt_column, config=None)
    if not ref_stats or not tgt_stats or not ref_stats["total_count"] or not tgt_stats["total_count"]:
        return None

    def pmf(stats: Any) -> dict[str, float]:
        total = float(stats["total_count"])
        return {str(item["value"]): float(item["estimate"]) / total for item in stats["frequent_items"]}

    ref_pmf, tgt_pmf = pmf(ref_stats), pmf(tgt_stats)
    keys = sorted(set(ref_pmf) | set(tgt_pmf))
    p = [ref_pmf.get(k, 0.0) for k in keys]
    q = [tgt_pmf.get(k, 0.0) for k in keys]
    p.append(max(0.0, 1.0 - sum(p)))
    q.append(max(0.0, 1.0 - sum(q)))
    distance = math.sqrt(
        sum((math.sqrt(a) - math.sqrt(b)) ** 2 for a, b in zip(p, q, strict=True))
    ) / math.sqrt(2)
    return {"algorithm": "hellinger", "statistic": min(1.0, distance)}
