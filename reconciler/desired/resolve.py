"""Resolve one group of an environment file: defaults merged, inventory hosts attached.

Pure: a validated ``EnvironmentFile`` and the parsed inventory in, a frozen ``GroupDesired``
out. A group's own settings win over ``defaults`` key by key (``rollout`` and its
``retries`` merged field by field); ``observe: none`` switches observation off for the group.
"""

from __future__ import annotations

from reconciler.desired.inventories import Inventory
from reconciler.desired.model import GroupDesired, Retries, Rollout
from reconciler.desired.schema import EnvironmentFile, RetrySpec


def group(spec: EnvironmentFile, name: str, parsed: Inventory) -> GroupDesired:
    own, defaults = spec.groups[name], spec.defaults
    merged = defaults.rollout.model_dump(exclude_none=True)
    if own.rollout is not None:
        merged.update(own.rollout.model_dump(exclude_none=True))
    retries = RetrySpec.model_validate(merged.get("retries", {}))
    rollout = Rollout(
        canary=tuple(merged.get("canary", (100,))),
        bake_s=float(merged.get("bake", 0.0)),
        max_failed_hosts=merged.get("max_failed_hosts", 0),
        retries=Retries(retries.attempts, retries.backoff, retries.max_backoff),
    )
    observe = own.observe if own.observe is not None else defaults.observe
    return GroupDesired(
        name=name,
        apps=dict(sorted(own.apps.items())),
        hosts=parsed.group_hosts(name),
        after=own.after,
        playbook=own.playbook or defaults.playbook,
        rollout=rollout,
        health=own.health if own.health is not None else defaults.health,
        timeout_s=own.timeout if own.timeout is not None else defaults.timeout,
        maintenance_windows=(
            own.maintenance_windows
            if own.maintenance_windows is not None
            else defaults.maintenance_windows
        ),
        observe=None if observe == "none" else observe,
        self_heal=own.self_heal if own.self_heal is not None else defaults.self_heal,
    )
