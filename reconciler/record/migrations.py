"""Versioned schema migrations, one runner for every backend.

Contract:
* The SQL is package data, one directory per dialect: ``sql/<dialect>/NNNN_<name>.sql``.
  Versions start at 1 and are contiguous, except versions of ``RESERVED``: a number taken by
  a branch still in flight may be absent (its file, once merged, must carry the reserved name),
  so two branches never both ship a version 3. Every dialect has the same versions under the
  same names (a version is one logical schema everywhere; a migration with nothing to do in a
  dialect is a comment there). A released migration never changes: a schema change is a new
  file. A reserved version merged after a later one is applied after it: reserved migrations
  are independent of the ones numbered above them.
* ``migrate`` applies the pending migrations in order, each in its own exclusive transaction
  that also records it in ``schema_migrations (version, name, applied_at)``. It re-reads what
  is applied inside that transaction, so processes (or replicas) opening the same database at
  once apply each migration exactly once. Up to date, it writes nothing: idempotent. It
  returns an ``Outcome``: the version before and after, and what this very call applied or
  adopted (what ``reconciler migrate`` prints).
* A database newer than the code (or whose applied migrations differ from the code's) is
  refused with ``StoreError`` before anything is written.
* Adoption: a database written before ``schema_migrations`` existed reports its version
  through ``Session.legacy_version`` (SQLite: ``PRAGMA user_version = 1`` of the first
  release); those migrations are recorded as applied, their SQL is not run, no row is touched.
* ``require_current`` is the read-only check: it never writes, and tells how to migrate.

The runner knows no SQL: a backend provides a ``Database`` whose sessions do the few
dialect-specific things (bookkeeping table, script execution, locking).
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Protocol

from reconciler.record.protocols import StoreError

__all__ = [
    "RESERVED",
    "Database",
    "Migration",
    "Outcome",
    "Session",
    "available",
    "current_version",
    "latest",
    "load",
    "migrate",
    "require_current",
]

_FILE = re.compile(r"(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql")

#: Versions taken by work in flight on another branch: ``version -> name``. A missing
#: reserved version is not a gap; remove its entry once its file is on main (3, "events",
#: merged after 4, "leases": databases made in between get 3 applied after 4).
RESERVED: Mapping[int, str] = {}

MIGRATE_HINT = (
    "start the daemon (`reconciler run`) or run `reconciler sync` once: "
    "they migrate the state store"
)


@dataclass(frozen=True)
class Migration:
    """One schema change: ``NNNN_<name>.sql`` of a dialect."""

    version: int
    name: str
    sql: str = field(repr=False)


@dataclass(frozen=True)
class Outcome:
    """What ``migrate`` did: ``applied`` ran here, ``adopted`` were recorded without running
    (a database from before ``schema_migrations``); both empty when it was up to date."""

    previous: int
    version: int
    applied: tuple[Migration, ...] = ()
    adopted: tuple[Migration, ...] = ()


class Session(Protocol):
    """What the runner needs from a backend, inside one transaction (reads also outside)."""

    def applied(self) -> Mapping[int, str] | None:
        """``version -> name`` of ``schema_migrations``; None when that table does not exist."""
        ...

    def legacy_version(self) -> int:
        """The version of a database from before ``schema_migrations`` (0: none)."""
        ...

    def create_bookkeeping(self) -> None:
        """Create ``schema_migrations`` if it does not exist."""
        ...

    def run_script(self, sql: str) -> None:
        """Execute a migration file's statements in the current transaction."""
        ...

    def record(self, migration: Migration, applied_at: float) -> None:
        """Insert the row of ``schema_migrations`` (and any backend-specific marker)."""
        ...


class Database(Protocol):
    """A backend's database as the runner sees it; ``dialect`` names its SQL directory."""

    dialect: str

    def session(self) -> AbstractContextManager[Session]:
        """Reads outside any write transaction (nothing is written through it)."""
        ...

    def exclusive(self) -> AbstractContextManager[Session]:
        """One write transaction, exclusive among every process and replica using the
        database; committed when the block ends, rolled back when it raises."""
        ...


