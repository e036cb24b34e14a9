"""What a user reads, checked in a real headless Chromium with no network beyond 127.0.0.1: the service's
/docs (Swagger UI rendered from the service's own assets), the monitoring report (rendered HTML, a heatmap
that is whole and wide enough for its labels, for 1 and for 60 windows), and a model version's page in the
MLflow UI (readable text, no Python reprs), and the version's model card as logged in its run (every
section a heading, tables rendered, each metric's interval as text, no raw Markdown).

One small champion is trained into a temporary home (the steps directly, as the serving tests do); it is
served by the local deployer and its registry opened by a real ``mlflow server``. The report is built from
real drift: windows of real flights profiled through the champion as the service's profiler writes them,
compared with the champion's training profile by the monitoring step, decided on by the real policy.
Chromium is installed by scripts/install-chromium.sh when missing; if that fails, the tests fail with why.
"""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from stacks.components.artifact_store import ArtifactStore
from stacks.components.deployers.local import LocalDeployer
from stacks.loader import STACKS_DIR, load_stack
from steps.model.reference import store_reference
from tests.e2e.browser import Browser, BrowserError, Page, ensure_chromium
from tests.e2e.support import free_port, kill_processes, wait_for
from tests.unit.serving.conftest import train_and_register

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MODEL = "flight-delay"
RAW_MARKUP = ("**", "| ---", "|---", "{'", "['")
"""What must never reach a reader: Markdown emphasis and table rules, Python dict and list reprs."""
PX_PER_WINDOW = 10
"""A heatmap column carries one rotated date label: a line of text about 10 px high, each."""


# ------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def chromium() -> str:
    try:
        return ensure_chromium()
    except BrowserError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="module")
def browser_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("browser-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLYWHEEL_HOME", str(home))
        mp.setenv("FLYWHEEL_PROFILING", "off")  # no traffic here: the profiler would only compete for CPU
        mp.delenv("FLYWHEEL_STACK", raising=False)
        mp.setenv("PREFECT_RESULTS_LOCAL_STORAGE_PATH", str(home / "prefect-results"))
        yield home


@pytest.fixture(scope="module")
def champion(browser_home: Path, flights_sample: pd.DataFrame, weather: pd.DataFrame) -> dict[str, Any]:
    """A small champion, and its training profile as the registry holds it (the training flow also puts it
    in the artifact store, where monitoring reads it; the serving tests' trainer only logs it to MLflow)."""
    import mlflow
    from mlflow import MlflowClient

    from flywheel.contracts.model_version import TRAINING_PROFILE_ARTIFACT

    trained = train_and_register(flights_sample, weather, rounds=10)
    run_id = MlflowClient().get_model_version(MODEL, trained["version"]).run_id
    profile = mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path=TRAINING_PROFILE_ARTIFACT, dst_path=str(browser_home / "downloads")
    )
    return {**trained, "profile": Path(profile).read_bytes()}


