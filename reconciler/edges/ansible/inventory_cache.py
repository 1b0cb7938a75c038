"""The parsed-inventory cache: one JSON file per content key in a directory of the state dir.

Contract:

* ``DiskCache(directory, keep=32)``: ``put(key, document)`` writes ``<key>.json`` atomically
  (a temporary file in the same directory, fsync, rename) with mode 0600, in a directory
  created 0700 (its parent, the state dir, must exist: it is not created here), then keeps
  only the ``keep`` most recently used entries (by mtime; ``get`` touches the file it
  returns) and removes temporary files older than an hour. Failing to write (no state dir
  yet, a read-only one, another user's CLI) is logged and ignored: the cache only saves time.
* ``get(key)`` returns the ``Inventory`` stored for ``key``, or None when there is none or it
  cannot be trusted: larger than ``max_bytes``, not JSON, another format, another key, or a
  shape ``inventory_data.decode`` refuses. Such a file is ignored (the caller parses again
  and overwrites it), never half-used.
* Keys are SHA-256 hex digests (anything else is refused), so a key cannot name a path.

The cache is not the state store: it is never in ``state.db``; reads (``diff``, ``plan``,
``status``) may fill it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

from reconciler.desired.inventories import Inventory
from reconciler.edges.ansible import inventory_data
from reconciler.support.text import safe

__all__ = ["DiskCache"]

log = logging.getLogger(__name__)

_FORMAT = 1
_KEY_RE = re.compile(r"^[0-9a-f]{64}$")
_STALE_TMP_S = 3600


class DiskCache:
    def __init__(self, directory: Path, *, keep: int = 32, max_bytes: int = 64 << 20) -> None:
        if keep < 1:
            raise ValueError("keep must be >= 1")
        self.directory = Path(directory)
        self.keep = keep
        self.max_bytes = max_bytes

    def _path(self, key: str) -> Path:
        if not _KEY_RE.match(key):
            raise ValueError(f"not a cache key: {key!r}")
        return self.directory / f"{key}.json"

    def get(self, key: str) -> Inventory | None:
        path = self._path(key)
        try:
            with path.open("rb") as handle:
                data = handle.read(self.max_bytes + 1)
        except OSError:
            return None
        try:
            if len(data) > self.max_bytes:
                raise ValueError("too large")
            document = json.loads(data)
            if not isinstance(document, dict) or document.get("format") != _FORMAT:
                raise ValueError("another format")
            if document.get("key") != key:
                raise ValueError("another key")
            inventory = inventory_data.decode(document.get("inventory"))
        except ValueError as exc:  # json's errors are ValueErrors too
            log.warning("inventory cache: ignoring %s: %s", path.name, safe(str(exc)))
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # most recently used
        return inventory

    def put(self, key: str, document: dict[str, Any]) -> None:
        path = self._path(key)
        body = {
            "format": _FORMAT,
            "key": key,
            "inventory": {"groups": document["groups"], "hosts": document["hosts"]},
        }
        try:
            self.directory.mkdir(mode=0o700, exist_ok=True)  # never the state dir itself
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=self.directory)
            try:
                os.fchmod(fd, 0o600)
                with os.fdopen(fd, "w", encoding="utf-8") as handle:
                    json.dump(body, handle, separators=(",", ":"))
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        except OSError as exc:
            log.info("inventory cache: not written (%s)", safe(str(exc)))
            return
        self._prune()

    def _prune(self) -> None:
        entries = []
        try:
            for entry in self.directory.iterdir():
                mtime = entry.stat().st_mtime
                if entry.suffix == ".json" and _KEY_RE.match(entry.stem):
                    entries.append((mtime, entry))
                elif entry.name.startswith(".tmp-") and mtime < time.time() - _STALE_TMP_S:
                    entry.unlink()  # left by a writer that died
        except OSError:
            return
        entries.sort(reverse=True)
        for _, entry in entries[self.keep :]:
            with contextlib.suppress(OSError):
                entry.unlink()
