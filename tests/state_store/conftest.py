"""Backends for the state store contract suite.

Every test that takes ``backend`` or ``store`` runs once per backend in ``BACKENDS``. A new
backend (PostgreSQL) adds one class implementing ``Backend`` and one entry in ``BACKENDS``;
the tests stay as they are. Backend-specific tests (files, pragmas) live in ``test_<name>.py``.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest

from reconciler import record
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

    def __init__(self, tmp_path: Path) -> None:
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


BACKENDS = {"sqlite": SqliteBackend}


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    instance = BACKENDS[request.param](tmp_path)
    yield instance
    instance.close()


@pytest.fixture
def store(backend: Backend) -> record.StateStore:
    return backend.open()