@pytest.fixture(scope="module")
def browser(chromium: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    with Browser(tmp_path_factory.mktemp("chromium-profile"), binary=chromium) as b:
        yield b


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    tab = browser.new_page()
    yield tab
    tab.close()


@pytest.fixture(scope="module")
def service_url(browser_home: Path, champion: dict[str, Any]) -> Iterator[str]:
    """The champion served by the local deployer on a free port (stopped whatever the tests did)."""
    doc = yaml.safe_load((STACKS_DIR / "local.yaml").read_text(encoding="utf-8"))
    doc["stack_name"] = "browser"
    doc["components"]["model_deployer"]["configuration"]["port"] = free_port()
    path = browser_home / "browser.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    deployer = LocalDeployer(load_stack(str(path)), stop_timeout_s=10)
    try:
        yield deployer.deploy(MODEL, champion["version"]).url.rstrip("/")
    finally:
        deployer.stop(MODEL)


@pytest.fixture(scope="module")
def mlflow_ui(
    browser_home: Path, champion: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A real ``mlflow server`` (UI and REST API) over the home's registry, on loopback."""
    import mlflow

    port = free_port()
    workdir = tmp_path_factory.mktemp("mlflow-server")
    log = open(workdir / "server.log", "wb")  # noqa: SIM115 - closed once the process is started
    try:
        proc = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "mlflow"),
                "server",
                "--backend-store-uri",
                mlflow.get_registry_uri(),
                "--artifacts-destination",
                str(workdir / "artifacts"),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
            ],
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    finally:
        log.close()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _status(f"{url}/health") == 200 or proc.poll() is not None, 120, "mlflow server")
        assert proc.poll() is None, (workdir / "server.log").read_text(errors="replace")[-3000:]
        yield url
    finally:
        import psutil

        family = [p for p in psutil.process_iter() if _group_of(p.pid) == proc.pid]
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        kill_processes(family, timeout=10)
        proc.wait(timeout=10)


def _status(url: str) -> int:
    with urllib.request.urlopen(url, timeout=5) as r:
        return int(r.status)


