"""Provenance: the code commit, the lock file's hash and the library versions a model is trained with.

Recorded on every version so that ``flywheel reproduce`` can say what differs between then and now; a
model retrained from the same data and parameters can only be expected to match on the same code.
Nothing here fails a training: what cannot be found is ``unknown``.
"""

from __future__ import annotations

import hashlib
import platform
import subprocess
from importlib import metadata
from pathlib import Path

from flywheel.contracts.model_version import CodeProvenance

ROOT = Path(__file__).resolve().parents[2]
"""The checkout (or installed tree) the running code comes from."""
LIBRARIES = ("xgboost", "numpy", "pandas", "scikit-learn", "mlflow")
"""The packages whose versions decide a model's trees and its metrics."""
GIT_TIMEOUT_S = 10.0


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(root), *args],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def _lock_hash(root: Path) -> str:
    lock = root / "uv.lock"
    try:
        return hashlib.sha256(lock.read_bytes()).hexdigest()
    except OSError:
        return "unknown"


def library_versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def capture(root: Path = ROOT) -> CodeProvenance:
    """The code as it is now: ``git rev-parse HEAD`` and whether tracked files differ from it (untracked
    files are not counted), the SHA-256 of ``uv.lock``, and the libraries' versions."""
    commit = _git(root, "rev-parse", "HEAD") if (root / ".git").exists() else None
    status = _git(root, "status", "--porcelain", "--untracked-files=no") if commit else None
    return CodeProvenance(
        commit=commit.strip() if commit else "unknown",
        dirty="unknown" if status is None else str(bool(status.strip())).lower(),
        lock_sha256=_lock_hash(root),
        libraries=library_versions(),
    )
