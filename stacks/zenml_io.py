"""Stack files to and from ZenML's `zenml stack export` / `zenml stack import` format.

ZenML writes `{stack_name, zenml_version, components: {type: [{name, type, flavor,
configuration}]}}` and its import reads exactly those keys (a mapping or a one-item list per type),
builds each component with its flavor's config class, refuses a configuration key that class does
not know, and refuses another `zenml_version` unless given `--ignore-version-mismatch`. The e2e test
`tests/e2e/test_zenml_roundtrip.py` holds this module to a real ZenML (the version
`ZENML_FALLBACK_VERSION` names): our three stacks through `zenml stack import` and `zenml stack export`
and back. Ours -> ZenML's, and what ZenML has no key for:

- orchestrator `prefect` -> `local` (a stand-in: ZenML has no Prefect flavor); every Prefect setting.
- artifact_store `local`, `s3`, `gcs`, `azure` -> `local`, `s3`, `gcp` (`gs://` only), `azure`; the
  `storage_options`, except for s3 s3fs's `key`, `secret`, `token`, `client_kwargs` (our top-level
  `endpoint_url` moves in there), `config_kwargs` and `s3_additional_kwargs`.
- experiment_tracker `mlflow` -> `mlflow`, same keys; left out when its URI is remote and it has no
  credentials, which ZenML refuses (staging's MLflow server).
- model_registry `mlflow` -> `mlflow`, left out with the tracker (ZenML's needs one in the stack);
  `registry_uri` (ZenML's always uses the tracker's URI).
- data_validator `whylogs` -> `whylogs`; the thresholds and the retraining policy.
- model_deployer, tuner, compute: left out (ZenML has no tuner or compute type, and its `deployer`
  serves pipelines, not a registered model).

Everything ZenML cannot hold goes into a top-level `flywheel` section, which `zenml stack import`
ignores, so a file of ours read back by our import loses nothing. `zenml stack export` does not write
that section, so a file that ZenML wrote holds only the ZenML part: `import_zenml_with_warnings(...,
base=stack)` (`flywheel stack import FILE --base STACK`) takes what ZenML cannot hold from one of our
stacks instead, component by component where the ZenML one still has the base's name and flavor, and
every component of a type ZenML cannot hold (or that our export of the base leaves out). What ZenML's
file says wins over the base; a component removed in ZenML stays removed. Without a section or a base
the import says what it could not restore, and a ZenML `local` orchestrator becomes Prefect's
ephemeral one.

Secrets: ZenML writes `{{name.key}}` references as we do and keeps them as references, but resolves
them from its own secret store, and `zenml stack import` fails on a missing one that a flavor checks
(MLflow's credentials): the export's warnings list the `zenml secret create` commands to run first.
`${VAR}` references are ours only. Neither direction holds a credential: the export masks
(`Stack.to_dict`) what a stack could only hold if built around validation, and an import with
a plain-text password (ZenML accepts them) is refused like any stack file, naming the key and the
reference to use instead. Relative paths are written as they are: we anchor them under flywheel home,
ZenML under its working directory, which the export warns about.
"""

from __future__ import annotations

import copy
import importlib.metadata
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from stacks import secrets
from stacks.config import (
    FLAVORS,
    STACK_NAME_PATTERN,
    ComponentType,
    Stack,
    StackError,
    parse_stack,
)
from stacks.loader import STACKS_DIR, display_path, imported_stacks_dir, read_yaml
from stacks.paths import has_url_scheme

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
"""The ZenML release an export names when zenml is not installed; the e2e test imports into it."""
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
_SQLITE = "sqlite:///"

Warn = Callable[[str], None]


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


def _relative(value: str) -> bool:
    return not has_url_scheme(value) and not Path(value).expanduser().is_absolute()


def _needs_zenml_auth(cfg: dict[str, Any]) -> bool:
    """ZenML's MLflow tracker refuses a remote URI without username/password or a token."""
    remote = str(cfg.get("tracking_uri")).startswith(("http://", "https://"))
    return remote and not (cfg.get("tracking_token") or cfg.get("tracking_username"))


