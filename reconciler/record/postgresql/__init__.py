"""The PostgreSQL backend of the state store, shared by replicas; the only package that
imports psycopg (and psycopg_pool).

Contract: ``PostgresStateStore.open(url, ...)`` (``record.postgresql.store``) implements
``record.StateStore`` like the SQLite backend and passes the same contract suite
(``tests/state_store``), over ``record.postgresql.connection`` (connection parameters and the
password file, the pool, the translation of psycopg errors into ``StoreError`` and
``StoreUnavailable``, the migration session holding an advisory lock). The schema is
``sql/postgresql/``, applied by ``record.migrations``.

* ``state.url`` is a libpq URL without a password; the password comes from
  ``state.password_file`` (read at each new connection) or libpq (``PGPASSWORD``,
  ``PGPASSFILE``, ``~/.pgpass``).
* PostgreSQL-only roles are modules of this package, on ``connection.Connections``
  (``PostgresStateStore.connections``): ``leases`` (``PostgresLeases``: environments leased
  to replicas, fencing tokens checked by the database on every journal and deployed write),
  ``notifications`` (``PostgresTriggers``: sync requests between replicas, LISTEN/NOTIFY).
"""

from reconciler.record.postgresql.connection import MIGRATION_LOCK, Connections
from reconciler.record.postgresql.leases import PostgresLeases
from reconciler.record.postgresql.notifications import PostgresTriggers
from reconciler.record.postgresql.store import PostgresStateStore

__all__ = [
    "MIGRATION_LOCK",
    "Connections",
    "PostgresLeases",
    "PostgresStateStore",
    "PostgresTriggers",
]
