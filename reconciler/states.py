"""Every state and outcome reconciler names, as ``StrEnum``s shared by all layers.

Pure data: the store writes these values, the API and the CLI show them, metrics use them as
label values and the planning core decides them. A value is its own text (``str(x) == x``), so
rows written by earlier versions read back unchanged.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "Attempt",
    "ChangeKind",
    "DriftClass",
    "EnvironmentResult",
    "EventKind",
    "GateCheckpoint",
    "GateVerdict",
    "GroupState",
    "HostStatus",
    "ObservationStatus",
    "Phase",
    "PushStatus",
    "RolloutState",
    "RolloutTrigger",
    "RunOutcome",
    "Severity",
    "StepState",
    "StopReason",
    "WebhookResult",
]


class HostStatus(StrEnum):
    """One host in one playbook run, read from the play recap (never from rc alone)."""

    OK = "ok"
    FAILED = "failed"
    UNREACHABLE = "unreachable"
    NOT_RUN = "not_run"


class RunOutcome(StrEnum):
    """One playbook run as a whole."""

    SUCCESSFUL = "successful"
    FAILED = "failed"
    TIMEOUT = "timeout"
    CANCELED = "canceled"
    ERROR = "error"


class Phase(StrEnum):
    """What a journalled step does: roll forward or put hosts back."""

    DEPLOY = "deploy"
    ROLLBACK = "rollback"


class StepState(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


class RolloutState(StrEnum):
    """A journalled rollout of one group. Every rollout ends in a terminal state."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    DEGRADED = "degraded"  # succeeded with host failures within max_failed_hosts
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"  # the rollback itself failed, or the engine raised
    SUPERSEDED = "superseded"
    INTERRUPTED = "interrupted"

    @property
    def terminal(self) -> bool:
        return self is not RolloutState.RUNNING


class GroupState(StrEnum):
    """One group in one environment reconcile."""

    IN_SYNC = "in_sync"
    SUCCEEDED = "succeeded"
    DEGRADED = "degraded"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"
    WAITING = "waiting"  # a group it follows did not succeed (or a stop came first)
    SUSPENDED = "suspended"
    QUARANTINED = "quarantined"  # its desired versions failed before: not retried
    SUPERSEDED = "superseded"
    INTERRUPTED = "interrupted"
    OUTSIDE_WINDOW = "outside_window"


class EnvironmentResult(StrEnum):
    """One environment reconcile (also the ``result`` of a run row)."""

    RUNNING = "running"
    IN_SYNC = "in_sync"
    APPLIED = "applied"
    DEGRADED = "degraded"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    SUPERSEDED = "superseded"
    QUARANTINED = "quarantined"
    DEFERRED = "deferred"
    SUSPENDED = "suspended"
    ERROR = "error"  # the reconcile itself raised

    @property
    def ok(self) -> bool:
        """Nothing went wrong: the exit code of ``sync`` is 0 for these."""
        return self in _OK_RESULTS


_OK_RESULTS = frozenset(
    {
        EnvironmentResult.IN_SYNC,
        EnvironmentResult.APPLIED,
        EnvironmentResult.DEGRADED,
        EnvironmentResult.DEFERRED,
        EnvironmentResult.SUSPENDED,
    }
)


class GateVerdict(StrEnum):
    """One gate evaluation (a check on a target, after its retries)."""

    PASSED = "passed"
    FAILED = "failed"
    INCONCLUSIVE = "inconclusive"  # failed closed: the last attempt saw no data


class GateCheckpoint(StrEnum):
    """When gates are checked: right after a step, again after its bake, after a rollback."""

    AFTER_STEP = "after_step"
    AFTER_BAKE = "after_bake"
    AFTER_ROLLBACK = "after_rollback"


class Attempt(StrEnum):
    """One attempt of a gate evaluation."""

    SUCCESS = "success"
    FAILURE = "failure"
    INCONCLUSIVE = "inconclusive"
    CANCELED = "canceled"


class PushStatus(StrEnum):
    """A write to the tracked branch (revert, operator rollback)."""

    PUSHED = "pushed"
    NOOP = "noop"  # nothing to change on the tip
    CONFLICT = "conflict"  # the change no longer applies, or the push stayed rejected
    DISABLED = "disabled"  # source.push is false: a human must revert
    ERROR = "error"  # the remote could not be reached or refused

    @property
    def settled(self) -> bool:
        """Git tells the truth without a human."""
        return self in (PushStatus.PUSHED, PushStatus.NOOP)