def _zenml_configuration(
    ctype: ComponentType, flavor: str, cfg: dict[str, Any], warn: Warn
) -> dict[str, Any]:
    """Our configuration as ZenML's flavor config, keeping only keys that flavor accepts."""
    if ctype is ComponentType.ARTIFACT_STORE:
        out: dict[str, Any] = {"path": cfg["path"]}
        options = dict(cfg.get("storage_options") or {})
        if flavor == "gcs" and out["path"].startswith("gcs://"):
            out["path"] = "gs://" + out["path"][len("gcs://") :]  # ZenML's gcp flavor takes gs:// only
        if flavor == "local" and _relative(out["path"]):
            warn(
                f"artifact_store: path '{out['path']}' is relative: Flywheel anchors it under flywheel "
                "home, ZenML under its working directory; write an absolute path to share the folder"
            )
        if flavor == "s3":
            if "endpoint_url" in options:  # s3fs takes it both ways; ZenML only in client_kwargs
                client = dict(options.pop("client_kwargs", None) or {})
                client.setdefault("endpoint_url", options.pop("endpoint_url"))
                options["client_kwargs"] = client
            out.update({k: options.pop(k) for k in _ZENML_S3_KEYS if k in options})
        if options:
            warn(
                f"artifact_store: storage_options {sorted(options)} have no place in ZenML's "
                f"'{_TO_ZENML[ctype][flavor]}' artifact store; kept in the '{NATIVE_SECTION}' section only"
            )
        return out
    if ctype is ComponentType.EXPERIMENT_TRACKER:
        uri = str(cfg["tracking_uri"])
        if uri.startswith(_SQLITE) and _relative(uri[len(_SQLITE) :].partition("?")[0]):
            warn(
                f"experiment_tracker: tracking_uri {uri} is relative: Flywheel anchors it under flywheel "
                "home, ZenML's MLflow under its working directory"
            )
        return {k: cfg[k] for k in _ZENML_MLFLOW_KEYS if cfg.get(k) is not None}
    if ctype is ComponentType.MODEL_REGISTRY:
        if cfg.get("registry_uri") is not None:
            warn(
                "model_registry: ZenML's MLflow registry always uses the tracker's URI; "
                f"registry_uri kept in the '{NATIVE_SECTION}' section only"
            )
        return {}
    if ctype is ComponentType.DATA_VALIDATOR:
        defaults = FLAVORS[ctype][flavor]().model_dump(mode="json")
        if {k: v for k, v in cfg.items() if defaults.get(k) != v}:
            warn(
                "data_validator: ZenML's whylogs validator has no drift or validation thresholds; "
                f"they are kept in the '{NATIVE_SECTION}' section only"
            )
        return {}
    raise AssertionError(f"no ZenML mapping for {ctype}")  # pragma: no cover - guarded by _TO_ZENML


def _zenml_component(
    ctype: ComponentType, entry: dict[str, Any], tracker_in_zenml: bool, warn: Warn
) -> dict[str, Any] | None:
    """One of our components (native dict form) as ZenML's, or None where ZenML cannot take it."""
    name, flavor = entry["name"], entry["flavor"]
    cfg = dict(entry.get("configuration") or {})
    if ctype is ComponentType.ORCHESTRATOR:
        # ZenML requires an orchestrator but has no Prefect flavor: its `local` one stands in
        warn(
            f"orchestrator: ZenML has no '{flavor}' flavor; exported as ZenML's 'local' orchestrator "
            f"(Prefect settings kept in the '{NATIVE_SECTION}' section)"
        )
        return {"name": name, "type": ctype.value, "flavor": "local", "configuration": {}}
    flavors = _TO_ZENML.get(ctype)
    if flavors is None or flavor not in flavors:
        what = f"'{flavor}' flavor of {ctype}" if ctype.value in _ZENML_TYPES else f"{ctype} type"
        warn(f"{ctype}: ZenML has no {what}; skipped (kept in the '{NATIVE_SECTION}' section)")
        return None
    if ctype is ComponentType.EXPERIMENT_TRACKER and _needs_zenml_auth(cfg):
        warn(
            "experiment_tracker: ZenML's MLflow tracker refuses the remote tracking_uri "
            f"{cfg['tracking_uri']} without tracking_username/password or tracking_token, so it is left "
            f"out of ZenML's stack (kept in the '{NATIVE_SECTION}' section); add credentials as secret "
            "references to export it"
        )
        return None
    if ctype is ComponentType.MODEL_REGISTRY and not tracker_in_zenml:
        warn(
            "model_registry: ZenML's MLflow registry needs an MLflow experiment tracker in the same "
            f"stack; left out of ZenML's stack with it (kept in the '{NATIVE_SECTION}' section)"
        )
        return None
    return {
        "name": name,
        "type": ctype.value,
        "flavor": flavors[flavor],
        "configuration": _zenml_configuration(ctype, flavor, cfg, warn),
    }


def _zenml_part(components: dict[str, Any], warn: Warn) -> dict[str, Any]:
    """ZenML's `components` for ours (native dict form, already masked), in our type order."""
    out: dict[str, Any] = {}
    for ctype in ComponentType:
        entry = components.get(ctype.value)
        if entry is not None:
            zen = _zenml_component(ctype, entry, ComponentType.EXPERIMENT_TRACKER.value in out, warn)
            if zen is not None:
                out[ctype.value] = zen
    return out