def load(
    dialect: str, root: Traversable | None = None, reserved: Mapping[int, str] = RESERVED
) -> tuple[Migration, ...]:
    """The migrations of ``dialect`` in order, read from ``root`` (default: package data);
    ``reserved`` versions may be missing (see the module's contract)."""
    directory = (root or resources.files(__package__).joinpath("sql")).joinpath(dialect)
    if not directory.is_dir():
        raise StoreError(f"no migrations for the {dialect!r} dialect")
    found = []
    for entry in directory.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = _FILE.fullmatch(entry.name)
        if match is None:
            raise StoreError(f"migration file {dialect}/{entry.name} is not NNNN_name.sql")
        found.append(
            Migration(int(match["version"]), match["name"], entry.read_text(encoding="utf-8"))
        )
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    expected = range(1, max(versions, default=0) + 1)
    if len(set(versions)) != len(versions) or any(
        v not in versions and v not in reserved for v in expected
    ):
        shown = ", ".join(str(v) for v in versions) or "none"
        raise StoreError(f"{dialect} migrations must be numbered 1..N without gaps: {shown}")
    for migration in found:
        if reserved.get(migration.version, migration.name) != migration.name:
            raise StoreError(
                f"{dialect} migration {migration.version} is reserved for "
                f"{reserved[migration.version]!r}, not {migration.name!r}"
            )
    return tuple(found)


def latest(migrations: Sequence[Migration]) -> int:
    """The newest version of ``migrations`` (0: none)."""
    return migrations[-1].version if migrations else 0


@functools.cache
def available(dialect: str) -> tuple[Migration, ...]:
    """The migrations this reconciler ships for ``dialect`` (read once)."""
    return load(dialect)


def current_version(database: Database) -> int:
    """The schema version of the database: 0 when it has no schema. Reads only."""
    with database.session() as session:
        applied = session.applied()
        return max(applied, default=0) if applied is not None else session.legacy_version()


def _newer(version: int, latest: int) -> StoreError:
    return StoreError(
        f"state store schema {version} is newer than this reconciler ({latest}): "
        "upgrade reconciler, or restore a backup of the state"
    )


def _check(applied: Mapping[int, str], migrations: Sequence[Migration]) -> None:
    """Refuse a database newer than the code, or one that applied other migrations."""
    known = {m.version: m.name for m in migrations}
    newest = max(applied, default=0)
    if newest > latest(migrations):
        raise _newer(newest, latest(migrations))
    for version, name in sorted(applied.items()):
        if known.get(version) != name:
            raise StoreError(
                f"state store migration {version} is {name!r}, this reconciler's is "
                f"{known.get(version)!r}: the database was migrated by another build"
            )


def _applied(session: Session, migrations: Sequence[Migration]) -> dict[int, str] | None:
    """Applied migrations (a legacy version counts as its migrations); None: no bookkeeping."""
    applied = session.applied()
    if applied is not None:
        return dict(applied)
    legacy = session.legacy_version()
    if legacy > latest(migrations):
        raise _newer(legacy, latest(migrations))
    return None if legacy == 0 else {m.version: m.name for m in migrations if m.version <= legacy}


def require_current(database: Database, migrations: Sequence[Migration]) -> int:
    """Check, reading only, that the database is exactly at the code's version."""
    with database.session() as session:
        applied = _applied(session, migrations) or {}
    _check(applied, migrations)
    version = max(applied, default=0)
    if set(applied) != {m.version for m in migrations}:
        raise StoreError(
            f"state store schema {version} is older than this reconciler "
            f"({latest(migrations)}) and a read-only store cannot migrate it: {MIGRATE_HINT}"
        )
    return version


def migrate(
    database: Database,
    migrations: Sequence[Migration],
    clock: Callable[[], float] = time.time,
) -> Outcome:
    """Bring the database to the newest of ``migrations``; says what this call did."""
    with database.session() as session:
        bookkeeping = session.applied() is not None
        applied = _applied(session, migrations) or {}
    _check(applied, migrations)
    previous = max(applied, default=0)
    pending = [m for m in migrations if m.version not in applied]
    if bookkeeping and not pending:
        return Outcome(previous, latest(migrations))  # up to date: nothing written
    adopted: list[Migration] = []
    if not bookkeeping:
        with database.exclusive() as session:
            if session.applied() is None:
                legacy = _applied(session, migrations) or {}
                session.create_bookkeeping()
                now = clock()
                for migration in [m for m in migrations if m.version in legacy]:
                    session.record(migration, now)  # its schema is already there
                    adopted.append(migration)
    ran: list[Migration] = []
    for migration in pending:
        with database.exclusive() as session:
            applied = dict(session.applied() or {})
            _check(applied, migrations)
            if migration.version not in applied:  # not applied by a concurrent process
                session.run_script(migration.sql)
                session.record(migration, clock())
                ran.append(migration)
    return Outcome(previous, latest(migrations), tuple(ran), tuple(adopted))
