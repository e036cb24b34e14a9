"""What a person sees of the service: /docs and /redoc load every asset from the service itself (no CDN,
so the pages work offline), /openapi.json describes the version being served across a hot swap to one with
other features, and every swap, and every failed one, is one log line saying from which version, to which,
and why."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from mlflow import MlflowClient

from serving.app import create_app
from serving.settings import ServiceSettings
from tests.unit.serving.conftest import local_home, wait_for

MODEL = "two-schemas"
SMALL = ["size", "colour"]
LARGE = ["size", "colour", "weight"]


def _frame(n: int = 1_200) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    size = rng.normal(size=n)
    colour = rng.choice(["red", "green", "blue"], n)
    weight = rng.normal(size=n)
    score = size + (colour == "red") * 1.0 + 0.5 * weight + rng.normal(scale=0.5, size=n)
    return pd.DataFrame({"size": size, "colour": colour, "weight": weight, "score": score})


def _register(frame: pd.DataFrame, features: list[str]) -> str:
    """One version of MODEL trained on ``features`` with the steps directly (as the serving conftest does);
    the alias is left alone: each test moves it itself."""
    from flywheel.contracts.problem import ProblemSpec
    from stacks.components.data_validator import WhylogsValidator
    from steps.data.features import build_dataset
    from steps.data.split import split
    from steps.model import reference, register, track, train
    from steps.model.xgb import base_params

    spec = ProblemSpec.model_validate(
        {
            "name": MODEL,
            "model_name": MODEL,
            "source": "x.csv",
            "task": "binary",
            "target": {"column": "score", "rule": "score > 0.5", "name": "high"},
            "features": features,
            "categorical": ["colour"],
        }
    )
    dataset = build_dataset(frame, spec, {})
    parts = split(dataset, spec)
    booster = train.train(parts.train, {**base_params(spec, n_jobs=2), "max_depth": 3}, 20)
    run_id = track.start_run("flywheel", spec, {})
    registered = register.register(
        booster,
        run_id=run_id,
        model_name=MODEL,
        schema=dataset.schema,
        example=register.input_example(parts.test.frame, dataset.schema),
        training_profile=reference.training_profile(booster, parts.train, WhylogsValidator()),
        lineage={},
        threshold=0.5,
    )
    track.finish_run(run_id, {}, 0.0, "FINISHED")
    return str(registered.version)


@pytest.fixture(scope="module")
def versions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Two versions of one model: v_small sees size and colour, v_large weight as well."""
    home = tmp_path_factory.mktemp("two-schemas-home")
    with local_home(home):
        frame = _frame()
        small, large = _register(frame, SMALL), _register(frame, LARGE)
        MlflowClient().set_registered_model_alias(MODEL, "champion", small)
        yield {"home": str(home), "small": small, "large": large}


