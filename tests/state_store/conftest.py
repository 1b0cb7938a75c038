"""Backends for the state store contract suite.

Every test that takes ``backend`` or ``store`` runs once per backend in ``BACKENDS``: SQLite
in a temp dir, and PostgreSQL in a fresh database of the session's throwaway server
(``tests.pg``; started only when a PostgreSQL test runs). A new backend adds one class
implementing ``Backend`` and one entry in ``BACKENDS``; the tests stay as they are.
Backend-specific tests (files, pragmas, pools) live in ``test_<name>.py``.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import psycopg
import pytest

from reconciler import record
from reconciler.record.postgresql import PostgresStateStore
from reconciler.record.sqlite import SqliteStateStore


class Backend(Protocol):
    name: str

    def open(self, *, read_only: bool = False) -> record.StateStore:
        """A store on this backend's database (closed at teardown)."""

    def exists(self) -> bool:
        """The database exists (a read-only store must never create it)."""

    def snapshot(self) -> str:
        """A digest of everything persisted (equal before and after reads)."""

    def execute(self, sql: str) -> list[tuple[Any, ...]]:
        """Raw SQL outside any store (portable statements only), committed."""

    def record_migration(self, version: int, name: str) -> None:
        """A row in ``schema_migrations`` as if another build had applied it."""


class SqliteBackend:
    name = "sqlite"

    def __init__(self, tmp_path: Path, request: pytest.FixtureRequest) -> None:
        self.path = tmp_path / "state" / "state.db"
        self.opened: list[SqliteStateStore] = []

    def open(self, *, read_only: bool = False) -> SqliteStateStore:
        store = SqliteStateStore.open(self.path, read_only=read_only)
        self.opened.append(store)
        return store

    def exists(self) -> bool:
        return self.path.exists()

    def snapshot(self) -> str:
        """The database file and its WAL (the ``-shm`` index is shared memory: readers write
        their read marks there)."""
        digest = hashlib.sha256()
        for path in (self.path, self.path.with_name(self.path.name + "-wal")):
            digest.update(path.read_bytes() if path.exists() else b"")
            digest.update(b"\0")
        return digest.hexdigest()

    def execute(self, sql: str) -> list[tuple[Any, ...]]:
        db = sqlite3.connect(self.path, isolation_level=None)
        try:
            return db.execute(sql).fetchall()
        finally:
            db.close()

    def record_migration(self, version: int, name: str) -> None:
        self.execute(
            "INSERT INTO schema_migrations (version, name, applied_at)"
            f" VALUES ({int(version)}, '{name}', 0)"
        )

    def close(self) -> None:
        for store in self.opened:
            store.close()


class PostgresBackend:
    name = "postgresql"

    def __init__(self, tmp_path: Path, request: pytest.FixtureRequest) -> None:
        self.url: str = request.getfixturevalue("postgres_url")
        self.opened: list[PostgresStateStore] = []

    def open(self, *, read_only: bool = False) -> PostgresStateStore:
        store = PostgresStateStore.open(self.url, read_only=read_only, pool_size=4)
        self.opened.append(store)
        return store

    def exists(self) -> bool:
        """The database itself is the fixture's: "exists" is "has any table"."""
        [(tables,)] = self.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()"
        )
        return tables > 0

    def snapshot(self) -> str:
        """Every table's definition and rows, and every sequence's position."""
        digest = hashlib.sha256()
        with psycopg.connect(self.url, autocommit=True) as db:
            tables = db.execute(
                "SELECT table_name FROM information_schema.tables"
                " WHERE table_schema = current_schema() ORDER BY table_name"
            ).fetchall()
            for (table,) in tables:
                columns = db.execute(
                    "SELECT column_name, data_type, is_nullable, column_default"
                    " FROM information_schema.columns WHERE table_schema = current_schema()"
                    " AND table_name = %s ORDER BY ordinal_position",
                    (table,),
                ).fetchall()
                order = ", ".join(str(n) for n in range(1, len(columns) + 1))
                found = db.execute(f'SELECT * FROM "{table}" ORDER BY {order}').fetchall()
                digest.update(repr((table, columns, found)).encode())
            sequences = db.execute(
                "SELECT sequencename, last_value FROM pg_sequences"
                " WHERE schemaname = current_schema() ORDER BY 1"
            ).fetchall()
            digest.update(repr(sequences).encode())
        return digest.hexdigest()

    def execute(self, sql: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.url, autocommit=True) as db:
            cursor = db.execute(sql.encode())
            return cursor.fetchall() if cursor.description else []

    def record_migration(self, version: int, name: str) -> None:
        self.execute(
            "INSERT INTO schema_migrations (version, name, applied_at)"
            f" VALUES ({int(version)}, '{name}', 0)"
        )

    def close(self) -> None:
        for store in self.opened:
            store.close()


BACKENDS: dict[str, type[SqliteBackend | PostgresBackend]] = {
    "sqlite": SqliteBackend,
    "postgresql": PostgresBackend,
}


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    instance = BACKENDS[request.param](tmp_path, request)
    yield instance
    instance.close()


@pytest.fixture
def store(backend: Backend) -> record.StateStore:
    return backend.open()
