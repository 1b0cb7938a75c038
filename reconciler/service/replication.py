"""Several daemons on one PostgreSQL state store: the daemon's side of ownership and of sync
requests between replicas. ``Replication``.

Contract:
* ``start(environments, gained, lost, requested, trusted)`` starts two threads: the lease
  round (``service.ownership.Ownership.tick`` every ``ttl / 3`` over ``environments()``, then
  ``gained(lease)`` (the takeover: ``token`` gives nothing for it yet) and ``lost(environment)``
  for what changed, and ``trusted(environment)`` once ``token`` gives one again: after a gained
  lease's takeover, and for a held lease renewed after its trust ran out, so a reconcile
  skipped meanwhile is not lost) and the listener of sync requests (``record.SyncRequests``),
  which calls ``requested(environment, reason)``.
  Each callback runs in the thread of its source; a failing callback is logged.
* ``token(environment)``: the fencing token to reconcile ``environment`` with, or None when
  this replica does not own it now (``Ownership.token``: within the trusted part of the
  lease). A reconcile starts only with a token, and writes only with it.
* ``fenced(token)``: the state store whose writes carry ``token`` (same database, same pool).
* ``lease(environment, token)``: the ``rollout.ports.LeaseCheck`` of that lease, asked right
  before a Git revert push (``Ownership.confirm``).
* ``notify(environment, reason)``: a webhook, ``POST /sync`` or a resume on any replica
  reaches the owner (errors logged: the poll interval is the fallback).
* ``stop()`` ends both threads and stands down (releases the leases: another replica takes
  over at its next round, not after the lease time). Call it after the local reconciles
  ended.
* The state-dir flock stays (each replica has its own state dir); the leases are what
  keeps two replicas off the same environment.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from reconciler.errors import ReconcilerError
from reconciler.record import Lease, StateStore, SyncRequests
from reconciler.rollout.ports import LeaseCheck
from reconciler.service.ownership import Ownership

log = structlog.get_logger(__name__)

__all__ = ["Replication"]

#: Reasons of requests that came from another replica (never sent on again).
FROM_REPLICA = "replica"


class Replication:
    """One replica's lease round and sync listener; see the module's contract."""

    def __init__(
        self,
        ownership: Ownership,
        requests: SyncRequests,
        fence: Callable[[int], StateStore],
    ) -> None:
        self.ownership = ownership
        self.requests = requests
        self.fence = fence
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def replica(self) -> str:
        return self.ownership.replica

    def start(
        self,
        environments: Callable[[], list[str]],
        gained: Callable[[Lease], None],
        lost: Callable[[str], None],
        requested: Callable[[str | None, str], None],
        trusted: Callable[[str], None],
    ) -> None:
        def rounds() -> None:
            period = self.ownership.ttl / 3
            while not self._stop.is_set():
                changes = self.ownership.tick(environments())
                for lease in changes.gained:
                    self._call(gained, lease)  # the takeover, before any reconcile of it
                    self.ownership.ready(lease.environment)
                    self._call(trusted, lease.environment)
                for name in changes.lost:
                    self._call(lost, name)
                for name in changes.trusted:
                    self._call(trusted, name)
                self._stop.wait(period)

        def on_request(environment: str | None, reason: str) -> None:
            self._call(requested, environment, reason)

        self._threads = [
            threading.Thread(target=rounds, name="leases", daemon=True),
            threading.Thread(
                target=self.requests.listen,
                args=(on_request, self._stop),
                name="sync-listener",
                daemon=True,
            ),
        ]
        for thread in self._threads:
            thread.start()

    @staticmethod
    def _call(callback: Callable[..., None], *args: object) -> None:
        try:
            callback(*args)
        except Exception:
            log.exception("replication_callback_failed", callback=callback.__name__)

    def token(self, environment: str) -> int | None:
        return self.ownership.token(environment)

    def fenced(self, token: int) -> StateStore:
        return self.fence(token)

    def owners(self) -> dict[str, str]:
        return self.ownership.owners()

    def lease(self, environment: str, token: int) -> LeaseCheck:
        return _Confirm(self.ownership, environment, token)

    def notify(self, environment: str | None, reason: str) -> None:
        if reason == FROM_REPLICA:
            return
        try:
            self.requests.notify(environment, reason)
        except ReconcilerError as exc:
            log.warning("sync_notify_failed", environment=environment, error=str(exc))

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        self.ownership.stand_down()


@dataclass(frozen=True)
class _Confirm:
    """``rollout.ports.LeaseCheck`` of one lease: ``Ownership.confirm``."""

    ownership: Ownership
    environment: str
    token: int

    def confirm(self) -> bool:
        return self.ownership.confirm(self.environment, self.token)
