"""The plain JSON form of a parsed inventory, checked before anything trusts it.

Contract: ``decode(document)`` turns the JSON the inventory child prints (and the disk cache
stores) into an ``Inventory``, or raises ``ValueError`` saying what is wrong: it never trusts a
shape, a type or a size it did not check (``{"groups": {group: [host, ...]}, "hosts": {host:
{"address": str, "ports": {app: int}}}}``, every group member a known host, names and addresses
non-empty strings of at most ``NAME_MAX`` characters, ports integers in 1..65535). Whether a
host name is *safe* is the desired-state rules' business (``desired.inventories``), so it can
be reported at the environment's ``inventory:`` line. ``encode`` is the inverse.

``size(count)`` says a byte count in MiB or KiB. (Text printed from here goes through
``support.text.safe``: one line, control characters escaped, length capped.)
"""

from __future__ import annotations

from typing import Any

from reconciler.desired.inventories import Inventory
from reconciler.desired.model import Host
from reconciler.support.text import safe

__all__ = ["NAME_MAX", "decode", "encode", "size"]

NAME_MAX = 1024


def size(count: int) -> str:
    """A byte count for people: whole MiB, else KiB."""
    return f"{count >> 20} MiB" if count >= 1 << 20 else f"{count >> 10} KiB"


def _is_name(value: Any) -> bool:
    return type(value) is str and 0 < len(value) <= NAME_MAX


def _bad(what: str, value: Any, problem: str) -> ValueError:
    return ValueError(f"{what} {safe(repr(value), 80)}: {problem}")


def _ports(value: Any, host: str) -> dict[str, int]:
    if type(value) is not dict:
        raise _bad("host", host, "ports must be a mapping")
    for app, port in value.items():
        if not _is_name(app) or type(port) is not int or not 0 < port < 65536:
            raise _bad("host", host, f"port {safe(repr(app), 80)} is not 1..65535")
    return dict(value)


def decode(document: Any) -> Inventory:
    """The inventory in ``document`` (see the module docstring); ``ValueError`` if malformed.
    JSON's own types only (``dict``, ``list``, ``str``, ``int``): exact type checks are fast."""
    if type(document) is not dict:
        raise ValueError("not a JSON object")
    raw_hosts, raw_groups = document.get("hosts"), document.get("groups")
    if type(raw_hosts) is not dict or type(raw_groups) is not dict:
        raise ValueError("'hosts' and 'groups' must be objects")
    hosts: dict[str, Host] = {}
    for name, entry in raw_hosts.items():
        if not _is_name(name):
            raise _bad("host", name, f"not a name of 1..{NAME_MAX} characters")
        if type(entry) is not dict or len(entry) != 2 or not _is_name(entry.get("address")):
            raise _bad("host", name, "needs exactly an 'address' (a name) and 'ports'")
        hosts[name] = Host(name=name, address=entry["address"], ports=_ports(entry["ports"], name))
    groups: dict[str, tuple[str, ...]] = {}
    for group, members in raw_groups.items():
        if not _is_name(group):
            raise _bad("group", group, f"not a name of 1..{NAME_MAX} characters")
        if type(members) is not list:
            raise _bad("group", group, "hosts must be a list")
        if not all(type(m) is str and m in hosts for m in members):
            unknown = next(m for m in members if type(m) is not str or m not in hosts)
            raise _bad("group", group, f"unknown host {safe(repr(unknown), 80)}")
        groups[group] = tuple(members)
    return Inventory(groups=groups, hosts=hosts)


def encode(inventory: Inventory) -> dict[str, Any]:
    """The JSON form ``decode`` reads back."""
    return {
        "groups": {name: list(members) for name, members in inventory.groups.items()},
        "hosts": {
            name: {"address": host.address, "ports": dict(host.ports)}
            for name, host in inventory.hosts.items()
        },
    }
