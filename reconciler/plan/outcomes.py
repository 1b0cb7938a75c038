"""What a reconcile decided or did, per group and per environment: frozen results.

Pure data. ``GroupOutcome`` is produced both by the planning policy (groups that do not roll
out: in sync, held, waiting) and by the rollout engine (groups that did). ``PushOutcome`` is
what became of a revert commit, in the engine's words, without Git types.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from reconciler.states import EnvironmentResult, GroupState, PushStatus


@dataclass(frozen=True)
class RevertOutcome:
    """The revert commit of a rolled back group: pushed, not needed, or pending a human.

    ``status`` None: no push was attempted (nothing to push to, or no version to restore).
    """

    status: PushStatus | None
    detail: str
    sha: str | None = None

    @property
    def settled(self) -> bool:
        """Git tells the truth again without a human."""
        return self.status is not None and self.status.settled

    def __str__(self) -> str:
        if self.status is None:
            return f"pending: {self.detail}"
        if self.status.settled:
            return f"{self.status}: {self.detail}"
        return f"pending ({self.status}): {self.detail}"


@dataclass(frozen=True)
class GroupOutcome:
    group: str
    state: GroupState
    rollout_id: str | None = None
    changed_hosts: tuple[str, ...] = ()
    failed_hosts: Mapping[str, str] = field(default_factory=dict)
    reason: str = ""
    revert: RevertOutcome | None = None

    @property
    def revert_text(self) -> str:
        return "" if self.revert is None else str(self.revert)


@dataclass(frozen=True)
class EnvironmentOutcome:
    environment: str
    result: EnvironmentResult
    groups: tuple[GroupOutcome, ...]
    error: str = ""  # the reconcile itself failed (result ``error``)

    def group(self, name: str) -> GroupOutcome:
        return next(g for g in self.groups if g.group == name)