def _secret_warnings(zenml_components: dict[str, Any]) -> list[str]:
    """What ZenML needs before it can read the references its part holds."""
    refs = secrets.find_refs({k: v["configuration"] for k, v in zenml_components.items()})
    wanted: dict[str, set[str]] = {}
    ours_only = []
    for key, ref in refs:
        if ref.startswith("{{"):
            secret, _, field = ref[2:-2].strip().partition(".")
            wanted.setdefault(secret, set()).add(field)
        else:
            ours_only.append(f"{key} = {ref}")
    out = []
    if wanted:
        commands = "; ".join(
            f"zenml secret create {s} " + " ".join(f"--{f}=..." for f in sorted(fields))
            for s, fields in sorted(wanted.items())
        )
        out.append(
            "secrets: ZenML resolves {{name.key}} from its own secret store (zenml stack import fails "
            f"on a missing one that a flavor checks, a run on any); create them there first: {commands}"
        )
    if ours_only:
        out.append(f"secrets: ZenML reads ${{VAR}} references as plain text: {', '.join(ours_only)}")
    return out


def to_zenml_dict(stack: Stack) -> tuple[dict[str, Any], list[str]]:
    """The `zenml stack import` document for a stack, and the warnings about what did not map."""
    warn: list[str] = []
    native = stack.to_dict()["components"]
    components = _zenml_part(native, warn.append)
    warn.extend(_secret_warnings(components))
    data = {
        "stack_name": stack.name,
        "zenml_version": zenml_version(),
        "components": components,
        NATIVE_SECTION: {"components": native},
    }
    return data, warn


def export_zenml(stack: Stack, path: Path | str) -> list[str]:
    """Write a file that `zenml stack import` accepts; return warnings about what did not map."""
    data, warn = to_zenml_dict(stack)
    _write_yaml(data, path)
    return warn


# --------------------------------------------------------------------------- import


