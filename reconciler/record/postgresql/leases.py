"""``PostgresLeases``: ``record.Leases`` on the PostgreSQL state database.

Contract:
* An environment is owned through a lease: a row of ``leases`` (holder, fencing token,
  expiry on the database's clock). ``acquire`` takes a free lease (never granted, expired or
  released) with a new token from the ``lease_tokens`` sequence, in one statement, so two
  replicas racing for it cannot both win. ``renew`` extends a live lease and keeps its token;
  a lapsed lease is never renewed: its holder must acquire again and gets a new token.
  ``release`` expires it now (the row and its token stay: fencing keeps refusing the old
  token).
* Fencing is enforced by the database, not by the replicas: the triggers of
  ``sql/postgresql/0004_leases.sql`` refuse a write of a leased environment's journal,
  deployed versions or quarantine unless the transaction carries the live lease's token
  (``PostgresStateStore.fenced(token)``); the refusal is ``record.Fenced``. A replica
  paused past its lease (SIGSTOP, a partition, a long GC) that wakes up and writes is
  refused: it cannot record a step it did not own.
* Members: ``heartbeat`` upserts the replica with an expiry, ``live_replicas`` lists those
  not expired; the ownership plan (``plan.ownership``) hashes environments over them.

Why lease rows rather than session advisory locks: an advisory lock lives as long as one
connection. It cannot expire on a schedule we choose (a replica whose connection stays open
while the process is stopped keeps it until TCP gives up), it does not survive a reconnect
of the pool (a blip would drop ownership silently), it carries no token a write could be
checked against, and it is invisible to other replicas' status pages. A row gives an expiry
on one clock (the database's), a strictly increasing token that the same database checks on
every write, a holder everyone can read, and a takeover that is one conditional UPDATE. The
advisory lock remains the right tool where its scope is exactly one transaction: migrations
(``connection.MIGRATION_LOCK``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from psycopg import rows as pg_rows

from reconciler.record.postgresql.connection import Connections
from reconciler.record.types import Lease, Replica

if TYPE_CHECKING:
    from reconciler.record.protocols import LeaseHolders, Leases

__all__ = ["PostgresLeases"]

_LEASE_COLUMNS = (
    "environment, holder, token, extract(epoch FROM expires_at)::float8 AS expires_at,"
    " expires_at > clock_timestamp() AS live"
)
_ACQUIRE = """
INSERT INTO leases AS l (environment, holder, token, acquired_at, expires_at)
VALUES (%(environment)s, %(holder)s, nextval('lease_tokens'), clock_timestamp(),
        clock_timestamp() + make_interval(secs => %(ttl)s))
ON CONFLICT (environment) DO UPDATE
   SET holder = EXCLUDED.holder, token = EXCLUDED.token,
       acquired_at = EXCLUDED.acquired_at, expires_at = EXCLUDED.expires_at
 WHERE l.expires_at <= clock_timestamp()
RETURNING environment, holder, token, extract(epoch FROM expires_at)::float8 AS expires_at,
          expires_at > clock_timestamp() AS live
"""
_RENEW = """
UPDATE leases SET expires_at = clock_timestamp() + make_interval(secs => %(ttl)s)
 WHERE environment = %(environment)s AND token = %(token)s AND expires_at > clock_timestamp()
RETURNING environment, holder, token, extract(epoch FROM expires_at)::float8 AS expires_at,
          expires_at > clock_timestamp() AS live
"""
_RELEASE = """
UPDATE leases SET expires_at = clock_timestamp()
 WHERE environment = %(environment)s AND token = %(token)s AND expires_at > clock_timestamp()
"""
_HEARTBEAT = """
INSERT INTO replicas AS r (replica, address, started_at, expires_at)
VALUES (%(replica)s, %(address)s, clock_timestamp(),
        clock_timestamp() + make_interval(secs => %(ttl)s))
ON CONFLICT (replica) DO UPDATE SET address = EXCLUDED.address, expires_at = EXCLUDED.expires_at
"""


def _lease(row: Mapping[str, Any]) -> Lease:
    return Lease(
        row["environment"], row["holder"], int(row["token"]), row["expires_at"], row["live"]
    )


class PostgresLeases:
    """``record.Leases`` on ``connections`` (a read-write store's, shared)."""

    def __init__(self, connections: Connections) -> None:
        self.connections = connections

    def _one(self, sql: str, values: Mapping[str, Any]) -> Mapping[str, Any] | None:
        with (
            self.connections.writer() as db,
            db.cursor(row_factory=pg_rows.dict_row) as cursor,
        ):
            return cursor.execute(sql.encode(), values).fetchone()

    def _execute(self, sql: str, values: Mapping[str, Any]) -> None:
        with self.connections.writer() as db:
            db.execute(sql.encode(), values)

    def heartbeat(self, replica: str, address: str, ttl: float) -> None:
        self._execute(_HEARTBEAT, {"replica": replica, "address": address, "ttl": float(ttl)})

    def leave(self, replica: str) -> None:
        self._execute("DELETE FROM replicas WHERE replica = %(replica)s", {"replica": replica})

    def live_replicas(self) -> list[Replica]:
        sql = (
            "SELECT replica, address, extract(epoch FROM expires_at)::float8 AS expires_at"
            " FROM replicas WHERE expires_at > clock_timestamp() ORDER BY replica"
        )
        with (
            self.connections.connection() as db,
            db.cursor(row_factory=pg_rows.dict_row) as cursor,
        ):
            found = cursor.execute(sql.encode()).fetchall()
        return [Replica(r["replica"], r["address"], r["expires_at"]) for r in found]

    def acquire(self, environment: str, holder: str, ttl: float) -> Lease | None:
        found = self._one(
            _ACQUIRE, {"environment": environment, "holder": holder, "ttl": float(ttl)}
        )
        return _lease(found) if found else None

    def renew(self, lease: Lease, ttl: float) -> Lease | None:
        values = {"environment": lease.environment, "token": lease.token, "ttl": float(ttl)}
        found = self._one(_RENEW, values)
        return _lease(found) if found else None

    def release(self, lease: Lease) -> None:
        self._execute(_RELEASE, {"environment": lease.environment, "token": lease.token})

    def leases(self) -> list[Lease]:
        if not self.connections.pooled:
            return []  # a read-only store of a database without a schema yet: no leases
        sql = f"SELECT {_LEASE_COLUMNS} FROM leases ORDER BY environment"  # noqa: S608
        with (
            self.connections.connection() as db,
            db.cursor(row_factory=pg_rows.dict_row) as cursor,
        ):
            return [_lease(r) for r in cursor.execute(sql.encode()).fetchall()]


if TYPE_CHECKING:  # mypy proves the class implements the Protocol

    def _conforms(leases: PostgresLeases) -> Leases:
        return leases

    def _reads_holders(leases: PostgresLeases) -> LeaseHolders:
        return leases