def _group_of(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except (ProcessLookupError, PermissionError):
        return None


# ---------------------------------------------------------------------------------------------- helpers


def assert_readable(text: str, where: str) -> None:
    found = [m for m in RAW_MARKUP if m in text]
    assert not found, f"{where} shows raw markup {found} to its reader:\n{text[:3000]}"


def assert_offline(page: Page, where: str) -> None:
    offsite = page.offsite_requests()
    assert not offsite, (
        f"{where} asked for {len(offsite)} resource(s) beyond this machine (blank without internet): "
        + ", ".join(f"{u} ({page.failures.get(u, 'blocked')})" for u in offsite[:10])
    )


IMAGES_JS = """
Array.from(document.images).map(img => {
  const r = img.getBoundingClientRect();
  let clipped = null;
  for (let el = img.parentElement; el && el !== document.documentElement; el = el.parentElement) {
    const style = getComputedStyle(el);
    if (['hidden', 'clip', 'scroll', 'auto'].includes(style.overflowX)) {
      const box = el.getBoundingClientRect();
      if (r.left < box.left - 0.5 || r.right > box.right + 0.5) {
        clipped = `${el.tagName.toLowerCase()}.${el.className} (overflow-x ${style.overflowX})`;
      }
    }
  }
  return {alt: img.alt, complete: img.complete, natural: [img.naturalWidth, img.naturalHeight],
          shown: [r.width, r.height], clipped: clipped, src: img.currentSrc.slice(0, 40)};
})
"""


def png_of(page: Page, index: int) -> bytes:
    """The bytes of the page's ``index``-th image (a data: URL or a same-origin URL), fetched by the page."""
    encoded = page.evaluate(
        f"fetch(document.images[{index}].currentSrc).then(r => r.arrayBuffer()).then(b => "
        "btoa(Array.from(new Uint8Array(b), c => String.fromCharCode(c)).join('')))"
    )
    import base64

    return base64.b64decode(encoded)


def border_is_background(png: bytes, band: int = 2) -> bool:
    """Whether the image's outer ``band`` pixels are all its background colour: a label or title drawn past
    the figure's edge is cut there, and shows as ink touching the border."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    width, height = image.size
    rgb = list(image.getdata())  # row-major (r, g, b) tuples
    background = rgb[0]
    edge = [x + y * width for x in range(width) for y in (*range(band), *range(height - band, height))]
    edge += [x + y * width for y in range(height) for x in (*range(band), *range(width - band, width))]
    return all(max(abs(a - b) for a, b in zip(rgb[i], background, strict=True)) <= 8 for i in edge)


# ------------------------------------------------------------------------------------------------- /docs


def test_docs_render_swagger_ui_offline(page: Page, service_url: str) -> None:
    page.open(f"{service_url}/docs", ready="true")
    rendered = page.wait_until("document.querySelectorAll('.opblock').length > 0", timeout=20)
    assert_offline(page, "/docs")
    assert rendered, f"/docs rendered no Swagger UI operations; the page reads {page.text()[:500]!r}"
    operations = page.evaluate(
        "Array.from(document.querySelectorAll('.opblock-summary')).map(o => "
        "[o.querySelector('.opblock-summary-method')?.innerText, "
        "o.querySelector('.opblock-summary-path')?.innerText.replace(/\\u200b/g, '')])"
    )
    assert ["POST", "/predict"] in operations, operations
    assert "Flywheel prediction service" in page.evaluate("document.querySelector('.info .title')?.innerText")


# ---------------------------------------------------------------------------------------- monitoring report


def write_windows(store: ArtifactStore, version: str, n_windows: int, rows: int = 500) -> None:
    """``n_windows`` five-minute windows of real flights, profiled through the champion exactly as the
    service's profiler writes them; later windows from later months, so some columns drift and some not."""
    from flywheel.contracts.layout import window_profile
    from flywheel.contracts.problem import load_spec
    from stacks.components.data_validator import WhylogsValidator
    from stacks.components.model_registry import load_model
    from steps.data import features
    from steps.data.sources import read_source

    spec = load_spec("flights")
    model = load_model(MODEL, version)
    flights = read_source(spec.source)
    months = [1 + (12 * i) // n_windows for i in range(n_windows)]
    pool = pd.concat(
        [flights[flights["month"] == m].sample(n=rows, random_state=i) for i, m in enumerate(months)]
    ).reset_index(drop=True)
    derived = features.derive(pool, spec, {"weather": read_source(spec.joins[0].source)})
    encoded = features.encode(derived, model.schema)
    frame = encoded.astype({c.name: object for c in model.schema.columns if c.kind == "categorical"})
    frame["prediction"] = model.booster.inplace_predict(encoded)
    validator = WhylogsValidator()
    start = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    for i in range(n_windows):
        profile = validator.profile(frame.iloc[i * rows : (i + 1) * rows])
        moment = start + timedelta(minutes=5 * i)
        store.write_bytes(window_profile(MODEL, version, moment, "browser-test"), validator.to_bytes(profile))


@pytest.fixture(scope="module")
def reports(browser_home: Path, champion: dict[str, Any]) -> dict[int, Path]:
    """The HTML report the monitoring flow writes, after 1 and after 60 windows of traffic: one stack per
    case (its own artifact store, the same registry), each a first monitoring run over all its windows."""
    from prefect.testing.utilities import prefect_test_harness

    from flows.monitoring import monitoring

    doc = yaml.safe_load((STACKS_DIR / "local.yaml").read_text(encoding="utf-8"))
    found: dict[int, Path] = {}
    with prefect_test_harness(server_startup_timeout=120):
        for n in (1, 60):
            doc["stack_name"] = f"browser-{n}"
            doc["components"]["artifact_store"]["configuration"]["path"] = f"artifacts-{n}"
            path = browser_home / f"browser-{n}.yaml"
            path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
            store = ArtifactStore.from_stack(load_stack(str(path)))
            store_reference(store, MODEL, champion["version"], champion["profile"])
            write_windows(store, champion["version"], n)
            result = monitoring(problem="flights", stack=str(path), emit=False)
            assert len(result["windows"]) == n, result
            found[n] = Path(result["report"])
    return found


@pytest.mark.parametrize("n_windows", [1, 60])
def test_monitoring_report_reads_as_a_page(
    n_windows: int, page: Page, reports: dict[int, Path], tmp_path: Path
) -> None:
    path = reports[n_windows]
    page.open(path.as_uri(), ready="document.body !== null")
    assert_offline(page, "the monitoring report")
    shot = page.screenshot(tmp_path / f"report-{n_windows}.png")  # kept with the test's tmp_path for a look
    counts = page.evaluate(
        "['h1', 'h2', 'table', 'th', 'pre'].map(t => document.getElementsByTagName(t).length)"
    )
    h1, h2, tables, headers, _ = counts
    assert h1 == 1 and h2 >= 1, f"headings not rendered (h1 {h1}, h2 {h2}); screenshot {shot}"
    assert tables >= 1 and headers >= 1, (
        f"no rendered table (tables {tables}, th {headers}); screenshot {shot}"
    )
    assert_readable(page.text(), f"the report for {n_windows} window(s) (screenshot {shot})")

    images = page.evaluate(IMAGES_JS)
    heatmaps = [(i, img) for i, img in enumerate(images) if "heatmap" in img["alt"].lower()]
    assert len(heatmaps) == 1, f"one image with alt text naming the heatmap expected, found {images}"
    index, heatmap = heatmaps[0]
    (natural_w, natural_h), (shown_w, shown_h) = heatmap["natural"], heatmap["shown"]
    assert heatmap["complete"] and natural_w > 0, f"the heatmap did not load: {heatmap}"
    assert heatmap["clipped"] is None, f"the heatmap is cut by {heatmap['clipped']}: {heatmap}"
    assert abs(shown_w / shown_h - natural_w / natural_h) < 0.02 * natural_w / natural_h, (
        f"distorted: {heatmap}"
    )
    scrolls = page.evaluate("document.documentElement.scrollWidth > document.documentElement.clientWidth")
    assert shown_w >= natural_w - 0.5 or not scrolls, f"heatmap shrunk and the page still scrolls: {heatmap}"
    png = png_of(page, index)
    assert border_is_background(png), f"ink at the heatmap's edge: a label or title is cut off ({shot})"
    assert natural_w >= PX_PER_WINDOW * n_windows and shown_w >= PX_PER_WINDOW * n_windows, (
        f"{n_windows} windows' labels in an image {natural_w} px wide, drawn at {shown_w:.0f} px "
        f"(needs {PX_PER_WINDOW} px per window)"
    )


# ------------------------------------------------------------------------------------ MLflow version page


def test_model_version_page_reads_as_text(
    page: Page, mlflow_ui: str, champion: dict[str, Any], tmp_path: Path
) -> None:
    from mlflow import MlflowClient

    version = champion["version"]
    registered = MlflowClient().get_model_version(MODEL, version)
    page.open(f"{mlflow_ui}/#/models/{MODEL}/versions/{version}", ready="true")
    shown = page.wait_until(f"document.body.innerText.includes('Version {version}')", timeout=30)
    text = page.text()
    shot = page.screenshot(tmp_path / "version-page.png")
    assert shown, f"the version page did not render; it reads {text[:500]!r} (screenshot {shot})"
    assert_offline(page, "the MLflow version page")
    assert_readable(text, f"{MODEL} v{version}'s page")
    for key, value in registered.tags.items():
        if len(value) < 60:
            assert value in text, f"tag {key}={value!r} not shown on the version page"
    description = (registered.description or "").strip()
    # the gate writes its decision as the description: the first thing a reviewer reads on the page
    assert description.startswith("Promoted to champion"), description
    # MLflow renders it as Markdown: compare its first line's words, markup left out
    first = " ".join(re.sub(r"[*`#>]", " ", description.splitlines()[0]).split())
    assert first in " ".join(text.split()), f"the description's first line {first!r} is not on the page"


# ------------------------------------------------------------------------------------------- model card


@pytest.fixture(scope="module")
def model_card(
    browser_home: Path, champion: dict[str, Any], flights_sample: pd.DataFrame, weather: pd.DataFrame
) -> dict[str, Any]:
    """The champion's card as the training flow makes and logs it (the module's champion is trained by
    the steps, without the flow): its evaluation, explanation and gate decision (the pure gate, first model
    so no champion to compare) into ``card.facts``, logged by the flow's ``log_model_card`` into the
    version's run and tagged on the version; then fetched back through that tag, as a reader would."""
    import mlflow
    from mlflow import MlflowClient

    from flywheel.contracts.model_version import MODEL_CARD_TAG
    from flywheel.contracts.problem import load_spec
    from steps.data.features import build_dataset
    from steps.data.split import split
    from steps.model import card, card_log, evaluate, explain, promote

    spec = load_spec("flights")
    version = champion["version"]
    parts = split(build_dataset(flights_sample, spec, {"weather": weather}), spec)  # the champion's split
    evaluation = evaluate.evaluate(champion["booster"], parts.test, spec, 0.3)  # its registered threshold
    explanation = explain.explain(champion["booster"], parts.test.X, seed=0)
    assert evaluation.predictions is not None
    decision = promote.decide(spec, evaluation.predictions, None, parts.test, version, None)
    registered, previous = card_log.recorded(MODEL, version, None)
    facts = card.facts(
        spec,
        version,
        registered.run_id,
        evaluation,
        explanation,
        parts,
        decision,
        threshold=0.3,
        dataset=registered.tags.dataset,
        training=registered.tags.training,
        reason="browser test",
        previous=previous,
        budget_s=2.0,
    )
    built = card.build(facts)
    card_log.log_model_card(registered.run_id, MODEL, version, built)
    uri = MlflowClient().get_model_version(MODEL, version).tags[MODEL_CARD_TAG]
    path = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(browser_home / "card"))
    return {"path": Path(path), "card": built, "facts": facts}


def test_model_card_reads_as_a_document(page: Page, model_card: dict[str, Any], tmp_path: Path) -> None:
    from steps.model.card import SECTIONS
    from steps.monitor.report import metric_name

    built = model_card["card"]
    page.open(model_card["path"].as_uri(), ready="document.body !== null")
    assert_offline(page, "the model card")
    shot = page.screenshot(tmp_path / "model-card.png")
    text = page.text()
    assert_readable(text, f"the model card (screenshot {shot})")

    headings = page.evaluate(
        "['h1', 'h2'].map(t => Array.from(document.getElementsByTagName(t), h => h.innerText.trim()))"
    )
    assert headings[0] == [built.title], f"h1 {headings[0]} (screenshot {shot})"
    assert headings[1] == list(SECTIONS), f"sections rendered as h2: {headings[1]} (screenshot {shot})"

    tables = page.evaluate(
        "Array.from(document.querySelectorAll('table'), t => ({th: t.querySelectorAll('th').length, "
        "rows: Array.from(t.querySelectorAll('tbody tr'), r => Array.from(r.cells, c => c.innerText.trim())),"
        " section: t.closest('section')?.querySelector('h2')?.innerText.trim()}))"
    )
    expected = sum(len(s.tables) for s in built.sections)
    assert len(tables) == expected and expected > 0, f"{len(tables)} tables rendered, {expected} in the card"
    assert all(t["th"] > 0 for t in tables), f"a table without header cells: {tables}"

    # the test metrics: every metric's point value and interval, as text in the rendered table's rows
    metrics = [t for t in tables if t["section"] == "Test metrics"]
    assert len(metrics) == 1, tables
    shown = {row[0]: row[1:] for row in metrics[0]["rows"]}
    finite = [m for m in model_card["facts"].intervals.metrics if m.low == m.low and m.high == m.high]
    assert finite, model_card["facts"].intervals
    for m in finite:
        assert shown.get(metric_name(m.metric)) == [f"{m.value:.4f}", f"{m.low:.4f} to {m.high:.4f}"], (
            f"{m.metric}: the card shows {shown.get(metric_name(m.metric))} (screenshot {shot})"
        )
    resamples = model_card["facts"].intervals.resamples
    assert f"{resamples} resamples" in text, "the interval's note (how many resamples) is not on the page"
