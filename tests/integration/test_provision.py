"""`flywheel stack provision` on a real Prefect server: the work pool, the variables, and the models it is
told about (never a default one)."""

from __future__ import annotations

from pathlib import Path

import pytest
from prefect.variables import Variable

from stacks.config import StackError
from stacks.loader import load_stack
from stacks.provision import provision


@pytest.fixture
def api_url(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """The session's Prefect test server, as `make up` names it (PREFECT_API_URL); restored afterwards."""
    from prefect.settings import PREFECT_API_URL

    url = str(PREFECT_API_URL.value())
    monkeypatch.setenv("PREFECT_API_URL", url)  # provision sets it too: monkeypatch restores it
    monkeypatch.setenv("FLYWHEEL_HOME", str(tmp_path / "home"))
    return url


def test_no_model_named_provisions_none(api_url: str) -> None:
    done = provision(load_stack("local"), ["flight-delay"])
    assert done.variables["flywheel_models"] == ["flight-delay"]
    assert Variable.get("flywheel_model") == "flight-delay"  # one model named: the single variable too

    again = provision(load_stack("local"))
    assert again.work_pool == "flywheel-local" and not again.created_pool
    assert again.variables["flywheel_models"] == [] and "flywheel_model" not in again.variables
    assert again.removed == ["flywheel_model"]  # a stale one would serve a model nobody asked for
    assert Variable.get("flywheel_model") is None
    assert Variable.get("flywheel_models") == []


def test_several_models_are_listed(api_url: str) -> None:
    done = provision(load_stack("local"), ["flight-delay", "diamond-price", "flight-delay"])
    assert Variable.get("flywheel_models") == ["flight-delay", "diamond-price"]
    assert "flywheel_model" not in done.variables and Variable.get("flywheel_model") is None


@pytest.mark.parametrize("bad", ["", "a\nb", "x" * 300])
def test_a_bad_model_name_is_refused_before_the_server_is_asked(api_url: str, bad: str) -> None:
    with pytest.raises(StackError, match="--model: "):
        provision(load_stack("local"), [bad])
