"""``flywheel package``: a registered model version as a wheel that needs only xgboost and numpy.

The registry is read once, here: the version (by number, or the one an alias names), its booster and its
feature schema. The wheel then holds everything a prediction needs: the booster as XGBoost's own UBJ (loaded
by any XGBoost of the same major release, no MLflow), the schema with its vocabularies, the decision
threshold, and the two modules of this package that check records and predict (copied as they are, so what
is tested here is what is installed).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import metadata as installed
from pathlib import Path
from typing import Any

from flywheel.contracts.schema import FeatureSchema
from flywheel.packaging.wheel import WheelName, metadata, wheel_name, write_wheel

_HERE = Path(__file__).resolve().parent
MODULES = {"__init__.py": "model_module.py", "records.py": "records.py"}
"""The wheel's modules (its path: this package's file)."""
NUMPY = "numpy>=1.26"


@dataclass(frozen=True)
class Packaged:
    path: Path
    name: WheelName
    model_name: str
    version: str
    task: str


def requirements() -> list[str]:
    """numpy, and the XGBoost this booster was saved with or a later one of the same major release."""
    major, minor = installed.version("xgboost").split(".")[:2]
    return [NUMPY, f"xgboost<{int(major) + 1},>={major}.{minor}"]


def build_wheel(
    model_name: str,
    version: str,
    booster: Any,
    schema: FeatureSchema,
    threshold: float,
    out_dir: Path,
    provenance: dict[str, str] | None = None,
) -> Packaged:
    """The wheel of one version, written into ``out_dir``: the booster, ``model.json`` and the modules."""
    name = wheel_name(model_name, version)
    meta = {
        "model_name": model_name,
        "model_version": version,
        "task": schema.task,
        "threshold": threshold if schema.task == "binary" else None,
        "schema": schema.to_dict(),
        "xgboost": installed.version("xgboost"),
        **(provenance or {}),
    }
    files = {target: (_HERE / source).read_bytes() for target, source in MODULES.items()}
    files["model.ubj"] = bytes(booster.save_raw(raw_format="ubj"))
    files["model.json"] = (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode()
    files["py.typed"] = b""
    summary = f"{model_name} v{version} ({schema.task}): predict() and predict_proba() on checked records"
    text = metadata(name, summary, requirements(), _description(name, model_name, version, schema))
    path = write_wheel(out_dir, name, files, text, f"flywheel ({installed.version('flywheel')})")
    return Packaged(path, name, model_name, version, schema.task)


def _description(name: WheelName, model_name: str, version: str, schema: FeatureSchema) -> str:
    features = "\n".join(
        f"- `{c.name}`: {c.kind}"
        + (f" ({len(c.categories or [])} values)" if c.kind == "categorical" else "")
        + ("" if c.nullable else ", required")
        for c in schema.columns
    )
    return (
        f"# {model_name} v{version}\n\n"
        f"```python\nimport {name.package} as model\n\n"
        f"model.predict([{{...}}])        # one dict per record: feature name -> value\n"
        f"model.predict_proba([{{...}}])\n```\n\n"
        f"A record that breaks the model's input contract raises `{name.package}.InvalidRecords`, with the "
        f"errors the model's service would answer (422).\n\nFeatures:\n\n{features}\n"
    )


def package(reference: str, out_dir: Path) -> Packaged:
    """The wheel of ``MODEL@ALIAS`` or ``MODEL/VERSION`` (just ``MODEL``: its champion) from the configured
    registry. ``VersionNotFound`` when there is no such version (MlflowException or ``RegistryUnavailable``
    when its files cannot be read); WheelNameError when its name makes no package name."""
    import mlflow.xgboost

    from flywheel.contracts.model_version import models_uri, parse_reference
    from stacks.components import model_versions
    from stacks.components.model_registry import DEFAULT_THRESHOLD

    model_name, _, version = parse_reference(reference)
    wheel_name(model_name, version or "0")  # a name no package can have fails before the registry is read
    mv = model_versions.resolve(reference)
    booster = mlflow.xgboost.load_model(models_uri(model_name, mv.version))
    schema = model_versions.feature_schema(mv.run_id)
    threshold = mv.tags.threshold
    provenance = {"run_id": mv.run_id, "dataset_digest": mv.tags.dataset.digest}
    return build_wheel(
        model_name,
        mv.version,
        booster,
        schema,
        DEFAULT_THRESHOLD if threshold is None else threshold,
        out_dir,
        provenance,
    )
