"""Ansible inventories (INI, YAML or a directory) read with Ansible's own inventory manager.

Contract: ``load(path)`` returns every group with its hosts (children included, Ansible order)
and, per host, the address (``ansible_host`` or the name) and the app ports
(``deploy_app_ports``) health gates need. Unparseable sources raise ``InventoryError``.
Variables are read, never templated. Static inventories (no executable file, no ``plugin:``
source) are cached in-process by the hash of their content, so a new commit with an unchanged
inventory does not pay Ansible's parse again (seconds at 10,000 hosts).
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from pathlib import Path

from reconciler.desired.inventories import Inventory, InventoryError
from reconciler.desired.model import Host

__all__ = ["Inventory", "InventoryError", "clear_cache", "content_key", "load"]


def _ports(value: object) -> dict[str, int]:
    if not isinstance(value, Mapping):
        return {}
    ports: dict[str, int] = {}
    for app, port in value.items():
        try:
            ports[str(app)] = int(port)
        except (TypeError, ValueError):
            continue
    return ports


_CACHE: OrderedDict[str, Inventory] = OrderedDict()
_CACHE_SIZE = 8
_CACHE_LOCK = threading.Lock()


def _source_files(path: Path) -> Iterator[Path]:
    """Every file Ansible reads for ``path``: the tree, and group_vars/host_vars beside a file."""
    roots = (
        [path] if path.is_dir() else [path, path.parent / "group_vars", path.parent / "host_vars"]
    )
    for root in roots:
        if root.is_file():
            yield root
        elif root.is_dir():
            for folder, _dirs, files in sorted(os.walk(root)):
                yield from (Path(folder) / name for name in sorted(files))


def content_key(path: Path) -> str | None:
    """A hash of the inventory's files, or None when it may be dynamic (never cached)."""
    digest = hashlib.sha256()
    for file in _source_files(path):
        data = file.read_bytes()
        if os.access(file, os.X_OK) or b"\nplugin:" in b"\n" + data:
            return None  # a script or an inventory plugin: its hosts can change at any time
        digest.update(str(file.relative_to(path.parent)).encode() + b"\0" + data + b"\0")
    return digest.hexdigest()


def load(path: Path) -> Inventory:
    """Parse the inventory at ``path`` (file or directory), from the cache when unchanged."""
    try:
        key = content_key(path)
    except OSError:
        key = None
    if key is not None:
        with _CACHE_LOCK:
            if key in _CACHE:
                _CACHE.move_to_end(key)
                return _CACHE[key]
    parsed = _parse(path)
    if key is not None:
        with _CACHE_LOCK:
            _CACHE[key] = parsed
            while len(_CACHE) > _CACHE_SIZE:
                _CACHE.popitem(last=False)
    return parsed


def clear_cache() -> None:
    """Forget every parsed inventory (the next :func:`load` parses, as in a new process)."""
    with _CACHE_LOCK:
        _CACHE.clear()


def _parse(path: Path) -> Inventory:
    from ansible import constants
    from ansible.errors import AnsibleError
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader
    from ansible.vars.manager import VariableManager

    # A broken inventory is an error, not a warning followed by an empty inventory. Set on
    # Ansible's in-process constants only: never in os.environ, which child processes inherit.
    constants.INVENTORY_UNPARSED_IS_FAILED = True
    constants.INVENTORY_ANY_UNPARSED_IS_FAILED = True
    loader = DataLoader()
    try:
        manager = InventoryManager(loader=loader, sources=[str(path)])
    except AnsibleError as exc:
        raise InventoryError(str(exc).splitlines()[0]) from exc
    variables = VariableManager(loader=loader, inventory=manager)
    hosts: dict[str, Host] = {}
    for host in manager.get_hosts(ignore_restrictions=True):
        host_vars = variables.get_vars(host=host, include_hostvars=False)
        hosts[host.name] = Host(
            name=host.name,
            address=str(host_vars.get("ansible_host") or host.name),
            ports=_ports(host_vars.get("deploy_app_ports")),
        )
    groups = {
        name: tuple(h.name for h in group.get_hosts())
        for name, group in manager.groups.items()
        if name not in ("all", "ungrouped")
    }
    return Inventory(groups=groups, hosts=hosts)
