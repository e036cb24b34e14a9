"""Our stacks through a real ZenML and back: `flywheel stack export --format zenml`, `zenml stack import`,
`zenml stack export`, `flywheel stack import`, and nothing of ours lost.

ZenML pins pydantic and FastAPI below ours, so it gets a virtual environment of its own, made with uv
(found as the Makefile finds it) once per module in a temporary folder: from uv's cache when it holds
the wheels (`--offline`, 2.5-4.5 s on 2 shared cores), else from the package index (about 4 s with an
empty cache). The version is the one our exports name (`ZENML_FALLBACK_VERSION`), so `zenml stack
import` runs without `--ignore-version-mismatch`. ZenML's state (global config, SQLite store, secrets)
lives in a temporary `ZENML_CONFIG_PATH` with analytics off, and every command runs with no standard
input, so a prompt fails instead of waiting. If ZenML cannot be installed the tests fail and say what
uv answered.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from stacks import secrets
from stacks.loader import load_stack
from stacks.zenml_io import ZENML_FALLBACK_VERSION

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
FLYWHEEL = str(Path(sys.executable).parent / "flywheel")
SHIPPED = ("local", "staging", "production")
PLACEHOLDER = "placeholder-not-a-credential"  # what the test stores in ZenML's throwaway secret store
ZENML_REQUIREMENT = f"zenml[local]=={ZENML_FALLBACK_VERSION}"


def _run(
    cmd: list[str], env: dict[str, str], cwd: Path, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def _uv() -> list[str]:
    """uv as the Makefile runs it: `uv` on PATH, else `python3 -m uv`."""
    found = shutil.which("uv")
    if found:
        return [found]
    python3 = shutil.which("python3")
    if python3 and _run([python3, "-m", "uv", "--version"], dict(os.environ), ROOT, 60).returncode == 0:
        return [python3, "-m", "uv"]
    pytest.fail(
        "cannot install ZenML: no uv (neither `uv` on PATH nor `python3 -m uv`); `make install` brings it"
    )


@dataclass
class ZenML:
    """A ZenML installation of its own, run as its `zenml` command against a throwaway store."""

    bin: Path
    version: str
    root: Path
    install_s: float
    install_how: str
    calls: list[tuple[str, float]] = field(default_factory=list)

    def env(self, config: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ZENML_", "VIRTUAL_ENV"))}
        return env | {
            "ZENML_CONFIG_PATH": str(config),
            "ZENML_ANALYTICS_OPT_IN": "false",
            "ZENML_LOGGING_VERBOSITY": "WARN",
            "ZENML_ENABLE_RICH_TRACEBACK": "false",
        }

    def __call__(self, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
        start = time.monotonic()
        result = _run([str(self.bin), *args], self.env(config), self.root)
        self.calls.append((" ".join(args[:2]), time.monotonic() - start))
        assert result.returncode == 0, (
            f"zenml {' '.join(args)}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
        return result


@pytest.fixture(scope="module")
def zenml(tmp_path_factory: pytest.TempPathFactory) -> ZenML:
    root = tmp_path_factory.mktemp("zenml")
    venv = root / "venv"
    uv = _uv()
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    start = time.monotonic()
    made = _run([*uv, "venv", "--quiet", "--python", sys.executable, str(venv)], env, root)
    if made.returncode != 0:
        pytest.fail(f"cannot install ZenML: `uv venv` failed:\n{made.stderr[-2000:]}")
    python = venv / "bin" / "python"
    attempts = []
    for how, extra in (("uv cache, offline", ["--offline"]), ("package index", [])):
        install = [*uv, "pip", "install", "--quiet", "--compile-bytecode", "--python", str(python)]
        done = _run([*install, *extra, ZENML_REQUIREMENT], env, root, timeout=900)
        attempts.append(f"{how}: exit {done.returncode}\n{done.stderr.strip()[-1500:]}")
        if done.returncode == 0:
            break
    else:
        pytest.fail(f"cannot install {ZENML_REQUIREMENT} with {' '.join(uv)}:\n" + "\n".join(attempts))
    elapsed = time.monotonic() - start
    version = _run([str(python), "-c", "import zenml; print(zenml.__version__)"], env, root)
    assert version.returncode == 0, version.stderr
    found = ZenML(venv / "bin" / "zenml", version.stdout.strip(), root, elapsed, how)
    print(f"\nZenML {found.version}: environment made in {elapsed:.1f}s ({how})", flush=True)
    return found


@pytest.fixture(scope="module")
def store(zenml: ZenML) -> Path:
    """One ZenML store for the three stacks, as a user would import them (components shared by name)."""
    return zenml.root / "config"


def flywheel(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "FLYWHEEL_"))}
    return _run([FLYWHEEL, *args], env | {"FLYWHEEL_HOME": str(home)}, ROOT, 120)


def _read(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    return data


def _zenml_secrets(components: dict[str, Any]) -> dict[str, set[str]]:
    """The ZenML secrets (name -> keys) that the `{{name.key}}` references of ZenML's part name."""
    wanted: dict[str, set[str]] = {}
    for _, ref in secrets.find_refs({k: v["configuration"] for k, v in components.items()}):
        assert ref.startswith("{{"), f"a ${{VAR}} reference reached ZenML's part: {ref}"
        name, _, key = ref[2:-2].strip().partition(".")
        wanted.setdefault(name, set()).add(key)
    return wanted


