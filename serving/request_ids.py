"""Request ids the service issues and can recognise later, without shared state.

Feedback (``POST /feedback``) attaches ground truth to an earlier prediction by its request id, and
monitoring computes realized performance from those labels. If clients could choose ids, anyone could label
predictions that never happened, or relabel other people's. So the service issues every id itself, signed:

    <issued at, unix seconds, hex>-<rows, hex>-<nonce, 16 hex>-<MAC of the rest, 24 hex>

The MAC is keyed BLAKE2b (RFC 7693's keyed mode, a MAC by design), 96 bits. It was HMAC-SHA256 cut to 96
bits, and ids signed that way are still accepted (their window has not passed for months after an upgrade):
OpenSSL 3's one-shot HMAC looks up its algorithms on every call, which cost 15-20 us of CPU per prediction in
the service (measured in the request loop, where its caches are cold; 1.4 us in a tight loop), ~5% of a
single-row request; BLAKE2b is Python's own code, no look-up.

The service accepts feedback only for an id whose signature checks, that is not older than the feedback
window, and for as many labels as the request had rows. Verification needs only the key, so every worker and
replica that shares the key accepts every other one's ids, and a restart forgets nothing.

The key is ``FLYWHEEL_REQUEST_ID_KEY`` where set, else a key file in the stack's artifact store
(``serving/request-id.key``, created by the first service that needs it), which every worker and replica
reading that store shares.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flywheel.contracts import layout

if TYPE_CHECKING:
    from stacks.components.artifact_store import ArtifactStore

log = logging.getLogger("flywheel.serving")

KEY_ENV = "FLYWHEEL_REQUEST_ID_KEY"
_MAC_BYTES = 12
_MAC_HEX = 2 * _MAC_BYTES
_PERSON = b"flywheel-rid-v2"  # BLAKE2b's personalization: this key signs nothing else this way
# a batch request's rows are addressed as "<id>:<row>", the form the prediction log keeps
ROW_SEPARATOR = ":"


def row_ids(request_id: str, rows: int) -> list[str]:
    """How the prediction log and ``/feedback`` name each row of a request: the id itself for one row,
    ``<id>:<row>`` for each row of a batch."""
    return [request_id] if rows == 1 else [f"{request_id}{ROW_SEPARATOR}{i}" for i in range(rows)]


@dataclass(frozen=True)
class IssuedId:
    """What a valid id says about the request it was issued for."""

    request_id: str
    issued_at: float
    rows: int


class RequestIds:
    """Issues signed request ids and checks the ones feedback names."""

    def __init__(self, key: bytes, max_age_s: float, model: str = "") -> None:
        """``model`` scopes the ids: every model's service shares the store's key, so the signing key is
        derived from it per model, and one model's ``/feedback`` refuses the ids another model issued."""
        if len(key) < 16:
            raise ValueError("a request-id key needs at least 16 bytes")
        self._key = hmac.digest(key, b"flywheel request ids for model " + model.encode(), hashlib.sha256)
        self.max_age_s = max_age_s

    def issue(self, rows: int) -> str:
        body = f"{int(time.time()):x}-{rows:x}-{os.urandom(8).hex()}"
        return f"{body}-{self._mac(body.encode())}"

    def check(self, request_id: str, now: float | None = None) -> IssuedId | str:
        """The issued id, or the reason it is not one this service issued (or is too old to label)."""
        parts = request_id.split("-")
        if len(parts) != 4 or len(parts[3]) != _MAC_HEX:
            return "not a request id this service issued"
        body = request_id[: -_MAC_HEX - 1].encode()
        mac = parts[3].encode()
        # both compared whatever the first says: the time taken tells nothing of which one matched
        current = hmac.compare_digest(mac, self._mac(body).encode())
        legacy = hmac.compare_digest(mac, self._legacy_mac(body).encode())
        if not (current or legacy):
            return "not a request id this service issued"
        issued_at, rows = int(parts[0], 16), int(parts[1], 16)
        age = (time.time() if now is None else now) - issued_at
        if age > self.max_age_s:
            days, window = age / 86400, self.max_age_s / 86400
            return f"request id issued {days:.1f} days ago, past the {window:g}-day feedback window"
        return IssuedId(request_id, float(issued_at), rows)

    def _mac(self, body: bytes) -> str:
        return hashlib.blake2b(body, key=self._key, digest_size=_MAC_BYTES, person=_PERSON).hexdigest()

    def _legacy_mac(self, body: bytes) -> str:
        """The MAC of ids issued before keyed BLAKE2b (HMAC-SHA256, 24 hex): still accepted."""
        return hmac.digest(self._key, body, hashlib.sha256).hex()[:_MAC_HEX]


class LabelledIds:
    """Ids already labelled by this process, so a repeat is refused (409) instead of counted twice.

    Bounded: past ``capacity`` the oldest are forgotten (a repeat of one of those is accepted here, and
    monitoring, which keeps the first label of an id, counts it as a duplicate). Workers and replicas do not
    share this memory, for the same reason monitoring deduplicates as well.
    """

    def __init__(self, capacity: int = 1_000_000) -> None:
        self.capacity = capacity
        self._seen: OrderedDict[str, None] = OrderedDict()

    def claim(self, keys: list[str]) -> list[str]:
        """Mark ``keys`` labelled; returns those labelled before (nothing is marked then)."""
        repeated = [k for k in keys if k in self._seen]
        if repeated:
            return repeated
        for k in keys:
            self._seen[k] = None
        while len(self._seen) > self.capacity:
            self._seen.popitem(last=False)
        return []


def load_key(store: ArtifactStore) -> bytes:
    """The signing key: the environment's, else the artifact store's key file, created on first use.

    Every worker and replica of a model's service reads the same artifact store, so they share the key
    without any set-up, and a restarted container keeps it."""
    path = layout.request_id_key()  # beside the traffic it signs the ids of
    given = os.environ.get(KEY_ENV)
    if given:
        if len(given) < 16:
            raise ValueError(f"{KEY_ENV} must be at least 16 characters")
        return given.encode()
    with contextlib.suppress(FileNotFoundError):
        key = store.read_bytes(path)
        if len(key) >= 16:
            return key
    try:  # exclusive create: of processes starting together, one writes the key and the others read it
        with store.open(path, "xb") as handle:
            handle.write(secrets.token_hex(32).encode())
    except FileExistsError:
        pass
    except (ValueError, NotImplementedError, TypeError):  # a store without exclusive create: last writer wins
        store.write_bytes(path, secrets.token_hex(32).encode())
        time.sleep(0.2)  # read back what the last writer left, so racing processes agree
    for _ in range(100):
        key = store.read_bytes(path)
        if len(key) >= 16:
            return key
        time.sleep(0.02)  # the creator has opened the file and not yet written it
    raise RuntimeError(f"{store.uri(path)}: request-id key file is empty; delete it for a new one")


def stack_key(stack: Any) -> bytes:
    """The key of ``stack``'s artifact store (:func:`load_key`). If the store cannot be read, a key of this
    process's own: predictions are served, and feedback is accepted for this process's ids only (logged,
    so the cause is found)."""
    from stacks.components.artifact_store import ArtifactStore

    try:
        return load_key(ArtifactStore.from_stack(stack))
    except Exception as exc:  # a store that is down must not stop predictions
        log.error(
            "request-id key not readable from the artifact store (%s): feedback is accepted only for "
            "ids this process issues",
            exc,
        )
        return secrets.token_bytes(32)
