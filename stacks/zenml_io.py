"""Stack files to and from ZenML's `zenml stack export` / `zenml stack import` format.

ZenML writes `{stack_name, zenml_version, components: {type: {name, type, flavor,
configuration}}}` (one mapping per type) and its import reads exactly those keys, builds each
component with the flavor's config class, which forbids unknown keys, and refuses another
`zenml_version` unless given `--ignore-version-mismatch`. So an export may only put keys that
ZenML's flavor knows into `configuration`. Everything ZenML cannot hold (the Prefect
orchestrator's settings, drift thresholds, deployer, tuner, compute) goes into a top-level
`flywheel` section that ZenML ignores and our import reads back, so a round trip through a file
loses nothing. Secret references are copied as references: ZenML uses the same `{{name.key}}`.
Both directions hold no credential: the export masks (`secret_keys.mask_tree`) what a stack
could only hold if built around validation, and an import with a plain-text password (ZenML
accepts them) is refused like any stack file, naming the key and the reference to use instead.
"""

from __future__ import annotations

import copy
import importlib.metadata
import logging
import re
from pathlib import Path
from typing import Any

import yaml

from stacks import secret_keys
from stacks.config import (
    FLAVORS,
    STACK_NAME_PATTERN,
    ComponentType,
    Stack,
    StackError,
    parse_stack,
)
from stacks.loader import STACKS_DIR, display_path, imported_stacks_dir, read_yaml

__all__ = [
    "ZENML_FALLBACK_VERSION",
    "export_native",
    "export_zenml",
    "import_zenml",
    "import_zenml_with_warnings",
    "to_zenml_dict",
    "zenml_version",
]

logger = logging.getLogger(__name__)

ZENML_FALLBACK_VERSION = "0.98.0"
NATIVE_SECTION = "flywheel"

# our flavor -> ZenML flavor, per type; a type or flavor missing here has no ZenML equivalent
_TO_ZENML: dict[ComponentType, dict[str, str]] = {
    ComponentType.ARTIFACT_STORE: {"local": "local", "s3": "s3", "gcs": "gcp", "azure": "azure"},
    ComponentType.EXPERIMENT_TRACKER: {"mlflow": "mlflow"},
    ComponentType.MODEL_REGISTRY: {"mlflow": "mlflow"},
    ComponentType.DATA_VALIDATOR: {"whylogs": "whylogs"},
}
_FROM_ZENML: dict[ComponentType, dict[str, str]] = {
    t: {z: ours for ours, z in m.items()} for t, m in _TO_ZENML.items()
}
# ZenML's component types that we also have (ZenML has no tuner or compute)
_ZENML_TYPES = {
    "orchestrator",
    "artifact_store",
    "experiment_tracker",
    "model_registry",
    "data_validator",
    "model_deployer",
}
# keys of ZenML's S3ArtifactStoreConfig besides `path` (all passed to s3fs.S3FileSystem)
_ZENML_S3_KEYS = ("key", "secret", "token", "client_kwargs", "config_kwargs", "s3_additional_kwargs")
_ZENML_MLFLOW_KEYS = (
    "tracking_uri",
    "experiment_name",
    "tracking_username",
    "tracking_password",
    "tracking_token",
)


def zenml_version() -> str:
    """The installed ZenML's version, else a recent release (ZenML is not a runtime dependency)."""
    try:
        return importlib.metadata.version("zenml")
    except importlib.metadata.PackageNotFoundError:
        return ZENML_FALLBACK_VERSION


def _write_yaml(data: dict[str, Any], path: Path | str) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(yaml.safe_dump(data, sort_keys=False, default_flow_style=False), encoding="utf-8")


def export_native(stack: Stack, path: Path | str) -> None:
    """Write the stack in our own format (all components, effective values, references as references)."""
    _write_yaml(stack.to_dict(), path)


# --------------------------------------------------------------------------- export


