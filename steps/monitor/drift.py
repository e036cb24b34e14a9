"""Drift of each serving window against the training reference, per feature and on the predictions.

Effect sizes (Hellinger distance by default), not p-values: with tens of thousands of rows a p-value test
flags nearly every column between two months of flights, target included (measured on the 2013 flights).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from stacks.components.data_validator import WhylogsValidator


def window_drift(
    reference: Any, windows: dict[str, Any], validator: WhylogsValidator, columns: list[str]
) -> pd.DataFrame:
    """One row per (window, column): statistic, drifted, rows; columns missing from a window are reported."""
    rows: list[dict[str, Any]] = []
    for name, view in windows.items():
        scores = validator.drift_scores(reference, view)
        summary = view.to_pandas()
        present = set(view.get_columns())
        for column in columns:
            count = int(summary.loc[column, "counts/n"]) if column in summary.index else 0
            if column not in present:
                rows.append(
                    {
                        "window": name,
                        "column": column,
                        "statistic": float("nan"),
                        "drifted": False,
                        "rows": 0,
                        "note": "missing from the window",
                    }
                )
                continue
            score = scores.get(column)
            if score is None:
                rows.append(
                    {
                        "window": name,
                        "column": column,
                        "statistic": float("nan"),
                        "drifted": False,
                        "rows": count,
                        "note": "not comparable",
                    }
                )
                continue
            rows.append(
                {
                    "window": name,
                    "column": column,
                    "statistic": score["statistic"],
                    "drifted": bool(score["drifted"]),
                    "rows": count,
                    "note": "",
                }
            )
    return pd.DataFrame(rows, columns=["window", "column", "statistic", "drifted", "rows", "note"])
