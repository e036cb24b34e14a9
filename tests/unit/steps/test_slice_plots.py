"""The slice plot shows the slices the gate judges (enough rows), with their row counts, and says how many
it left out; the metrics table keeps every slice; whole-number slice values read as integers."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.patches import Rectangle
from matplotlib.text import Text

from flywheel.contracts.problem import load_spec
from steps.model.evaluate import plotted_slices, slice_figure, slice_metrics, slice_values

SPEC = load_spec("flights")  # slices carrier, origin, month; roc_auc; promotion.min_slice_rows 500


def _traffic() -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """1,950 rows: carriers UA (900), DL (700), B6 (300, under the minimum), OO (50, under it too);
    month stored as floats with a gap, as it is after the weather join."""
    rng = np.random.default_rng(7)
    carriers = ["UA"] * 900 + ["DL"] * 700 + ["B6"] * 300 + ["OO"] * 50
    n = len(carriers)
    month = rng.choice([2.0, 10.0, 11.0], size=n, p=[0.05, 0.5, 0.45])
    month[:5] = np.nan
    frame = pd.DataFrame({"carrier": carriers, "origin": rng.choice(["EWR", "JFK"], size=n), "month": month})
    y = rng.integers(0, 2, size=n).astype("float64")
    p = np.clip(0.5 * y + rng.uniform(0, 0.6, size=n), 0, 1)
    return frame, y, p


def test_whole_number_slice_values_read_as_integers() -> None:
    months = slice_values(pd.Series([10.0, 11.0, np.nan]))
    assert list(months) == ["10", "11", "<missing>"]
    assert list(slice_values(pd.Series([1.5, 2.0]))) == ["1.5", "2.0"]  # a real fraction stays as it is
    assert list(slice_values(pd.Series(["UA", None], dtype="string"))) == ["UA", "<missing>"]


def test_the_table_keeps_every_slice_and_the_plot_only_those_with_enough_rows() -> None:
    frame, y, p = _traffic()
    table = slice_metrics(frame, y, p, SPEC)
    carriers = table[table["slice"] == "carrier"].set_index("value")["rows"].to_dict()
    assert carriers == {"UA": 900, "DL": 700, "B6": 300, "OO": 50}  # all of them, in the table
    assert set(table[table["slice"] == "month"]["value"]) == {"2", "10", "11", "<missing>"}

    shown, left_out = plotted_slices(table, SPEC.promotion.min_slice_rows)
    assert set(shown[shown["slice"] == "carrier"]["value"]) == {"UA", "DL"}
    months_shown = table[(table["slice"] == "month") & (table["rows"] >= 500)]
    assert left_out == {
        "carrier": 2,
        "origin": 0,
        "month": int((table["slice"] == "month").sum()) - len(months_shown),
    }

    figure = slice_figure(table, SPEC)
    axes = {ax.get_title().split(" (")[0]: ax for ax in figure.axes}
    assert set(axes) == {"roc_auc by carrier", "roc_auc by origin", "roc_auc by month"}
    carrier = axes["roc_auc by carrier"]
    assert "on each bar: its test rows; 2 values under 500 rows not shown" in carrier.get_title()
    assert len([b for b in carrier.patches if isinstance(b, Rectangle)]) == 2
    assert [t.get_text() for t in carrier.get_xticklabels()] == ["DL", "UA"]
    labels = {t.get_text() for t in carrier.texts if isinstance(t, Text)}
    assert {"900", "700"} <= labels  # each bar says its rows
    assert "not shown" not in axes["roc_auc by origin"].get_title()
    month_ticks = [t.get_text() for t in axes["roc_auc by month"].get_xticklabels()]
    assert month_ticks == sorted(month_ticks, key=int) and all("." not in m for m in month_ticks)


def test_a_slice_column_with_no_value_big_enough_says_so() -> None:
    frame, y, p = _traffic()
    small = frame.head(400)
    table = slice_metrics(small, y[:400], p[:400], SPEC)
    figure = slice_figure(table, SPEC)
    carrier = next(ax for ax in figure.axes if ax.get_title().startswith("roc_auc by carrier"))
    assert not carrier.patches
    assert any("no carrier value has 500 test rows" in t.get_text() for t in carrier.texts)