class ChangeKind(StrEnum):
    REVERT = "revert"  # a true ``git revert`` of the offending commit
    TARGETED = "targeted"  # only the failed group's versions restored
    EDIT = "edit"  # an operator's rollback commit


class StopReason(StrEnum):
    """Why a running rollout was asked to stop between steps."""

    SUPERSEDED = "superseded"  # a newer commit changed the environment
    INTERRUPTED = "interrupted"  # the daemon shuts down


class RolloutTrigger(StrEnum):
    """Why a rollout ran."""

    CHANGE = "change"  # the desired versions differ from what was deployed
    SELF_HEAL = "self_heal"  # a host runs something else than was deployed (opt-in)


class ObservationStatus(StrEnum):
    """What one observation of one host and app found."""

    OK = "ok"  # the host reported a version
    STOPPED = "stopped"  # the host answered: the app is installed but does not run
    MISSING = "missing"  # the host answered, without a version (no fact, no match)
    UNREACHABLE = "unreachable"
    FAILED = "failed"  # the probe failed on the host (a command error, an HTTP error)


class DriftClass(StrEnum):
    """One host and app, desired vs recorded (what reconciler deployed) vs observed."""

    IN_SYNC = "in_sync"  # desired == recorded == observed
    PENDING = "pending"  # desired != recorded: the next rollout changes it
    OUT_OF_BAND = "out_of_band"  # recorded != observed: changed behind reconciler's back
    UNKNOWN = "unknown"  # not observed, or unreachable: never "in sync" on faith
    NEW_HOST = "new_host"  # in the inventory, never deployed by reconciler

    @property
    def drifted(self) -> bool:
        """Something must change on the host (unknown is not known to be drift)."""
        return self in (DriftClass.PENDING, DriftClass.OUT_OF_BAND, DriftClass.NEW_HOST)


class WebhookResult(StrEnum):
    TRIGGERED = "triggered"
    IGNORED = "ignored"
    UNAUTHORIZED = "unauthorized"
    INVALID = "invalid"
    DISABLED = "disabled"
    TOO_LARGE = "too_large"


class Severity(StrEnum):
    """How much an event matters (notification routes filter on a minimum)."""

    INFO = "info"
    WARNING = "warning"
    ERROR = "error"

    @property
    def rank(self) -> int:
        return _SEVERITY_RANK[self]

    def at_least(self, minimum: Severity) -> bool:
        return self.rank >= minimum.rank


_SEVERITY_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.ERROR: 2}


class EventKind(StrEnum):
    """What an event of the event log tells. The values are a public contract (the API, the
    SSE ``event:`` field, notification routes, stored rows): never renamed, only added to."""

    COMMIT_ACCEPTED = "commit_accepted"  # a new valid commit is in force
    COMMIT_REJECTED = "commit_rejected"  # the newest commit is invalid (file:line problems)
    ROLLOUT_STARTED = "rollout_started"
    STEP_FINISHED = "step_finished"  # a deploy or rollback step's playbook run ended
    GATE_FAILED = "gate_failed"
    ROLLOUT_SUCCEEDED = "rollout_succeeded"
    ROLLOUT_DEGRADED = "rollout_degraded"  # through every step, failures tolerated
    ROLLOUT_ROLLED_BACK = "rollout_rolled_back"
    ROLLOUT_FAILED = "rollout_failed"  # the rollback itself failed, a self-heal failed, a bug
    ROLLOUT_SUPERSEDED = "rollout_superseded"
    ROLLOUT_INTERRUPTED = "rollout_interrupted"  # a daemon shutdown
    ROLLOUT_RESUMED = "rollout_resumed"  # an unfinished rollout found at start
    REVERT_PUSHED = "revert_pushed"
    REVERT_AWAITING_HUMAN = "revert_awaiting_human"  # push disabled, nothing to push to
    REVERT_PUSH_FAILED = "revert_push_failed"  # a conflict, or the remote refused
    ENVIRONMENT_SYNCED = "environment_synced"  # in sync at a commit it was not in sync at
    DRIFT_DETECTED = "drift_detected"  # hosts run another version than reconciler deployed
    DRIFT_HEALED = "drift_healed"  # a self-heal put them back
    SOURCE_DOWN = "source_down"
    SOURCE_UP = "source_up"
    ENVIRONMENT_SUSPENDED = "environment_suspended"
    ENVIRONMENT_RESUMED = "environment_resumed"
    QUARANTINE_SET = "quarantine_set"
    QUARANTINE_LIFTED = "quarantine_lifted"
