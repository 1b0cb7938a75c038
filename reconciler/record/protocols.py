"""The state store interface, split by role; ``StateStore`` is their union.

Contract, for every backend (checked by the contract suite in ``tests/state_store``):
* Each method is one transaction: it is applied entirely or not at all, and a failed call
  raises ``StoreError`` (never a driver exception), or ``StoreUnavailable`` when the database
  cannot be reached now (a server store: connection refused or lost, a timeout; the call may
  or may not have been applied, so callers retry the whole step later, never assume either).
  Calls are safe from several threads.
* Writers accept the record types of ``record.types`` and the ``StrEnum``s of
  ``reconciler.states`` (their text is accepted too); readers return records whose states
  are enum members. An invalid argument (an unknown state, a non-terminal state given to a
  ``finish_*`` method, an unknown environment field) raises ``ValueError``, writing nothing.
* Timestamps come from the caller; the store has no clock (except ``applied_at`` of a schema
  migration).
* Orders are part of the contract: newest first for ``runs``/``rollouts`` (ties: last written
  first) and ``events`` (by id; oldest first when asked), oldest first for ``unfinished_*``
  and ``steps`` (ties: first written first), and by key for ``deployed`` (host, app),
  ``environment_statuses`` (environment) and ``quarantines`` (environment, group).
* A store opened read-only raises ``StoreError`` on every write and changes nothing.

Code depends on the narrowest role it needs (``RolloutJournal``, ``Meta``...); only the
wiring knows a concrete backend.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, Protocol, TypedDict, Unpack

from reconciler.errors import PermanentError, TemporaryError
from reconciler.record.types import (
    DeployedVersion,
    DriftMark,
    EnvironmentStatus,
    Event,
    Lease,
    ObservedVersion,
    QuarantineRecord,
    Replica,
    RolloutRecord,
    RunRecord,
    StepRecord,
)
from reconciler.states import EnvironmentResult, EventKind, RolloutState, Severity

__all__ = [
    "DeployedVersions",
    "EnvironmentFields",
    "EnvironmentStates",
    "Events",
    "Fenced",
    "LeaseHolders",
    "Leases",
    "Meta",
    "ObservedState",
    "Quarantines",
    "RolloutJournal",
    "RunJournal",
    "StateStore",
    "StoreError",
    "StoreUnavailable",
    "SyncRequests",
]


class StoreError(PermanentError):
    """The state store cannot serve the call: unknown or outdated schema, corrupt database,
    a refused write (read-only store, constraint violated), or a value it cannot read back."""


class StoreUnavailable(TemporaryError):
    """The database cannot be reached now (refused, lost or timed-out connection, a server
    shutting down, a serialization failure): retry later; nothing about the data is known."""


class Fenced(StoreError):
    """The database refused a write of a leased environment: the write did not carry the
    live lease's fencing token (another replica holds a newer one, or the lease lapsed).
    The writer must stand down: it no longer owns the environment."""


class DeployedVersions(Protocol):
    """Per environment/host/app, the version last deployed successfully."""

    def deployed(self, environment: str) -> list[DeployedVersion]: ...

    def recorded_versions(self, environment: str) -> dict[tuple[str, str], str]:
        """``(host, app) -> version``: what planning needs, without building records."""
        ...

    def record_deployed(self, records: Sequence[DeployedVersion]) -> None:
        """Insert or replace, keyed by (environment, host, app); all records or none."""
        ...

    def forget_deployed(self, environment: str, pairs: Sequence[tuple[str, str]]) -> None:
        """Drop the records of (host, app) pairs whose real version is unknown."""
        ...


class RunJournal(Protocol):
    """One row per reconcile run of an environment (the history)."""

    def start_run(self, run: RunRecord) -> None: ...

    def finish_run(
        self,
        run_id: str,
        result: EnvironmentResult,
        finished_at: float,
        summary: Mapping[str, Any],
    ) -> None:
        """Set the terminal result (whatever the run's current state)."""
        ...

    def finish_run_if_running(
        self,
        run_id: str,
        result: EnvironmentResult,
        finished_at: float,
        summary: Mapping[str, Any],
    ) -> bool:
        """Close the run only if it is still unfinished; True when it did.

        For a ``finally``: a run the engine already finished is left as it is.
        """
        ...

    def run(self, run_id: str) -> RunRecord | None: ...

    def runs(self, environment: str | None = None, limit: int = 20) -> list[RunRecord]:
        """Newest first; every environment when ``environment`` is None."""
        ...

    def unfinished_runs(self) -> list[RunRecord]:
        """Runs a crash left unfinished, oldest first."""
        ...


class RolloutJournal(Protocol):
    """Rollouts of groups and their steps; a step is written before its playbook runs."""

    def start_rollout(self, rollout: RolloutRecord) -> None: ...

    def finish_rollout(
        self, rollout_id: str, state: RolloutState, reason: str, finished_at: float
    ) -> None:
        """Set the terminal state and reason (whatever the rollout's current state)."""
        ...

    def finish_rollout_if_running(
        self, rollout_id: str, state: RolloutState, reason: str, finished_at: float
    ) -> bool:
        """Close the rollout only if it is still unfinished; True when it did.

        For a ``finally`` (the engine raised) or a resume: in the same transaction, its steps
        still ``running`` become ``interrupted`` at ``finished_at``, so no running step is left
        under a finished rollout. A rollout already finished is left as it is.
        """
        ...

    def rollout(self, rollout_id: str) -> RolloutRecord | None: ...

    def rollouts(self, environment: str | None = None, limit: int = 20) -> list[RolloutRecord]:
        """Newest first; every environment when ``environment`` is None."""
        ...

    def unfinished_rollouts(self) -> list[RolloutRecord]:
        """Rollouts a crash or an abort left unfinished, oldest first (what resume handles)."""
        ...

    def journal_step(self, step: StepRecord) -> None:
        """Insert or update the step keyed by (rollout_id, phase, index).

        An update keeps ``percent`` and ``started_at`` of the first write. The rollout must
        exist.
        """
        ...

    def steps(self, rollout_id: str) -> list[StepRecord]:
        """By ``started_at``; ties in the order they were first journalled."""
        ...


class EnvironmentFields(TypedDict, total=False):
    """The fields ``update_environment`` may set (any subset)."""

    suspended: bool
    last_attempted_commit: str | None
    last_applied_commit: str | None
    last_result: EnvironmentResult | None
    last_error: str


class EnvironmentStates(Protocol):
    """Per environment: suspended flag, attempted/applied commits, last result and error."""

    def environment_status(self, environment: str) -> EnvironmentStatus:
        """Its status; ``EnvironmentStatus.unknown`` when it has no row."""
        ...

    def environment_statuses(self) -> list[EnvironmentStatus]: ...

    def update_environment(
        self, environment: str, updated_at: float, **fields: Unpack[EnvironmentFields]
    ) -> None:
        """Create the row if needed and set ``updated_at`` and the given fields.

        An unknown field name raises ``ValueError`` before anything is written.
        """
        ...


class Quarantines(Protocol):
    """Per environment/group, the desired versions whose rollout failed (not retried)."""

    def quarantine(self, environment: str, group: str) -> QuarantineRecord | None: ...

    def quarantines(self, environment: str | None = None) -> list[QuarantineRecord]: ...

    def set_quarantine(self, record: QuarantineRecord) -> None:
        """Insert or replace, keyed by (environment, group)."""
        ...

    def clear_quarantine(self, environment: str, group: str) -> None: ...


class ObservedState(Protocol):
    """What hosts report they run (observed state) and the history of their drift."""

    def record_observed(self, records: Sequence[ObservedVersion]) -> None:
        """Upsert observations, keyed by (environment, host, app)."""
        ...

    def observed(self, environment: str) -> dict[tuple[str, str], ObservedVersion]:
        """``(host, app) -> `` the newest observation."""
        ...

    def drift_marks(self, environment: str) -> dict[tuple[str, str], DriftMark]: ...

    def set_drift_marks(self, environment: str, marks: Sequence[DriftMark]) -> None:
        """Replace the environment's drift marks with ``marks`` (one transaction)."""
        ...

    def forget_hosts(self, environment: str, hosts: Sequence[str]) -> None:
        """Hosts gone from the inventory: drop their deployed, observed and drift rows."""
        ...


class Events(Protocol):
    """The event log: what happened, appended by the event sink, read by the API and the CLI."""

    def append_event(self, event: Event) -> Event:
        """Store ``event`` (its ``id`` is ignored) and return it with the id the store gave:
        greater than the id of every event appended before, never reused (not even after
        pruning)."""
        ...

    def events(
        self,
        *,
        environment: str | None = None,
        group: str | None = None,
        kinds: Collection[EventKind] | None = None,
        severities: Collection[Severity] | None = None,
        after: int | None = None,
        before: int | None = None,
        limit: int = 100,
        oldest_first: bool = False,
    ) -> list[Event]:
        """Events with ``after < id < before`` matching every filter given (an empty
        collection matches nothing), newest first (``oldest_first``: by ascending id), at
        most ``limit``."""
        ...

    def newest_event_id(self) -> int:
        """The id of the newest stored event; 0 when there is none."""
        ...

    def prune_events(self, *, keep: int | None = None, older_than: float | None = None) -> int:
        """Delete the events beyond the newest ``keep`` and those with ``at`` before
        ``older_than`` (None: no such bound); returns how many went. Costs what it deletes
        (plus an index lookup), not the size of the log."""
        ...


class Meta(Protocol):
    """Small key/value facts (last valid commit, source errors, last fetch)."""

    def get_meta(self, key: str) -> str | None: ...

    def set_meta(self, key: str, value: str) -> None: ...


class Leases(Protocol):
    """Environments leased to replicas (a server store shared by several daemons).

    Times are the database's clock; ``ttl`` is in seconds. A lease is live until it expires;
    the journal, deployed versions and quarantine of a leased environment accept only writes
    that carry its live token (``fenced(token)``), others raise ``Fenced``.
    """

    def heartbeat(self, replica: str, address: str, ttl: float) -> None:
        """Say ``replica`` is alive for ``ttl`` more seconds."""
        ...

    def leave(self, replica: str) -> None:
        """``replica`` stops: it is no longer a member (its leases are released apart)."""
        ...

    def live_replicas(self) -> list[Replica]:
        """Members whose heartbeat has not expired, by name."""
        ...

    def acquire(self, environment: str, holder: str, ttl: float) -> Lease | None:
        """Take the lease when it is free (never granted, expired or released), with a new
        token; None when another replica holds it live. A holder whose own lease lapsed gets
        a new token too (anything may have happened meanwhile)."""
        ...

    def renew(self, lease: Lease, ttl: float) -> Lease | None:
        """Extend a live lease, same token; None when it is lost (expired or taken)."""
        ...

    def release(self, lease: Lease) -> None:
        """Give the lease up now (no-op when it is no longer ours)."""
        ...

    def leases(self) -> list[Lease]:
        """Every lease ever granted (live or not), by environment."""
        ...


class LeaseHolders(Protocol):
    """Who holds which environment's lease: what the status read model reads (every
    ``Leases`` is one; a read-only server store serves it too)."""

    def leases(self) -> list[Lease]:
        """Every lease ever granted (live or not), by environment."""
        ...


class SyncRequests(Protocol):
    """Sync requests between replicas sharing a server store (at most once, unordered)."""

    def notify(self, environment: str | None, reason: str) -> None:
        """Ask every replica (the owner acts) to sync ``environment`` (None: all)."""
        ...

    def listen(
        self,
        on_request: Callable[[str | None, str], None],
        stopping: threading.Event,
        poll: float = 1.0,
    ) -> None:
        """Deliver requests to ``on_request`` until ``stopping`` is set."""
        ...


class StateStore(
    DeployedVersions,
    RunJournal,
    RolloutJournal,
    EnvironmentStates,
    Quarantines,
    ObservedState,
    Events,
    Meta,
    Protocol,
):
    """Every role, as one backend provides them."""

    def close(self) -> None:
        """Release the connection(s); the store is not used afterwards."""
        ...