def _zenml_configuration(
    ctype: ComponentType, flavor: str, cfg: dict[str, Any], warn: list[str]
) -> dict[str, Any]:
    """Our configuration as ZenML's flavor config, keeping only keys that flavor accepts."""
    if ctype is ComponentType.ARTIFACT_STORE:
        out: dict[str, Any] = {"path": cfg["path"]}
        options = dict(cfg.get("storage_options") or {})
        if flavor == "gcs" and out["path"].startswith("gcs://"):
            out["path"] = "gs://" + out["path"][len("gcs://") :]  # ZenML's gcp flavor takes gs:// only
        if flavor == "s3":
            if "endpoint_url" in options:  # s3fs takes it both ways; ZenML only in client_kwargs
                client = dict(options.pop("client_kwargs", None) or {})
                client.setdefault("endpoint_url", options.pop("endpoint_url"))
                options["client_kwargs"] = client
            out.update({k: options.pop(k) for k in _ZENML_S3_KEYS if k in options})
        if options:
            warn.append(
                f"artifact_store: storage_options {sorted(options)} have no place in ZenML's "
                f"'{_TO_ZENML[ctype][flavor]}' artifact store; kept in the '{NATIVE_SECTION}' section only"
            )
        return out
    if ctype is ComponentType.EXPERIMENT_TRACKER:
        out = {k: cfg[k] for k in _ZENML_MLFLOW_KEYS if cfg.get(k) is not None}
        remote = str(cfg["tracking_uri"]).startswith(("http://", "https://"))
        if remote and not (cfg.get("tracking_token") or cfg.get("tracking_username")):
            warn.append(
                "experiment_tracker: ZenML's MLflow tracker requires tracking_username/password or "
                f"tracking_token for the remote tracking_uri {cfg['tracking_uri']}; zenml stack import "
                "will reject it until you add them (as secret references)"
            )
        return out
    if ctype is ComponentType.MODEL_REGISTRY:
        if cfg.get("registry_uri") is not None:
            warn.append(
                "model_registry: ZenML's MLflow registry always uses the tracker's URI; "
                f"registry_uri kept in the '{NATIVE_SECTION}' section only"
            )
        return {}
    if ctype is ComponentType.DATA_VALIDATOR:
        defaults = FLAVORS[ctype][flavor]().model_dump(mode="json")
        if {k: v for k, v in cfg.items() if defaults.get(k) != v}:
            warn.append(
                "data_validator: ZenML's whylogs validator has no drift or validation thresholds; "
                f"they are kept in the '{NATIVE_SECTION}' section only"
            )
        return {}
    raise AssertionError(f"no ZenML mapping for {ctype}")  # pragma: no cover - guarded by _TO_ZENML


def to_zenml_dict(stack: Stack) -> tuple[dict[str, Any], list[str]]:
    """The `zenml stack import` document for a stack, and the warnings about what did not map."""
    warn: list[str] = []
    components: dict[str, Any] = {}
    for c in stack.components():
        cfg = secret_keys.mask_tree(c.configuration.model_dump(mode="json"))
        flavors = _TO_ZENML.get(c.type)
        if c.type is ComponentType.ORCHESTRATOR:
            # ZenML requires an orchestrator but has no Prefect flavor: its `local` one stands in
            components[c.type.value] = {
                "name": c.name,
                "type": c.type.value,
                "flavor": "local",
                "configuration": {},
            }
            warn.append(
                f"orchestrator: ZenML has no '{c.flavor}' flavor; exported as ZenML's 'local' orchestrator "
                f"(Prefect settings kept in the '{NATIVE_SECTION}' section)"
            )
        elif flavors is None or c.flavor not in flavors:
            what = f"'{c.flavor}' flavor of {c.type}" if c.type.value in _ZENML_TYPES else f"{c.type} type"
            warn.append(f"{c.type}: ZenML has no {what}; skipped (kept in the '{NATIVE_SECTION}' section)")
        else:
            components[c.type.value] = {
                "name": c.name,
                "type": c.type.value,
                "flavor": flavors[c.flavor],
                "configuration": _zenml_configuration(c.type, c.flavor, cfg, warn),
            }
    data = {
        "stack_name": stack.name,
        "zenml_version": zenml_version(),
        "components": components,
        NATIVE_SECTION: {"components": stack.to_dict()["components"]},
    }
    return data, warn