def _export_to_zenml(zenml: ZenML, config: Path, name: str, work: Path) -> tuple[dict[str, Any], str]:
    """Our export of a shipped stack, imported into ZenML (its secrets created first, as the export says)."""
    ours = work / f"{name}-flywheel.yaml"
    exported = flywheel(work / "home", "stack", "export", name, "--format", "zenml", "-o", str(ours))
    assert exported.returncode == 0, exported.stderr
    data = _read(ours)
    assert data["zenml_version"] == zenml.version  # so no --ignore-version-mismatch is needed
    for secret, keys in sorted(_zenml_secrets(data["components"]).items()):
        assert f"zenml secret create {secret} " in exported.stderr  # the export says to create it
        zenml(config, "secret", "create", secret, *(f"--{k}={PLACEHOLDER}" for k in sorted(keys)))
    zenml(config, "stack", "import", name, "-f", str(ours))
    return data, exported.stderr


@pytest.mark.parametrize("name", SHIPPED)
def test_stack_survives_zenml(name: str, zenml: ZenML, store: Path, tmp_path: Path) -> None:
    original = load_stack(name).to_dict()["components"]
    calls_before = len(zenml.calls)
    ours, export_warnings = _export_to_zenml(zenml, store, name, tmp_path)

    # ZenML accepted every component of ours and writes each back as it was, references as references
    written = tmp_path / f"{name}-from-zenml.yaml"
    zenml(store, "stack", "export", name, str(written))
    theirs = _read(written)
    assert theirs["stack_name"] == name and theirs["zenml_version"] == zenml.version
    assert "flywheel" not in theirs  # zenml stack export drops our section: hence --base
    assert set(theirs["components"]) == set(ours["components"])
    for ctype, component in ours["components"].items():
        (back,) = theirs["components"][ctype]  # ZenML writes a one-item list per type
        assert back == component, ctype
    assert PLACEHOLDER not in written.read_text()

    # with the stack it came from as --base, nothing of ours is lost
    home = tmp_path / "home"
    imported = flywheel(home, "stack", "import", str(written), "--name", f"{name}-rt", "--base", name)
    assert imported.returncode == 0, imported.stderr
    assert "warning:" not in imported.stderr, imported.stderr
    restored = _read(home / "stacks" / f"{name}-rt.yaml")
    assert restored["components"] == original
    assert set(secrets.find_refs(restored)) == set(secrets.find_refs({"components": original}))
    assert PLACEHOLDER not in (home / "stacks" / f"{name}-rt.yaml").read_text()

    # without it, what ZenML holds comes back and the rest is named, as zenml_io's docstring says
    alone = flywheel(home, "stack", "import", str(written), "--name", f"{name}-zenml")
    assert alone.returncode == 0, alone.stderr
    partial = _read(home / "stacks" / f"{name}-zenml.yaml")["components"]
    for ctype in ours["components"]:
        if ctype == "data_validator":  # ZenML's whylogs flavor holds none of our settings: our defaults
            assert {k: partial[ctype][k] for k in ("name", "flavor")} == {
                k: original[ctype][k] for k in ("name", "flavor")
            }
        elif ctype != "orchestrator":
            assert partial[ctype] == original[ctype], ctype
    assert partial["orchestrator"]["flavor"] == "prefect"  # ZenML's local stand-in: the ephemeral API
    assert partial["orchestrator"]["configuration"]["api_url"] is None
    assert "warning: no 'flywheel' section (zenml stack export writes none)" in alone.stderr
    assert "pass --base STACK" in alone.stderr
    assert "added the default Prefect orchestrator" in alone.stderr
    for ctype in set(original) - set(ours["components"]) - {"orchestrator"}:
        assert ctype not in partial, ctype  # not in ZenML and no base: left out, not invented
    print(f"\n{name}: zenml calls {[(c, round(s, 1)) for c, s in zenml.calls[calls_before:]]}", flush=True)
    if name == "staging":  # ZenML refuses a remote MLflow without credentials: left out, and said
        assert "experiment_tracker" not in ours["components"]
        assert "model_registry" not in ours["components"]
        assert "refuses the remote tracking_uri" in export_warnings


def test_values_edited_in_zenml_win_over_the_base(zenml: ZenML, tmp_path: Path) -> None:
    config = tmp_path / "zenml-config"  # a store of its own: the edit must not reach the other test's
    _export_to_zenml(zenml, config, "local", tmp_path)
    zenml(config, "experiment-tracker", "update", "mlflow-sqlite", "--experiment_name=edited-in-zenml")
    written = tmp_path / "local-from-zenml.yaml"
    zenml(config, "stack", "export", "local", str(written))
    home = tmp_path / "home"
    imported = flywheel(home, "stack", "import", str(written), "--name", "edited", "--base", "local")
    assert imported.returncode == 0, imported.stderr
    got = _read(home / "stacks" / "edited.yaml")["components"]
    want = load_stack("local").to_dict()["components"]
    want["experiment_tracker"]["configuration"]["experiment_name"] = "edited-in-zenml"
    assert got == want