@pytest.fixture
def service(
    versions: dict[str, str], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> Iterator[TestClient]:
    """The service of MODEL (its start-up logged at INFO), the alias back on the small version after."""
    caplog.set_level(logging.INFO, logger="flywheel.serving")
    monkeypatch.setenv("FLYWHEEL_HOME", versions["home"])
    client = MlflowClient()
    client.set_registered_model_alias(MODEL, "champion", versions["small"])
    settings = ServiceSettings(stack=None, model_name=MODEL, profiling=False, watch_interval_s=0.2)
    try:
        with TestClient(create_app(settings)) as c:
            yield c
    finally:
        client.set_registered_model_alias(MODEL, "champion", versions["small"])


def swap_lines(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    """The service's swap lines at ``level``, start-up (the fixture's set-up) included."""
    return [
        r.getMessage()
        for r in caplog.get_records("setup") + caplog.records
        if r.name == "flywheel.serving" and r.levelno == level and r.getMessage().startswith("hot swap of ")
    ]


CONTENT_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}


@pytest.mark.parametrize(
    ("page", "script", "marker"),
    [("/docs", "swagger-ui-bundle.js", b"SwaggerUIBundle"), ("/redoc", "redoc.standalone.js", b"Redoc")],
)
def test_doc_pages_reference_only_assets_the_service_serves(
    service: TestClient, page: str, script: str, marker: bytes
) -> None:
    r = service.get(page)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    html = r.text
    assert "http://" not in html and "https://" not in html  # no CDN, no web fonts: nothing off the machine
    assets = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert any(a.endswith(script) for a in assets), assets
    spec_urls = re.findall(r"url: '([^']*)'", html) + re.findall(r'spec-url="([^"]*)"', html)
    assert spec_urls == ["/openapi.json"]
    for url in assets:
        assert url.startswith("/") and not url.startswith("//"), url  # a path on this service
        got = service.get(url)
        assert got.status_code == 200, url
        suffix = Path(url).suffix
        assert got.headers["content-type"].split(";")[0] == CONTENT_TYPES[suffix], (url, got.headers)
        assert len(got.content) > (100_000 if suffix in (".js", ".css") else 100), url
        if url.endswith(script):
            assert marker in got.content  # the library itself, not an error page
    assert service.get(spec_urls[0]).status_code == 200


def test_openapi_follows_a_hot_swap_to_a_version_with_other_features(
    service: TestClient, versions: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    small, large = versions["small"], versions["large"]
    schemas = service.get("/openapi.json").json()["components"]["schemas"]
    assert sorted(schemas["Record"]["properties"]) == sorted(SMALL)
    assert sorted(schemas["Columns"]["properties"]) == sorted(SMALL)

    MlflowClient().set_registered_model_alias(MODEL, "champion", large)
    assert wait_for(lambda: service.get("/ready").json()["served_version"] == large)
    schemas = service.get("/openapi.json").json()["components"]["schemas"]
    assert sorted(schemas["Record"]["properties"]) == sorted(LARGE)
    assert "weight" in schemas["Record"]["required"] and "weight" in schemas["Columns"]["required"]
    assert (
        service.get("/docs").status_code == 200
    )  # the page reads the document: nothing of its own to update
    record = {"size": 0.3, "colour": "red", "weight": -1.0}
    assert service.post("/predict", json=record).json()["model_version"] == large

    MlflowClient().set_registered_model_alias(MODEL, "champion", small)
    assert wait_for(lambda: service.get("/ready").json()["served_version"] == small)
    schemas = service.get("/openapi.json").json()["components"]["schemas"]
    assert sorted(schemas["Record"]["properties"]) == sorted(SMALL)

    lines = [re.sub(r", loaded in [0-9.]+ s$", "", line) for line in swap_lines(caplog, logging.INFO)]
    assert lines == [
        f"hot swap of {MODEL}: nothing -> v{small} (start-up)",
        f"hot swap of {MODEL}: v{small} -> v{large} (the champion alias moved from v{small} to v{large})",
        f"hot swap of {MODEL}: v{large} -> v{small} (the champion alias moved from v{large} to v{small})",
    ]


def test_a_failed_swap_is_one_warning_and_its_retry_and_the_next_swap_say_why(
    service: TestClient, versions: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    small, large = versions["small"], versions["large"]
    client = MlflowClient()
    run_id = service.get("/model").json()["run_id"]
    broken = str(
        client.create_model_version(MODEL, source="file:///nonexistent/model", run_id=run_id).version
    )
    client.set_registered_model_alias(MODEL, "champion", broken)
    assert wait_for(lambda: service.get("/ready").json()["load_error"] is not None)
    why = service.get("/ready").json()["load_error"].removeprefix(f"v{broken}: ")
    assert swap_lines(caplog, logging.WARNING) == [
        f"hot swap of {MODEL}: v{small} -> v{broken} failed (the champion alias moved from v{small} to "
        f"v{broken}): {why}; v{small} keeps serving, retried after 60 s"
    ]
    holder = service.app.state.ctx.holder  # type: ignore[attr-defined]
    assert holder.refresh(retry_after_s=0) is False  # the retry the back-off would make a minute later
    retry = swap_lines(caplog, logging.WARNING)[1]
    assert re.fullmatch(
        rf"hot swap of {MODEL}: v{small} -> v{broken} failed \(retry: its load failed \d+ s ago: "
        rf"{re.escape(why)}\): {re.escape(why)}; v{small} keeps serving, retried after 60 s",
        retry,
    ), retry

    client.set_registered_model_alias(MODEL, "champion", large)
    assert wait_for(lambda: service.get("/ready").json()["served_version"] == large)
    assert swap_lines(caplog, logging.INFO)[-1].startswith(
        f"hot swap of {MODEL}: v{small} -> v{large} (the champion alias moved from v{broken} to v{large} "
        f"(v{broken} had failed to load)), loaded in "
    )
    assert len(swap_lines(caplog, logging.WARNING)) == 2
    assert not [
        r
        for r in caplog.get_records("setup") + caplog.records
        if r.name == "flywheel.serving" and r.levelno >= logging.ERROR
    ]