def export_zenml(stack: Stack, path: Path | str) -> list[str]:
    """Write a file that `zenml stack import` accepts; return warnings about what did not map."""
    data, warn = to_zenml_dict(stack)
    _write_yaml(data, path)
    return warn


# --------------------------------------------------------------------------- import


def _from_zenml_configuration(
    ctype: ComponentType, zflavor: str, cfg: dict[str, Any], warn: list[str]
) -> dict[str, Any]:
    """ZenML's flavor config as ours; keys we have no place for are dropped with a warning."""
    cfg = {k: v for k, v in cfg.items() if v is not None}
    if ctype is ComponentType.ARTIFACT_STORE:
        out: dict[str, Any] = {"path": cfg.pop("path", "")}
        if zflavor == "s3":
            options = {k: cfg.pop(k) for k in _ZENML_S3_KEYS if k in cfg}
            if options:
                out["storage_options"] = options
    elif ctype is ComponentType.EXPERIMENT_TRACKER:
        out = {k: cfg.pop(k) for k in _ZENML_MLFLOW_KEYS if k in cfg}
        if "tracking_uri" not in out:
            out["tracking_uri"] = "sqlite:///mlflow.db"
            warn.append(
                "experiment_tracker: no tracking_uri (ZenML's local MLflow); using sqlite:///mlflow.db "
                "under flywheel home"
            )
    else:
        out = {}
    if cfg:
        warn.append(f"{ctype}: ZenML keys {sorted(cfg)} have no Flywheel equivalent; dropped")
    return out


def _exports_as(ctype: ComponentType, flavor: str, native: dict[str, Any], zconfig: dict[str, Any]) -> bool:
    """True if exporting `native` gives exactly `zconfig`, i.e. nobody edited the ZenML part."""
    try:
        return _zenml_configuration(ctype, flavor, native, []) == zconfig
    except (KeyError, TypeError, AttributeError):
        return False


def _merge(from_zenml: dict[str, Any], native: dict[str, Any]) -> dict[str, Any]:
    """What ZenML carries wins; the flywheel section fills in what ZenML cannot hold (one level deep)."""
    merged = copy.deepcopy(native)
    for key, value in from_zenml.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            inner = {**merged[key], **value}
            if isinstance(value.get("client_kwargs"), dict) and "endpoint_url" in value["client_kwargs"]:
                inner.pop("endpoint_url", None)  # the export moved it into client_kwargs
            merged[key] = inner
        else:
            merged[key] = value
    return merged


def _entry(raw: object) -> dict[str, Any] | None:
    """A component entry: ZenML writes a mapping, some tools a one-item list."""
    if isinstance(raw, list) and len(raw) == 1:
        raw = raw[0]
    return raw if isinstance(raw, dict) else None


