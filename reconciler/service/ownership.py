"""Which environments this replica owns, kept true by leases: ``Ownership``.

Contract (several daemons on one PostgreSQL database; SQLite has one process and no leases):
* ``tick(environments)`` is one round, run every ``ttl / 3``: a heartbeat (membership), the
  rendezvous assignment over the live members (``plan.ownership``), then for each
  environment: renew the lease it holds (lost: it says so), acquire the lease of one it
  should own (free or lapsed only: a live holder keeps it until it lets go), and release a
  lease it should no longer own once that environment is idle (``busy``), so a joining
  replica gets its share without interrupting a rollout. It returns what changed, including
  the held leases it renewed after their trust had run out (``Changes.trusted``: a store
  outage or a pause made ``token`` answer None meanwhile, so a reconcile asked for then was
  skipped and is owed now).
* ``token(environment)``: the fencing token to write with, or None when this replica does not
  hold a lease it can trust *now*, or has just gained it and not yet called ``ready`` (the
  takeover first resumes what the previous holder left unfinished, alone). The lease must
  have been renewed less than ``ttl - margin`` ago by the local monotonic clock. A replica
  that was stopped (SIGSTOP, a long pause) thus trusts nothing until its next successful
  renewal, and never starts a step on a lapsed lease; if it writes anyway, the database
  refuses the stale token (``record.Fenced``).
* ``confirm(environment, token)``: right before an act the database cannot fence (the Git
  revert push), whether the lease with ``token`` is still this replica's: held, trusted by
  the local clock, and renewed in the database now (so it outlasts the act by up to a
  ``ttl``). A store error answers False: nothing unfenced is done on a doubt.
* ``owners()``: ``environment -> replica`` of the leases this replica holds (what it exports
  as ``reconciler_environment_owner``; each replica exports its own, so sums are right).
* ``stand_down()`` releases every lease and leaves the members (a clean stop hands over at
  once; a crash hands over when the leases lapse).
* The store errors of a round are logged and the round ends; the leases it could not renew
  stop being trusted when their margin runs out.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import structlog

from reconciler.errors import ReconcilerError
from reconciler.plan import ownership
from reconciler.record import Lease, Leases

log = structlog.get_logger(__name__)

__all__ = ["Changes", "Ownership"]


@dataclass(frozen=True)
class Changes:
    """What one round changed: leases gained, lost (taken or lapsed), released, and held
    leases trusted again (renewed after their trusted part had run out)."""

    gained: tuple[Lease, ...] = ()
    lost: tuple[str, ...] = ()
    released: tuple[str, ...] = ()
    trusted: tuple[str, ...] = ()


@dataclass
class _Held:
    lease: Lease
    renewed: float  # monotonic


@dataclass
class Ownership:
    """This replica's leases; see the module's contract."""

    leases: Leases
    replica: str
    address: str = ""
    ttl: float = 15.0
    busy: Callable[[str], bool] = lambda _environment: False
    clock: Callable[[], float] = time.monotonic
    _held: dict[str, _Held] = field(default_factory=dict)
    _fresh: set[str] = field(default_factory=set)  # acquired, not yet taken over (``ready``)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def margin(self) -> float:
        """Trust a lease until ``ttl - margin`` after its renewal (a round may be late)."""
        return self.ttl / 3

    def tick(self, environments: Iterable[str]) -> Changes:
        wanted = sorted(set(environments))
        gained: list[Lease] = []
        lost: list[str] = []
        released: list[str] = []
        trusted: list[str] = []
        try:
            self.leases.heartbeat(self.replica, self.address, self.ttl)
            members = {r.replica for r in self.leases.live_replicas()} | {self.replica}
            assigned = ownership.assignment(wanted, members)
            with self._lock:
                held = dict(self._held)
            for name, mine in held.items():
                started = self.clock()
                lapsed = started - mine.renewed >= self.ttl - self.margin
                renewed = self.leases.renew(mine.lease, self.ttl)
                if renewed is None:
                    lost.append(name)
                    self._forget(name)
                elif assigned.get(name) != self.replica and not self.busy(name):
                    self.leases.release(renewed)
                    released.append(name)
                    self._forget(name)
                else:
                    self._keep(renewed, started)
                    if lapsed:
                        trusted.append(name)
            for name in wanted:
                if assigned[name] != self.replica or name in held:
                    continue
                started = self.clock()
                lease = self.leases.acquire(name, self.replica, self.ttl)
                if lease is not None:
                    gained.append(lease)
                    with self._lock:
                        self._fresh.add(name)
                    self._keep(lease, started)
        except ReconcilerError as exc:
            log.warning("lease_round_failed", error=str(exc))
        changes = Changes(tuple(gained), tuple(lost), tuple(released), tuple(trusted))
        for lease in changes.gained:
            log.info("lease_acquired", environment=lease.environment, fence=lease.token)
        for name in changes.lost:
            log.warning("lease_lost", environment=name)
        for name in changes.released:
            log.info("lease_released", environment=name, reason="assigned to another replica")
        for name in changes.trusted:
            log.info("lease_trusted_again", environment=name)
        return changes

    def _keep(self, lease: Lease, renewed: float) -> None:
        with self._lock:
            self._held[lease.environment] = _Held(lease, renewed)

    def _forget(self, environment: str) -> None:
        with self._lock:
            self._held.pop(environment, None)
            self._fresh.discard(environment)

    def ready(self, environment: str) -> None:
        """The takeover of a gained lease is done (its interrupted rollouts resumed):
        ``token`` may give it out now."""
        with self._lock:
            self._fresh.discard(environment)

    def token(self, environment: str) -> int | None:
        """The token to write ``environment`` with, if its lease can be trusted now."""
        with self._lock:
            mine = self._held.get(environment)
            fresh = environment in self._fresh
        if mine is None or fresh or self.clock() - mine.renewed >= self.ttl - self.margin:
            return None
        return mine.lease.token

    def confirm(self, environment: str, token: int) -> bool:
        """The lease of ``environment`` with ``token`` is held and live now (see the contract)."""
        with self._lock:
            mine = self._held.get(environment)
        if mine is None or mine.lease.token != token:
            return False
        if self.clock() - mine.renewed >= self.ttl - self.margin:
            return False
        try:
            renewed = self.leases.renew(mine.lease, self.ttl)
        except ReconcilerError as exc:
            log.warning("lease_unconfirmed", environment=environment, error=str(exc))
            return False
        return renewed is not None

    def owners(self) -> dict[str, str]:
        with self._lock:
            return {name: self.replica for name in sorted(self._held)}

    def stand_down(self) -> None:
        with self._lock:
            held, self._held = list(self._held.values()), {}
            self._fresh.clear()
        try:
            for mine in held:
                self.leases.release(mine.lease)
            self.leases.leave(self.replica)
        except ReconcilerError as exc:
            log.warning("stand_down_incomplete", error=str(exc), leases="lapse by themselves")
