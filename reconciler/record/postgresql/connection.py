"""Connections to the PostgreSQL state database: parameters, the pool, errors, migrations.

Contract:
* ``Connections(url, ...)`` checks the URL (a libpq URL without a password: ``StoreError``)
  and the password file (read now, and again at every new connection, its first line), and
  connects to nothing yet. ``where`` names the database for messages (no query, no password).
* ``connect()``: a dedicated autocommit connection, not pooled (migrations, ``LISTEN``).
  ``open_pool()``: the ``psycopg_pool.ConnectionPool`` (1 to ``pool_size`` connections,
  each checked before use: a broken one is replaced; a caller waits ``connect_timeout`` at
  most). ``connection()`` lends a pooled one (autocommit: one statement is one transaction),
  ``writer()`` the same for writes and ``transaction()`` one inside ``BEGIN``...``COMMIT``
  (both ``StoreError`` when read-only). Given a ``fence`` (a lease's token), both write
  inside a transaction that carries it in ``reconciler.fencing_token`` (transaction-local:
  a pooled connection never keeps it), which the fencing triggers check (``leases``).
* Every connection is prepared the same way: ``statement_timeout`` and
  ``idle_in_transaction_session_timeout`` of ``SESSION_TIMEOUT_S`` (a stuck peer never holds
  locks for long), ``default_transaction_read_only`` when read-only, ``application_name``
  ``reconciler`` and a TCP user timeout unless the URL sets them.
* ``translated()``: psycopg errors become ``StoreUnavailable`` when retrying later may work
  (no connection, connection lost, pool timeout; SQLSTATE classes 08, 40, 53, 57, 58 and
  55P03: connection, serialization/deadlock, resources, shutdown/cancel, system) and
  ``StoreError`` otherwise (the statement or the data: retrying cannot help); a write refused
  by fencing (SQLSTATE ``RC001``) is ``Fenced``.
* ``Schema(db)`` is ``migrations.Database``/``Session`` on one connection; ``exclusive()``
  holds ``pg_advisory_xact_lock(*MIGRATION_LOCK)`` for the whole transaction, so replicas
  starting at once migrate one after the other (and each migration runs once).
* ``sendable(values)``: PostgreSQL text cannot hold NUL; a NUL in a text value becomes U+FFFD.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg import conninfo
from psycopg_pool import ConnectionPool, PoolClosed

from reconciler.record import migrations
from reconciler.record.protocols import Fenced, StoreError, StoreUnavailable

__all__ = [
    "DIALECT",
    "MIGRATION_LOCK",
    "SESSION_TIMEOUT_S",
    "Connection",
    "Connections",
    "Schema",
    "read_password",
    "sendable",
]

DIALECT = "postgresql"
#: ``pg_advisory_xact_lock(key1, key2)`` of migrations; key1 is reconciler's namespace of
#: advisory locks ("RECO"), other key2 values are free for leases.
MIGRATION_LOCK = (0x5245434F, 1)
SESSION_TIMEOUT_S = 60
_SECRETS = frozenset({"password", "sslpassword"})
_TEMPORARY_CLASSES = ("08", "40", "53", "57", "58")
FENCED_SQLSTATE = "RC001"  # raised by reconciler_fence() (sql/postgresql/0004_leases.sql)
_BOOKKEEPING = (
    b"CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY,"
    b" name text NOT NULL, applied_at double precision NOT NULL)"
)
Connection = psycopg.Connection[Any]


def temporary(exc: psycopg.Error) -> bool:
    """Worth retrying later: the server or the network, not the statement or the data."""
    if exc.sqlstate is None:  # libpq: refused, lost, closed; the pool: no connection in time
        return isinstance(exc, psycopg.OperationalError) and not isinstance(exc, PoolClosed)
    return exc.sqlstate[:2] in _TEMPORARY_CLASSES or exc.sqlstate == "55P03"  # lock not available


def _clean(value: Any) -> Any:
    return value.replace("\x00", "\ufffd") if isinstance(value, str) and "\x00" in value else value


def sendable(values: Sequence[Any]) -> list[Any]:
    """Statement parameters PostgreSQL accepts (no NUL in text)."""
    return [_clean(v) for v in values]


def read_password(path: Path) -> str:
    """The first line of the password file (``StoreError`` when unreadable or empty)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeError) as exc:
        raise StoreError(f"state.password_file {path}: {exc}") from exc
    if not lines or not lines[0].strip():
        raise StoreError(f"state.password_file {path} is empty")
    return lines[0].strip()


def _display(parameters: Mapping[str, Any]) -> str:
    """Where the database is, for messages: ``postgresql://user@host:port/db``."""
    user = f"{parameters['user']}@" if parameters.get("user") else ""
    port = f":{parameters['port']}" if parameters.get("port") else ""
    return (
        f"postgresql://{user}{parameters.get('host') or ''}{port}/{parameters.get('dbname') or ''}"
    )


