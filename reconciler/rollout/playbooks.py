"""What one step runs: the ``PlaybookRun`` of a step of a rollout (the playbook contract).

Construction only (it looks at which roles directories exist, nothing else): the playbook
(shipped or the repository's), the inventory of the commit's snapshot, ``--limit`` to the
step's hosts, the extra vars of the playbook contract (``reconciler_apps``,
``reconciler_environment``, ``reconciler_group``, ``reconciler_commit``,
``reconciler_rollout_id``; written ``!unsafe`` by the runner), the step's timeout, the roles
path (``content.roles_path``: a shipped playbook always uses the shipped roles first, the
repository's own playbooks find the repository's ``roles/`` first) and the Ansible settings of
``execution`` (forks bounded by the step's size, pipelining, the private key, extra variables).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from reconciler import content
from reconciler.desired.model import EnvironmentDesired, GroupDesired
from reconciler.edges.ansible import PlaybookRun
from reconciler.plan.canary import Step
from reconciler.settings import ExecutionSettings
from reconciler.states import Phase


@dataclass(frozen=True)
class Deployment:
    """What a rollout deploys: the commit's snapshot root, the commit, and its run id."""

    root: Path
    commit: str
    run_id: str


def playbook_run(
    execution: ExecutionSettings,
    environment: EnvironmentDesired,
    group: GroupDesired,
    deployment: Deployment,
    rollout_id: str,
    phase: Phase,
    step: Step,
    apps: Mapping[str, str],
) -> PlaybookRun:
    envvars = {
        "ANSIBLE_FORKS": str(min(execution.forks, max(1, len(step.hosts)))),
        "ANSIBLE_PIPELINING": str(execution.pipelining),
    }
    if execution.private_key_file:
        envvars["ANSIBLE_PRIVATE_KEY_FILE"] = str(execution.private_key_file)
    envvars.update(execution.extra_envvars)
    root = deployment.root
    roles = content.roles_path(root, group.playbook)
    return PlaybookRun(
        playbook=content.playbook_path(root, group.playbook),
        inventory=(root / environment.inventory).resolve(),
        hosts=step.hosts,
        extra_vars={
            "reconciler_apps": dict(apps),
            "reconciler_environment": environment.name,
            "reconciler_group": group.name,
            "reconciler_commit": deployment.commit,
            "reconciler_rollout_id": rollout_id,
        },
        timeout_s=group.timeout_s,
        roles_path=roles,
        envvars=envvars,
        label=f"{environment.name}-{group.name}-{phase}{step.index}",
    )
