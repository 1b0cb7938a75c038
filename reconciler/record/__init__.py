"""record: what reconciler deployed, its runs and the rollout journal, behind small Protocols.

Contract: callers write ``from reconciler import record`` and use ``record.RolloutRecord``,
``record.RolloutJournal``, ``record.StoreError``... This package imports no database driver:
a backend is its own module (``record.sqlite``, ``record.postgresql``) plus its
``sql/<dialect>/`` migrations, and only the wiring imports it. Every backend gets its
schema from ``record.migrations`` and passes the contract suite in ``tests/state_store``
(SQLite, and PostgreSQL: ``record.postgresql``, the only importer of psycopg).

* ``record.types``: the frozen record dataclasses, states as ``reconciler.states`` enums.
* ``record.protocols``: the store interface split by role, ``StateStore`` their union,
  ``StoreError`` (a ``reconciler.errors.PermanentError``) and ``StoreUnavailable`` (a
  ``TemporaryError``: a server store cannot be reached now); ``Leases`` (PostgreSQL only:
  environments leased to replicas) and ``Fenced``, the write it refuses.
* ``record.migrations``: the versioned-migration runner shared by the backends.
* ``record.events``: ``EventSink``, what the stages emit events through, and ``SilentSink``.
"""

from reconciler.record.events import EventSink, SilentSink
from reconciler.record.protocols import (
    DeployedVersions,
    EnvironmentFields,
    EnvironmentStates,
    Events,
    Fenced,
    LeaseHolders,
    Leases,
    Meta,
    ObservedState,
    Quarantines,
    RolloutJournal,
    RunJournal,
    StateStore,
    StoreError,
    StoreUnavailable,
    SyncRequests,
)
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

__all__ = [
    "DeployedVersion",
    "DeployedVersions",
    "DriftMark",
    "EnvironmentFields",
    "EnvironmentStates",
    "EnvironmentStatus",
    "Event",
    "EventSink",
    "Events",
    "Fenced",
    "Lease",
    "LeaseHolders",
    "Leases",
    "Meta",
    "ObservedState",
    "ObservedVersion",
    "QuarantineRecord",
    "Quarantines",
    "Replica",
    "RolloutJournal",
    "RolloutRecord",
    "RunJournal",
    "RunRecord",
    "SilentSink",
    "StateStore",
    "StepRecord",
    "StoreError",
    "StoreUnavailable",
    "SyncRequests",
]
