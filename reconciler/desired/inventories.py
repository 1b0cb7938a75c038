"""What the desired-state model needs of an Ansible inventory, and who provides it.

Pure data, a Protocol and the host-name rule: ``desired.loading`` resolves groups to hosts
through an ``InventoryReader`` passed in by the caller (``service.wiring`` passes the Ansible
edge, ``edges.ansible.inventory``), so this package never imports Ansible.

A reader is called with the inventory's path, the repository root (nothing outside it may be
read) and the environment's name (the operator may allow that environment a dynamic
inventory; the repository never can). It raises ``InventoryError`` for anything wrong with the
inventory, with a one-line, terminal-safe message naming the file.

``host_problems(inventory, groups, name)`` describes the hosts of ``groups`` whose names Ansible
accepts but reconciler does not (``schema.HOST_RE``: ASCII letters, digits, ``_ . : -``; no leading
``! & ~``, no space, no glob or shell character, no look-alike Unicode letter): such a name
could select other hosts in a ``--limit`` pattern, so it rejects the commit before anything
runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from reconciler.desired.model import Host
from reconciler.desired.schema import HOST_RE
from reconciler.errors import PermanentError

__all__ = ["UNSAFE_HOSTS_SHOWN", "Inventory", "InventoryError", "InventoryReader", "host_problems"]

UNSAFE_HOSTS_SHOWN = 10


class InventoryError(PermanentError):
    """The inventory could not be parsed (the commit is rejected; a new commit may fix it)."""


@dataclass(frozen=True)
class Inventory:
    """Every group with its hosts (children included, Ansible order), and every host."""

    groups: Mapping[str, tuple[str, ...]]
    hosts: Mapping[str, Host]

    def group_hosts(self, group: str) -> tuple[Host, ...]:
        return tuple(self.hosts[name] for name in self.groups.get(group, ()))


class InventoryReader(Protocol):
    """Parses the inventory at ``path`` (file or directory) below the work tree ``root``."""

    def __call__(self, path: Path, *, root: Path, environment: str) -> Inventory: ...


def host_problems(inventory: Inventory, groups: Iterable[str], name: str) -> list[str]:
    """One message for each host of ``groups`` (at most ``UNSAFE_HOSTS_SHOWN``, then a count)
    whose name is not a safe host name; ``name`` is the inventory as the environment names it."""
    unsafe: dict[str, str] = {}
    for group in groups:
        for host in inventory.groups.get(group, ()):
            if not HOST_RE.fullmatch(host):
                unsafe.setdefault(host, group)
    problems = [
        f"{name}: host {host[:100]!a} (group {group}) is not a safe host name: use ASCII "
        f"letters, digits, '_', '.', ':' and '-' ({HOST_RE.pattern})"
        for host, group in list(unsafe.items())[:UNSAFE_HOSTS_SHOWN]
    ]
    if len(unsafe) > UNSAFE_HOSTS_SHOWN:
        problems.append(f"{name}: {len(unsafe) - UNSAFE_HOSTS_SHOWN} more such hosts")
    return problems
