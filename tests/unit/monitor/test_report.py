"""The monitoring report as a reader gets it: a real HTML page (headings, tables, an inline heatmap sized to
its windows), the same summary line as the Markdown artifact, formatted numbers, no reprs."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest

from flywheel.contracts import layout
from steps.monitor import report
from steps.monitor.policy import RetrainPolicy, decide

NOW = datetime(2026, 12, 1, 15, tzinfo=UTC)
POLICY = RetrainPolicy(n_windows=3, of_last=4, min_window_rows=100, min_labels=1000)
COLUMNS = ["temp", "month", "carrier", "prediction"]


def drift_table(n: int, drifting_every: int = 3) -> pd.DataFrame:
    rows = []
    for i in range(n):
        name = layout.window_name(NOW + timedelta(minutes=5 * i))
        for column in COLUMNS:
            moved = i % drifting_every == 0 and column in ("temp", "month")
            rows.append(
                {
                    "window": name,
                    "column": column,
                    "statistic": 0.4 if moved else 0.03,
                    "drifted": moved,
                    "rows": 1500,
                    "note": "",
                }
            )
    return pd.DataFrame(rows)


def labelled(version_offset: float, n: int = 600) -> pd.DataFrame:
    rng = np.random.default_rng(int(version_offset))
    label = rng.integers(0, 2, n).astype(float)
    prediction = (0.3 * label + rng.uniform(0, 0.7, n)).clip(0, 1)
    ts = NOW.timestamp() + version_offset + np.linspace(0, 3 * 3600, n)
    return pd.DataFrame(
        {"request_id": [f"r{i}" for i in range(n)], "prediction": prediction, "label": label, "ts": ts}
    )


class Page(HTMLParser):
    """Tags, text and images of a page, as a browser's DOM would hold them."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.text: dict[str, list[str]] = {}
        self.images: list[dict[str, str]] = []
        self._open: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self._open.append(tag)
        if tag == "img":
            self.images.append({k: v or "" for k, v in attrs})
            self._open.pop()

    def handle_endtag(self, tag: str) -> None:
        if self._open and self._open[-1] == tag:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        if self._open:
            self.text.setdefault(self._open[-1], []).append(data)


def render(n_windows: int, labels: float = 812.0) -> tuple[str, str, str]:
    drift = drift_table(n_windows)
    realized = {"labels": labels, "roc_auc": 0.71, "log_loss": 0.52, "skipped_labels": 3.0}
    decision = decide(
        POLICY, drift, realized, None, NOW, COLUMNS, champion_registered=NOW - timedelta(hours=2)
    )
    over_time = report.realized_over_time({"3": labelled(0), "4": labelled(60)}, "binary")
    content = report.build(
        "flight-delay",
        "4",
        decision,
        POLICY,
        drift,
        realized,
        skipped={"label not 0 or 1": 3},
        over_time=over_time,
        ignored=["hour", "minute"],
        checked_at=NOW,
    )
    page = report.to_html(
        content, report.heatmap(drift, POLICY.drift_threshold), report.realized_figure(over_time)
    )
    return page, report.to_markdown(content, "/tmp/report.html"), decision.summary()


def png_width(src: str) -> int:
    data = base64.b64decode(src.split(",", 1)[1])
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big")


@pytest.mark.parametrize("n_windows", [1, 4, 100])
def test_the_report_is_a_real_page(n_windows: int) -> None:
    page, markdown, summary = render(n_windows)
    parsed = Page()
    parsed.feed(page)
    assert parsed.tags.count("h1") == 1 and parsed.tags.count("h2") >= 5
    assert parsed.tags.count("table") >= 5 and "pre" not in parsed.tags
    headings = parsed.text["h2"]
    for expected in ("What the policy waits for", "Policy", "Drift heatmap", "Drift per column"):
        assert expected in headings, headings
    assert any(h.startswith("Realized ROC AUC over time") for h in headings), headings
    # no Markdown and no Python reprs in what a reader sees
    for bad in ("**", "{'", "|---", "# Monitoring", "1000.0", "812.0"):
        assert bad not in page, bad
    # the summary heads both views, word for word, with numbers formatted
    assert summary in parsed.text["p"] and f"**{summary}**" in markdown
    assert "812 labels (needs 1,000 to judge the AUC floor)" in summary
    assert "nothing moved" not in summary
    heatmaps = [i for i in parsed.images if i["alt"] == "drift heatmap"]
    assert len(heatmaps) == 1 and heatmaps[0]["src"].startswith("data:image/png;base64,")
    assert int(heatmaps[0]["width"]) == png_width(heatmaps[0]["src"])
    assert any(i["alt"] == "realized metric over time" for i in parsed.images)


def test_the_heatmap_grows_with_its_windows_and_thins_its_labels() -> None:
    widths = {}
    for n in (1, 10, 40, 100):
        page, _, _ = render(n)
        parsed = Page()
        parsed.feed(page)
        widths[n] = png_width(next(i["src"] for i in parsed.images if i["alt"] == "drift heatmap"))
    assert widths[1] < widths[10] < widths[40] <= widths[100]
    # within its bounds the figure is linear in the windows: 30 more windows add 30 x 0.3 in at 90 dpi
    assert abs((widths[40] - widths[10]) - 30 * report.HEATMAP_INCHES_PER_WINDOW * 90) < 30
    assert report.heatmap_layout(1) == (report.HEATMAP_MIN_INCHES, 1)
    assert report.heatmap_layout(20) == (9.0, 1)
    width, step = report.heatmap_layout(100)
    assert width == report.HEATMAP_MAX_INCHES and step == 2  # 77 label slots for 100 windows


def test_heatmap_labels_are_dates_and_times() -> None:
    figure = report.heatmap(drift_table(3), 0.15)
    assert figure is not None
    labels = [t.get_text() for t in figure.axes[0].get_xticklabels()]
    assert labels == ["12-01 15:00", "12-01 15:05", "12-01 15:10"]


def test_realized_over_time_per_version() -> None:
    frame = report.realized_over_time({"3": labelled(0), "4": labelled(60)}, "binary")
    assert set(frame["version"]) == {"3", "4"} and set(frame["metric"]) == {"roc_auc"}
    # three hours of labels: 15-minute buckets (the shortest that keeps it under 30)
    starts = sorted(frame["start"].unique())
    assert (starts[1] - starts[0]) == pd.Timedelta(minutes=15)
    assert frame["labels"].sum() == 1200
    scored = frame["value"].dropna()
    assert len(scored) >= 20 and scored.between(0, 1).all()
    few = report.realized_over_time({"3": labelled(0, n=10)}, "binary")
    assert few["value"].isna().all()  # under MIN_BUCKET_LABELS: no metric, not noise
    assert report.realized_over_time({}, "binary").empty


def test_numbers_read_as_numbers() -> None:
    assert report.number("labels", 4904.0) == "4,904"
    assert report.number("roc_auc", 0.81234) == "0.8123"
    assert report.number("roc_auc", float("nan")) == "-"


def test_a_report_without_windows_or_labels() -> None:
    empty = pd.DataFrame(columns=["window", "column", "statistic", "drifted", "rows", "note"])
    decision = decide(POLICY, empty, {"labels": 0.0}, None, NOW, COLUMNS)
    content = report.build("flight-delay", "1", decision, POLICY, empty, {"labels": 0.0}, checked_at=NOW)
    page = report.to_html(content, report.heatmap(empty, 0.15))
    assert "no serving window yet" in page and "<img" not in page and "{'" not in page
