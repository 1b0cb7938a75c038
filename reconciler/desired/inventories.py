"""What the desired-state model needs of an Ansible inventory, and who provides it.

Pure data and a Protocol: ``desired.loading`` resolves groups to hosts through an
``InventoryReader`` passed in by the caller (``service.wiring`` passes the Ansible edge,
``edges.ansible.inventory``), so this package never imports Ansible.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from reconciler.desired.model import Host
from reconciler.errors import PermanentError

__all__ = ["Inventory", "InventoryError", "InventoryReader"]


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
    """Parses the inventory at a path (file or directory) below a checked-out commit."""

    def __call__(self, path: Path) -> Inventory: ...