def _convert(data: dict[str, Any], source: str, warn: list[str]) -> dict[str, Any]:
    """A ZenML export as our native document, merged with its `flywheel` section when present."""
    native_section = data.get(NATIVE_SECTION)
    extras: dict[str, Any] = {}
    if isinstance(native_section, dict) and isinstance(native_section.get("components"), dict):
        extras = native_section["components"]
    raw_components = data.get("components")
    if not isinstance(raw_components, dict):
        raise StackError(f"{source}: 'components' must map component types to components")

    known_types = {t.value for t in ComponentType}
    components: dict[str, Any] = {}
    for key, raw in raw_components.items():
        entry = _entry(raw)
        if entry is None:
            warn.append(f"{key}: not a single component mapping; skipped")
            continue
        zflavor = str(entry.get("flavor"))
        if key not in known_types:
            warn.append(f"{key}: Flywheel has no '{key}' component type; skipped")
            continue
        ctype = ComponentType(key)
        ours = _FROM_ZENML.get(ctype, {}).get(zflavor)
        extra = _entry(extras.get(key))
        if ours is None:
            if extra is None:
                warn.append(f"{key}: ZenML flavor '{zflavor}' has no Flywheel equivalent; skipped")
            elif not (ctype is ComponentType.ORCHESTRATOR and zflavor == "local"):  # not what we exported
                warn.append(
                    f"{key}: ZenML flavor '{zflavor}' has no Flywheel equivalent; using the "
                    f"'{extra.get('flavor')}' one from the '{NATIVE_SECTION}' section"
                )
            continue  # restored from the flywheel section below
        zconfig = dict(entry.get("configuration") or {})
        native: dict[str, Any] | None = None
        if extra is not None and extra.get("name") == entry.get("name") and extra.get("flavor") == ours:
            native = dict(extra.get("configuration") or {})
        if native is not None and _exports_as(ctype, ours, native, zconfig):
            config = copy.deepcopy(native)  # ZenML part untouched since export: ours is exact
        else:
            config = _from_zenml_configuration(ctype, zflavor, zconfig, warn)
            if native is not None:
                config = _merge(config, native)
        components[key] = {"name": entry.get("name"), "flavor": ours, "configuration": config}

    for key, raw in extras.items():
        extra = _entry(raw)
        if key not in components and key in known_types and extra is not None:
            components[key] = copy.deepcopy(extra)

    if ComponentType.ORCHESTRATOR.value not in components:
        components[ComponentType.ORCHESTRATOR.value] = {
            "name": "prefect-ephemeral",
            "flavor": "prefect",
            "configuration": {"api_url": None},
        }
        warn.append(
            "orchestrator: none that Flywheel can run; added the default Prefect orchestrator (ephemeral API)"
        )
    ordered = {t.value: components[t.value] for t in ComponentType if t.value in components}
    return {"stack_name": data.get("stack_name"), "components": ordered}


def import_zenml_with_warnings(path: Path | str, name: str | None = None) -> tuple[Stack, list[str]]:
    """Import a ZenML export (or a native file) into `flywheel_home()/stacks/<name>.yaml`.

    Returns the stack and the warnings about what did not map.

    A file with `zenml_version` is converted from ZenML's flavors; one without is read as our own
    format. The result must validate like any stack file, or StackError is raised and nothing is written.
    """
    src = Path(path)
    shown = display_path(src)
    data = read_yaml(src)
    if not isinstance(data, dict):
        raise StackError(f"{shown}: expected a mapping with stack_name and components")
    warn: list[str] = []
    document = _convert(data, shown, warn) if "zenml_version" in data else dict(data)
    stack_name = name or document.get("stack_name")
    if not isinstance(stack_name, str) or not re.match(STACK_NAME_PATTERN, stack_name):
        raise StackError(f"{shown}: stack name {stack_name!r} is not usable as a file name; pass --name")
    if (STACKS_DIR / f"{stack_name}.yaml").is_file():
        raise StackError(
            f"{shown}: '{stack_name}' is a stack shipped with Flywheel, which would shadow the import; "
            "pass --name"
        )
    document["stack_name"] = stack_name
    stack = parse_stack(document, shown)  # validate before writing anything
    target = imported_stacks_dir() / f"{stack_name}.yaml"
    _write_yaml(stack.to_dict(), target)
    return stack.model_copy(update={"source": display_path(target)}), warn


def import_zenml(path: Path | str, name: str | None = None) -> Stack:
    """Import a ZenML export into flywheel home (see `import_zenml_with_warnings`); warnings are logged."""
    stack, warn = import_zenml_with_warnings(path, name)
    for w in warn:
        logger.warning(w)
    return stack
