"""Ansible inventories (INI, YAML, TOML or a directory), parsed only in a bounded child process.

Contract of ``InventoryParser(...)(path, root=, environment=)`` (an ``InventoryReader``):

* Returns every group with its hosts (children included, Ansible order) and, per host, the
  address (``ansible_host`` or the name) and the app ports (``deploy_app_ports``) health gates
  need. Variables are read, never templated.
* Ansible never runs in this process: ``edges.ansible.inventory_process`` runs it in a fresh,
  bounded child (``limits``: wall clock, address space, output size). Only the static inventory
  plugins (``STATIC_PLUGINS``) are enabled, and an executable inventory or a ``plugin:``
  source is rejected before any child starts (``edges.ansible.inventory_sources``), unless the
  operator lists the environment in ``dynamic`` (``execution.dynamic_inventories``: environment
  -> the plugins to enable on top, e.g. ``script``, ``auto``); a dynamic inventory still runs
  only in the child, and its result is never cached.
* Vault: ``vault`` lists ``(vault id, password file)``; the child reads the files itself.
  Without them, vault-encrypted vars are not decrypted (a vaulted ``ansible_host`` reads as
  absent). A result that holds a value from a vault is never written anywhere.
* Cache (``cache_dir``, optional): a static result is stored by the SHA-256 of the inventory's
  files and of the parser's settings (``edges.ansible.inventory_cache``), so an unchanged
  inventory is not parsed again, in this process or another one (a restart, the CLI).
* Any failure (bad content, Ansible error, timeout, memory, crash, malformed output, unreadable
  files) raises ``InventoryError`` with one terminal-safe, length-capped line naming the file
  (repository-relative) and the line when known. Nothing else escapes.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from reconciler import __version__
from reconciler.desired.inventories import Inventory, InventoryError
from reconciler.edges.ansible import inventory_data, inventory_process, inventory_sources
from reconciler.edges.ansible.inventory_cache import DiskCache
from reconciler.edges.ansible.inventory_process import Limits
from reconciler.support.text import safe

__all__ = ["STATIC_PLUGINS", "Inventory", "InventoryError", "InventoryParser", "Limits", "load"]

log = logging.getLogger(__name__)

#: Ansible's order (``host_list`` first, then by format); none of them runs code.
STATIC_PLUGINS = ("host_list", "yaml", "ini", "toml")
_FORMAT = 1


def _ansible_version() -> str:
    try:
        return importlib.metadata.version("ansible-core")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - not installed
        return "none"


class InventoryParser:
    """Parses inventories in a child process, with a content-addressed cache (see module)."""

    def __init__(
        self,
        *,
        cache_dir: Path | None = None,
        dynamic: Mapping[str, Sequence[str]] | None = None,
        vault: Sequence[tuple[str, Path]] = (),
        limits: Limits | None = None,
        max_bytes: int = inventory_sources.MAX_BYTES,
    ) -> None:
        self.cache = DiskCache(cache_dir) if cache_dir is not None else None
        self.dynamic = {env: tuple(plugins) for env, plugins in (dynamic or {}).items()}
        self.vault = tuple((vault_id, Path(path).absolute()) for vault_id, path in vault)
        self.limits = limits or Limits()
        self.max_bytes = max_bytes

    def __call__(self, path: Path, *, root: Path, environment: str) -> Inventory:
        root = Path(root).resolve()
        dynamic = environment in self.dynamic
        plugins = (*STATIC_PLUGINS, *self.dynamic.get(environment, ()))
        try:
            return self._load(path, root, plugins, dynamic)
        except InventoryError:
            raise
        except Exception as exc:  # a bug here must reject the commit, not stop the daemon
            log.exception("inventory: unexpected error reading %s", path)
            raise InventoryError(
                f"{self._name(root, Path(path))}: cannot read the inventory: "
                f"{safe(f'{type(exc).__name__}: {exc}', 200)}"
            ) from None

    # ---------------------------------------------------------------- internals

    def _key(self, sources: inventory_sources.Sources, plugins: Sequence[str]) -> str:
        settings = json.dumps(
            {
                "format": _FORMAT,
                "reconciler": __version__,
                "ansible-core": _ansible_version(),
                "plugins": list(plugins),
                "vault": [[vault_id, str(path)] for vault_id, path in self.vault],
            },
            sort_keys=True,
        )
        return hashlib.sha256(settings.encode() + b"\0" + sources.digest.encode()).hexdigest()

    @staticmethod
    def _name(root: Path, file: Path | str | None) -> str:
        if not file:
            return "inventory"
        path = Path(file)
        try:
            return safe(path.resolve().relative_to(root).as_posix(), 200)
        except (ValueError, OSError):
            return safe(path.name, 200)

    def _load(self, path: Path, root: Path, plugins: Sequence[str], dynamic: bool) -> Inventory:
        sources = inventory_sources.scan(root, path, dynamic=dynamic, max_bytes=self.max_bytes)
        key = self._key(sources, plugins)
        if self.cache is not None and not dynamic:
            cached = self.cache.get(key)
            if cached is not None:
                log.debug("inventory: %s from the cache", self._name(root, sources.path))
                return cached
        started = time.monotonic()
        request = {
            "source": str(sources.path),
            "yaml_files": [str(f) for f in sources.files],
            "vault": [[vault_id, str(file)] for vault_id, file in self.vault],
        }
        name = self._name(root, sources.path)
        try:
            document = inventory_process.run(
                request, plugins=plugins, limits=self.limits, dynamic=dynamic
            )
        except inventory_process.WorkerError as exc:
            raise InventoryError(f"{name}: {safe(str(exc))}") from None
        except OSError as exc:  # cannot start the child at all
            raise InventoryError(f"{name}: cannot start the inventory parser: {exc}") from None
        error = document.get("error")
        if error is not None:
            raise InventoryError(self._error_text(root, error, name))
        try:
            inventory = inventory_data.decode(document)
        except ValueError as exc:
            raise InventoryError(
                f"{name}: the parser returned malformed output: {safe(str(exc))}"
            ) from None
        vaulted = document.get("vaulted") is not False
        if self.cache is not None and not dynamic and not vaulted:
            self.cache.put(key, document)
        log.info(
            "inventory: parsed %s in a child process (%d hosts, %.2fs)",
            name,
            len(inventory.hosts),
            time.monotonic() - started,
        )
        return inventory

    def _error_text(self, root: Path, error: object, name: str) -> str:
        if not isinstance(error, Mapping):
            return f"{name}: the parser returned malformed output"
        file, line, message = error.get("file"), error.get("line"), error.get("message")
        where = self._name(root, file) if isinstance(file, str) and file else name
        if type(line) is int and line > 0:
            where += f":{line}"
        if where.split(":")[0] != name:
            where = f"{name}: {where}"
        return safe(f"{where}: {message or 'cannot be parsed'}")


def load(path: Path) -> Inventory:
    """Parse one inventory with the defaults (static plugins only, no vault, no cache)."""
    return InventoryParser()(path, root=Path(path).resolve().parent, environment="")


def clear_cache() -> None:
    """Nothing to clear: this process keeps no parsed inventory (kept for callers of the
    former in-process cache; the disk cache is keyed by content and needs no clearing)."""
