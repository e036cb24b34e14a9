"""Writing a model wheel: names by the packaging specs, and the zip laid out as the wheel spec says.

A wheel is a zip with a ``.dist-info`` folder (METADATA, WHEEL, RECORD); nothing here needs a build
backend, so none is a dependency. The archive is reproducible: files in a fixed order with a fixed
timestamp, so one model version always gives the same bytes (and the same hash in a lock file).
"""

from __future__ import annotations

import base64
import hashlib
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

PREFIX = "flywheel-model-"
REQUIRES_PYTHON = ">=3.10"
_EPOCH = (1980, 1, 1, 0, 0, 0)
"""The earliest time a zip can hold: every file gets it, so the bytes depend on the contents only."""


class WheelNameError(ValueError):
    """A model name or version that makes no distribution name or PEP 440 version."""


@dataclass(frozen=True)
class WheelName:
    """A model version's distribution (``flywheel-model-flight-delay``), import package
    (``flywheel_model_flight_delay``) and version (``3``)."""

    distribution: str
    package: str
    version: str

    @property
    def filename(self) -> str:
        """``{distribution}-{version}-py3-none-any.whl``, the name escaped as the wheel spec asks."""
        return f"{self.package}-{self.version}-py3-none-any.whl"

    @property
    def dist_info(self) -> str:
        return f"{self.package}-{self.version}.dist-info"


def wheel_name(model_name: str, version: str) -> WheelName:
    """The names of a model version's wheel: the model name lower-cased, each run of other characters
    than letters and digits one ``-`` (PEP 503 normalised, a valid Python identifier once ``_``); the
    version a registry version number (PEP 440 normalised: no leading zeros)."""
    words = re.sub(r"[^a-z0-9]+", "-", model_name.lower()).strip("-")
    if not words:
        raise WheelNameError(f"model name {model_name[:80]!r} has no letters or digits to name a package")
    if not re.fullmatch(r"[0-9]{1,18}", version):
        raise WheelNameError(f"model version {version[:40]!r} is not a registry version number")
    distribution = PREFIX + words
    return WheelName(distribution, distribution.replace("-", "_"), str(int(version)))


def metadata(name: WheelName, summary: str, requires: list[str], description: str) -> str:
    """Core metadata 2.1: name, version, summary, the Python and the libraries it needs, a description."""
    lines = [
        "Metadata-Version: 2.1",
        f"Name: {name.distribution}",
        f"Version: {name.version}",
        f"Summary: {' '.join(summary.split())}",
        f"Requires-Python: {REQUIRES_PYTHON}",
        *[f"Requires-Dist: {r}" for r in requires],
        "Description-Content-Type: text/markdown",
    ]
    return "\n".join(lines) + "\n\n" + description


def _digest(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def write_wheel(
    out_dir: Path, name: WheelName, files: Mapping[str, bytes], meta: str, generator: str
) -> Path:
    """``out_dir/<filename>``: ``files`` (paths inside the import package) plus the dist-info folder, with a
    RECORD that lists each file's sha256 and size."""
    contents = {f"{name.package}/{path}": data for path, data in sorted(files.items())}
    info = name.dist_info
    contents[f"{info}/METADATA"] = meta.encode()
    wheel = f"Wheel-Version: 1.0\nGenerator: {generator}\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    contents[f"{info}/WHEEL"] = wheel.encode()
    record = [f"{path},{_digest(data)},{len(data)}" for path, data in contents.items()]
    contents[f"{info}/RECORD"] = ("\n".join([*record, f"{info}/RECORD,,"]) + "\n").encode()
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / name.filename
    partial = target.with_name(target.name + ".part")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path, data in contents.items():
            entry = zipfile.ZipInfo(path, date_time=_EPOCH)
            entry.external_attr = 0o644 << 16
            entry.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(entry, data)
    partial.replace(target)  # a reader never sees half a wheel
    return target