def _from_zenml_configuration(
    ctype: ComponentType, zflavor: str, cfg: dict[str, Any], warn: Warn
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
            warn(
                "experiment_tracker: no tracking_uri (ZenML's local MLflow); using sqlite:///mlflow.db "
                "under flywheel home"
            )
    else:
        out = {}
    if cfg:
        warn(f"{ctype}: ZenML keys {sorted(cfg)} have no Flywheel equivalent; dropped")
    return out


def _exports_as(ctype: ComponentType, flavor: str, native: dict[str, Any], zconfig: dict[str, Any]) -> bool:
    """True if exporting `native` gives exactly `zconfig`, i.e. nobody edited the ZenML part."""
    try:
        return _zenml_configuration(ctype, flavor, native, lambda _: None) == zconfig
    except (KeyError, TypeError, AttributeError):
        return False


def _merge(from_zenml: dict[str, Any], native: dict[str, Any]) -> dict[str, Any]:
    """What ZenML carries wins; the native part fills in what ZenML cannot hold (one level deep)."""
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
    """A component entry: ours and older ZenML write a mapping, `zenml stack export` a one-item list."""
    if isinstance(raw, list) and len(raw) == 1:
        raw = raw[0]
    return raw if isinstance(raw, dict) else None


def _held_by_zenml(extras: dict[str, Any]) -> set[str]:
    """The types of `extras` that our export puts into ZenML's part (the orchestrator is a stand-in)."""
    held: set[str] = set()
    for key in extras:
        try:
            part = _zenml_part({key: _entry(extras[key]), **_tracker_of(extras)}, lambda _: None)
        except (KeyError, TypeError, AttributeError, ValueError):
            continue  # not a component our export could map
        if key in part and key != ComponentType.ORCHESTRATOR.value:
            held.add(key)
    return held


def _tracker_of(extras: dict[str, Any]) -> dict[str, Any]:
    """The tracker entry, which decides whether the registry is exported."""
    key = ComponentType.EXPERIMENT_TRACKER.value
    tracker = _entry(extras.get(key))
    return {key: tracker} if tracker is not None else {}


def _convert(
    data: dict[str, Any], source: str, warn: Warn, extras: dict[str, Any], label: str
) -> dict[str, Any]:
    """A ZenML export as our native document, completed from `extras` (our components, from `label`)."""
    raw_components = data.get("components")
    if not isinstance(raw_components, dict):
        raise StackError(f"{source}: 'components' must map component types to components")

    known_types = {t.value for t in ComponentType}
    components: dict[str, Any] = {}
    for key, raw in raw_components.items():
        entry = _entry(raw)
        if entry is None:
            warn(f"{key}: not a single component mapping; skipped")
            continue
        zflavor = str(entry.get("flavor"))
        if key not in known_types:
            warn(f"{key}: Flywheel has no '{key}' component type; skipped")
            continue
        ctype = ComponentType(key)
        ours = _FROM_ZENML.get(ctype, {}).get(zflavor)
        extra = _entry(extras.get(key))
        if ours is None:
            stand_in = ctype is ComponentType.ORCHESTRATOR and zflavor == "local"  # what we export
            if extra is None and not stand_in:  # the stand-in gets the default orchestrator, said below
                warn(f"{key}: ZenML flavor '{zflavor}' has no Flywheel equivalent; skipped")
            elif extra is not None and not stand_in:
                warn(
                    f"{key}: ZenML flavor '{zflavor}' has no Flywheel equivalent; using the "
                    f"'{extra.get('flavor')}' one from {label}"
                )
            continue  # restored from extras below
        zconfig = dict(entry.get("configuration") or {})
        native: dict[str, Any] | None = None
        if extra is not None and extra.get("name") == entry.get("name") and extra.get("flavor") == ours:
            native = dict(extra.get("configuration") or {})
        elif extra is not None:
            warn(
                f"{key}: ZenML's '{entry.get('name')}' ({zflavor}) is not '{extra.get('name')}' "
                f"({extra.get('flavor')}) of {label}; taken from ZenML alone"
            )
        if native is not None and _exports_as(ctype, ours, native, zconfig):
            config = copy.deepcopy(native)  # ZenML part untouched since export: ours is exact
        else:
            config = _from_zenml_configuration(ctype, zflavor, zconfig, warn)
            if native is not None:
                config = _merge(config, native)
        components[key] = {"name": entry.get("name"), "flavor": ours, "configuration": config}

    held = _held_by_zenml(extras)
    for key, raw in extras.items():
        extra = _entry(raw)
        if key in components or key not in known_types or extra is None:
            continue
        if key in held:  # ZenML could hold it and does not: it was removed there
            warn(f"{key}: '{extra.get('name')}' of {label} is not in ZenML's stack; not restored")
            continue
        components[key] = copy.deepcopy(extra)

    if ComponentType.ORCHESTRATOR.value not in components:
        components[ComponentType.ORCHESTRATOR.value] = {
            "name": "prefect-ephemeral",
            "flavor": "prefect",
            "configuration": {"api_url": None},
        }
        warn(
            "orchestrator: none that Flywheel can run; added the default Prefect orchestrator (ephemeral API)"
        )
    ordered = {t.value: components[t.value] for t in ComponentType if t.value in components}
    return {"stack_name": data.get("stack_name"), "components": ordered}


def _extras(data: dict[str, Any], base: Stack | None, warn: Warn) -> tuple[dict[str, Any], str]:
    """Our components that complete a ZenML file, and where they come from (for the warnings)."""
    section = data.get(NATIVE_SECTION)
    has_section = isinstance(section, dict) and isinstance(section.get("components"), dict)
    if base is not None:
        if has_section:
            warn(f"the file's '{NATIVE_SECTION}' section is ignored: --base {base.name} was given")
        return base.to_dict()["components"], f"stack '{base.name}'"
    if has_section:
        assert isinstance(section, dict)
        return section["components"], f"the '{NATIVE_SECTION}' section"
    warn(
        f"no '{NATIVE_SECTION}' section (zenml stack export writes none): what ZenML cannot hold (the "
        "Prefect orchestrator, model deployer, tuner, compute, settings its flavors have no key for, a "
        "component it refused) is not in this file; pass --base STACK to take it from one of your stacks"
    )
    return {}, f"the '{NATIVE_SECTION}' section"


def import_zenml_with_warnings(
    path: Path | str, name: str | None = None, base: Stack | None = None
) -> tuple[Stack, list[str]]:
    """Import a ZenML export (or a native file) into `flywheel_home()/stacks/<name>.yaml`.

    Returns the stack and the warnings about what did not map.

    A file with `zenml_version` is converted from ZenML's flavors and completed with what ZenML
    cannot hold: from `base` when given, else from the file's `flywheel` section (which only files
    we wrote have). One without `zenml_version` is read as our own format, complete by itself. The
    result must validate like any stack file, or StackError is raised and nothing is written.
    """
    src = Path(path)
    shown = display_path(src)
    data = read_yaml(src)
    if not isinstance(data, dict):
        raise StackError(f"{shown}: expected a mapping with stack_name and components")
    warn: list[str] = []
    if "zenml_version" in data:
        extras, label = _extras(data, base, warn.append)
        document = _convert(data, shown, warn.append, extras, label)
    else:
        document = dict(data)
        if base is not None:
            warn.append(
                f"--base {base.name} ignored: {shown} is in Flywheel's own format, complete by itself"
            )
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


def import_zenml(path: Path | str, name: str | None = None, base: Stack | None = None) -> Stack:
    """Import a ZenML export into flywheel home (see `import_zenml_with_warnings`); warnings are logged."""
    stack, warn = import_zenml_with_warnings(path, name, base)
    for w in warn:
        logger.warning(w)
    return stack
