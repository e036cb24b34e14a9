"""The artifact store: one fsspec filesystem rooted at the stack's artifact path.

Steps write snapshots, profiles and reports through this object only, so the same code lands files on a
local folder, S3 (or any S3-compatible endpoint), GCS or Azure depending on the stack.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any


class ArtifactStore:
    """A rooted view of an fsspec filesystem with write-once semantics for content-addressed files."""

    def __init__(self, root: str, storage_options: dict[str, Any] | None = None) -> None:
        from fsspec.core import url_to_fs

        self.root_uri = root.rstrip("/")
        self.fs, self._root = url_to_fs(self.root_uri, **(storage_options or {}))
        self._protocol = self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]
        if self._protocol in ("file", "local"):
            self.fs.makedirs(self._root, exist_ok=True)

    @classmethod
    def from_stack(cls, stack: Any) -> ArtifactStore:
        """The stack's store, its credentials resolved the stack's way (environment, then its Prefect API)."""
        return cls(stack.artifact_root(), stack.storage_options())

    def _path(self, relative: str) -> str:
        return posixpath.join(self._root, relative.lstrip("/"))

    def uri(self, relative: str) -> str:
        """The full URI of a relative path, as recorded in lineage and shown to users."""
        return posixpath.join(self.root_uri, relative.lstrip("/"))

    def exists(self, relative: str) -> bool:
        return bool(self.fs.exists(self._path(relative)))

    def write_bytes(self, relative: str, data: bytes) -> str:
        path = self._path(relative)
        self.fs.makedirs(posixpath.dirname(path), exist_ok=True)
        with self.fs.open(path, "wb") as handle:
            handle.write(data)
        return self.uri(relative)

    def read_bytes(self, relative: str) -> bytes:
        with self.fs.open(self._path(relative), "rb") as handle:
            data: bytes = handle.read()
        return data

    @contextmanager
    def open(self, relative: str, mode: str = "rb") -> Iterator[IO[Any]]:
        path = self._path(relative)
        if "w" in mode or "x" in mode:  # "x": exclusive create
            self.fs.makedirs(posixpath.dirname(path), exist_ok=True)
        with self.fs.open(path, mode) as handle:
            yield handle

    def children(self, prefix: str) -> list[str]:
        """The names directly below a prefix, sorted (empty when it does not exist): one listing, where
        :meth:`list` walks everything below, so a search by folder (the prediction log's days) stays
        bounded."""
        base = self._path(prefix)
        if not self.fs.exists(base):
            return []
        found = self.fs.ls(base, detail=False)
        return sorted(posixpath.basename(str(p).rstrip("/")) for p in found)

    def list(self, prefix: str) -> list[str]:
        """Relative paths of the files below a prefix (empty when the prefix does not exist)."""
        base = self._path(prefix)
        if not self.fs.exists(base):
            return []
        root = self._root.rstrip("/") + "/"
        found = self.fs.find(base)
        return sorted(str(p)[len(root) :] if str(p).startswith(root) else str(p) for p in found)