class Connections:
    """How to reach the database; see the module's contract."""

    def __init__(
        self,
        url: str,
        *,
        read_only: bool = False,
        password_file: Path | None = None,
        pool_size: int = 8,
        connect_timeout: float = 10.0,
    ) -> None:
        try:
            parameters = conninfo.conninfo_to_dict(url)
        except psycopg.Error as exc:
            raise StoreError(f"state.url is not a valid PostgreSQL URL: {exc}") from None
        self.where = _display(parameters)
        if _SECRETS & set(parameters):
            raise StoreError(f"state store {self.where}: the URL must not contain a password")
        self.url, self.read_only = url, read_only
        self.pool_size, self.timeout = max(1, pool_size), connect_timeout
        self._password_file = password_file
        self._defaults: dict[str, Any] = {"connect_timeout": max(1, round(connect_timeout))}
        if "application_name" not in parameters:
            self._defaults["application_name"] = "reconciler"
        if "tcp_user_timeout" not in parameters:  # a silent peer fails calls, not hangs them
            self._defaults["tcp_user_timeout"] = SESSION_TIMEOUT_S * 1000
        self._pool: ConnectionPool[Connection] | None = None
        self.parameters()  # an unreadable password file: StoreError now

    def parameters(self) -> dict[str, Any]:
        """Connection parameters beyond the URL, read at each connect (the password file)."""
        extra: dict[str, Any] = {**self._defaults, "autocommit": True}
        if self._password_file is not None:
            extra["password"] = read_password(self._password_file)
        return extra

    def prepare(self, db: Connection) -> None:
        """The session settings of every connection (left idle: autocommit)."""
        timeout = f"{SESSION_TIMEOUT_S}s"
        db.execute(
            "SELECT set_config('statement_timeout', %s, false),"
            " set_config('idle_in_transaction_session_timeout', %s, false),"
            " set_config('default_transaction_read_only', %s, false)",
            (timeout, timeout, "on" if self.read_only else "off"),
        )

    @contextmanager
    def translated(self) -> Iterator[None]:
        try:
            yield
        except psycopg.Error as exc:
            message = f"state store {self.where}: {type(exc).__name__}: {exc}".strip()
            if temporary(exc):
                raise StoreUnavailable(message) from exc
            if exc.sqlstate == FENCED_SQLSTATE:
                raise Fenced(f"state store {self.where}: {exc}") from exc
            raise StoreError(message) from exc

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        """A dedicated, prepared autocommit connection (closed at the end)."""
        with self.translated():
            db = psycopg.connect(self.url, **self.parameters())
        try:
            with self.translated():
                self.prepare(db)
            yield db
        finally:
            db.close()

    def open_pool(self) -> None:
        """Start the pool (its first connection is made in the background)."""
        self._pool = ConnectionPool(
            self.url,
            kwargs=self.parameters,
            min_size=1,
            max_size=self.pool_size,
            open=False,
            configure=self.prepare,
            check=ConnectionPool.check_connection,
            timeout=self.timeout,
            name=f"reconciler-{'ro' if self.read_only else 'rw'}",
        )
        self._pool.open(wait=False)

    @property
    def pooled(self) -> bool:
        return self._pool is not None

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """A pooled connection, errors translated."""
        if self._pool is None:
            raise StoreError(f"state store {self.where}: not connected")
        with self.translated(), self._pool.connection() as db:
            yield db

    def check_writable(self) -> None:
        if self.read_only:
            raise StoreError(f"state store {self.where} is open read-only: nothing is written")

    @contextmanager
    def writer(self, fence: int | None = None) -> Iterator[Connection]:
        """A pooled connection to write with; autocommit: one statement, one transaction
        (with a ``fence``: the statement and the token in one transaction)."""
        if fence is not None:
            with self.transaction(fence) as db:
                yield db
            return
        self.check_writable()
        with self.connection() as db:
            yield db

    @contextmanager
    def transaction(self, fence: int | None = None) -> Iterator[Connection]:
        """A pooled connection inside one write transaction (committed at the end) that
        carries ``fence`` when given."""
        self.check_writable()
        with self.connection() as db, db.transaction():
            if fence is not None:
                db.execute(
                    "SELECT set_config('reconciler.fencing_token', %s, true)", (str(int(fence)),)
                )
            yield db

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()


class Schema:
    """``migrations.Database`` and ``migrations.Session`` on one autocommit connection."""

    dialect = DIALECT

    def __init__(self, db: Connection) -> None:
        self._db = db

    @contextmanager
    def session(self) -> Iterator[Schema]:
        yield self

    @contextmanager
    def exclusive(self) -> Iterator[Schema]:
        with self._db.transaction():
            self._db.execute("SET LOCAL statement_timeout = 0")  # another replica may migrate
            self._db.execute("SELECT pg_advisory_xact_lock(%s, %s)", MIGRATION_LOCK)
            yield self

    def applied(self) -> dict[int, str] | None:
        found = self._db.execute("SELECT to_regclass('schema_migrations')").fetchone()
        if found is None or found[0] is None:
            return None
        return dict(self._db.execute("SELECT version, name FROM schema_migrations").fetchall())

    def legacy_version(self) -> int:
        return 0  # no PostgreSQL database predates schema_migrations

    def create_bookkeeping(self) -> None:
        self._db.execute(_BOOKKEEPING)

    def run_script(self, sql: str) -> None:
        self._db.execute(sql.encode())  # several statements: no parameters, simple protocol

    def record(self, migration: migrations.Migration, applied_at: float) -> None:
        self._db.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (%s, %s, %s)",
            (migration.version, migration.name, applied_at),
        )
