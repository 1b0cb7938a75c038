"""Ansible inventories (INI, YAML or a directory) read with Ansible's own inventory manager.

Contract: ``load(path)`` returns every group with its hosts (children included, Ansible order)
and, per host, the address (``ansible_host`` or the name) and the app ports
(``deploy_app_ports``) health gates need. Unparseable sources raise ``InventoryError``.
Variables are read, never templated.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from reconciler.desired_state import Host


class InventoryError(Exception):
    """The inventory could not be parsed."""


@dataclass(frozen=True)
class Inventory:
    groups: Mapping[str, tuple[str, ...]]
    hosts: Mapping[str, Host]

    def group_hosts(self, group: str) -> tuple[Host, ...]:
        return tuple(self.hosts[name] for name in self.groups.get(group, ()))


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


def load(path: Path) -> Inventory:
    """Parse the inventory at ``path`` (file or directory)."""
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
