"""The SQLite backend of the state store (the embedded default); the only importer of sqlite3.

Contract (beyond ``record.protocols``):
* ``SqliteStateStore.open(path)`` (or ``SqliteStateStore(path)``): read-write. Creates the
  missing directories 0700 and the database file 0600 whatever the umask (SQLite gives its
  ``-wal``/``-shm`` files the database file's mode); modes of existing files are left alone.
  WAL mode, ``synchronous=NORMAL``, foreign keys on; brings the schema up to date through
  ``record.migrations`` (the SQL is in ``sql/sqlite/``) under an ``flock`` on
  ``<db>.open-lock`` (concurrent first opens migrate once), so the first release's databases
  (``PRAGMA user_version = 1``, no ``schema_migrations``) are adopted as they are.
  ``PRAGMA user_version`` follows the newest applied migration, so the first release refuses
  a database migrated past it instead of misreading it.
* ``open(path, read_only=True)``, for the commands that only read: ``file:...?mode=ro`` and
  ``PRAGMA query_only``; never creates, migrates or writes. A missing (or schema-less)
  database reads as empty (from memory; no file or directory is created), a schema older or
  newer than the code raises ``StoreError`` telling how to migrate, every write raises
  ``StoreError``; the database's bytes stay as they were. (SQLite itself leaves empty
  ``-wal``/``-shm`` files behind a reader of a WAL database nobody else has open.)
* One connection shared by threads under a lock; each write method is one ``BEGIN IMMEDIATE``
  transaction (30 s ``timeout`` on other processes' locks); ``sqlite3`` errors come out as
  ``StoreError``; rows are converted explicitly (``record.rows``), states to their enums.

Size: over 400 lines: one short method per store Protocol method (about 45 of them); the row
conversions and the event log's queries live in ``record.rows``, the schema in
``record.migrations``.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import threading
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, Unpack

from reconciler.record import migrations, rows
from reconciler.record.protocols import EnvironmentFields, StoreError
from reconciler.record.types import (
    DeployedVersion,
    DriftMark,
    EnvironmentStatus,
    Event,
    ObservedVersion,
    QuarantineRecord,
    RolloutRecord,
    RunRecord,
    StepRecord,
)
from reconciler.states import EnvironmentResult, EventKind, RolloutState, Severity, StepState
from reconciler.support import files

if TYPE_CHECKING:
    from reconciler.record.protocols import StateStore

__all__ = ["SqliteStateStore"]

DIALECT = "sqlite"
_NEWEST_FIRST = "ORDER BY started_at DESC, rowid DESC LIMIT ?"  # ties: last written first
_T = TypeVar("_T")
_BOOKKEEPING = (
    "CREATE TABLE IF NOT EXISTS schema_migrations"
    " (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
)


@contextmanager
def _translated(path: Path | str) -> Iterator[None]:
    try:
        yield
    except sqlite3.Error as exc:
        raise StoreError(f"state store {path}: {exc}") from exc


@contextmanager
def _immediate(db: sqlite3.Connection, lock: threading.RLock) -> Iterator[sqlite3.Connection]:
    """One ``BEGIN IMMEDIATE`` transaction: committed at the end, rolled back on error."""
    with lock:
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise


def _statements(script: str) -> list[str]:
    """The statements of a SQL script, split at the semicolons that end one (not those in
    strings, comments or trigger bodies); a rest without one is run as it is."""
    found, buffer = [], ""
    *parts, rest = script.split(";")
    for part in parts:
        buffer += part + ";"
        if sqlite3.complete_statement(buffer):
            found.append(buffer.strip())
            buffer = ""
    if (buffer + rest).strip():
        found.append(buffer + rest)  # comments, or a last statement without its semicolon
    return found


def _create_private(path: Path) -> None:
    """Create the missing directories 0700 and the file 0600, whatever the umask."""
    files.private_file(files.private_dir(path.parent) / path.name)


class _Schema:
    """``migrations.Database`` and ``migrations.Session`` on one connection."""

    dialect = DIALECT

    def __init__(self, db: sqlite3.Connection, lock: threading.RLock) -> None:
        self._db, self._lock = db, lock

    @contextmanager
    def session(self) -> Iterator[_Schema]:
        with self._lock:
            yield self

    @contextmanager
    def exclusive(self) -> Iterator[_Schema]:
        with _immediate(self._db, self._lock):
            yield self

    def applied(self) -> dict[int, str] | None:
        exists = self._db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
        ).fetchone()
        if exists is None:
            return None
        return dict(self._db.execute("SELECT version, name FROM schema_migrations").fetchall())

    def legacy_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def create_bookkeeping(self) -> None:
        self._db.execute(_BOOKKEEPING)

    def run_script(self, sql: str) -> None:
        for statement in _statements(sql):
            self._db.execute(statement)

    def record(self, migration: migrations.Migration, applied_at: float) -> None:
        self._db.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
            (migration.version, migration.name, applied_at),
        )
        version = max(self.legacy_version(), int(migration.version))
        self._db.execute(f"PRAGMA user_version = {version}")


def _opening(path: Path) -> AbstractContextManager[None]:
    """Serialise read-write opens of one database across threads and processes: SQLite's
    switch to WAL mode does not wait on the busy timeout, so several first opens at once
    failed with "database is locked"; an ``flock`` on ``<db>.open-lock`` (0600, never
    deleted) orders them: the first creates and migrates, the others find it done."""
    return files.exclusive_lock(Path(f"{path}.open-lock"))


def _connect(target: str | Path, *, uri: bool = False) -> sqlite3.Connection:
    db = sqlite3.connect(target, uri=uri, isolation_level=None, check_same_thread=False, timeout=30)
    db.row_factory = sqlite3.Row
    return db


class SqliteStateStore:
    """``record.StateStore`` on one SQLite file; safe to share between threads."""

    def __init__(self, path: Path | str, *, read_only: bool = False) -> None:
        self.path = Path(path)
        self.read_only = read_only
        self.migrated: migrations.Outcome | None = None  # what opening it applied (read-write)
        self._lock = threading.RLock()
        try:
            self._db = self._open_read_only() if read_only else self._open_read_write()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open state store {self.path}: {exc}") from exc

    @classmethod
    def open(cls, path: Path | str, *, read_only: bool = False) -> SqliteStateStore:
        return cls(path, read_only=read_only)

    def _open_read_write(self) -> sqlite3.Connection:
        _create_private(self.path)
        with _opening(self.path):
            db = _connect(self.path)
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                db.execute("PRAGMA foreign_keys=ON")
                self.migrated = migrations.migrate(
                    _Schema(db, self._lock), migrations.available(DIALECT)
                )
            except BaseException:
                db.close()
                raise
        return db

    def _open_read_only(self) -> sqlite3.Connection:
        if self.path.exists():
            db = _connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True)
            try:
                db.execute("PRAGMA query_only=ON")
                schema = _Schema(db, self._lock)
                if migrations.current_version(schema) > 0:
                    migrations.require_current(schema, migrations.available(DIALECT))
                    return db
            except BaseException:
                db.close()
                raise
            db.close()
        db = _connect(":memory:")  # no database yet: an empty one, in memory only
        migrations.migrate(_Schema(db, self._lock), migrations.available(DIALECT))
        db.execute("PRAGMA query_only=ON")
        return db

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> SqliteStateStore:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        if self.read_only:
            raise StoreError(f"state store {self.path} is open read-only: nothing is written")
        with _translated(self.path), _immediate(self._db, self._lock) as db:
            yield db

    def _read(
        self, convert: Callable[[sqlite3.Row], _T], sql: str, params: Sequence[Any] = ()
    ) -> list[_T]:
        with self._lock, _translated(self.path):
            found = self._db.execute(sql, params).fetchall()
        try:
            return [convert(r) for r in found]
        except (ValueError, TypeError) as exc:  # an unknown state, broken JSON
            raise StoreError(f"state store {self.path}: unreadable row: {exc}") from exc

    def _write(
        self,
        table: str,
        values: Sequence[Mapping[str, Any]],
        key: Sequence[str] = (),
        update: Sequence[str] = (),
    ) -> None:
        """Insert (or upsert) rows given as ``column -> value``, all in one transaction."""
        with self._transaction() as db:
            if values:
                sql = rows.insert_sql(table, list(values[0]), key, update)
                db.executemany(sql, [tuple(row.values()) for row in values])

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """One write statement in its own transaction; returns how many rows it changed."""
        with self._transaction() as db:
            return int(db.execute(sql, params).rowcount)

    # -- deployed versions
    def deployed(self, environment: str) -> list[DeployedVersion]:
        sql = "SELECT * FROM deployed WHERE environment = ? ORDER BY host, app"
        return self._read(rows.deployed, sql, (environment,))

    def recorded_versions(self, environment: str) -> dict[tuple[str, str], str]:
        sql = "SELECT host, app, version FROM deployed WHERE environment = ?"
        return dict(self._read(lambda r: ((r[0], r[1]), r[2]), sql, (environment,)))

    def record_deployed(self, records: Sequence[DeployedVersion]) -> None:
        update = ("version", "grp", "commit_sha", "rollout_id", "deployed_at")
        key = ("environment", "host", "app")
        self._write("deployed", [rows.deployed_row(r) for r in records], key, update)

    def forget_deployed(self, environment: str, pairs: Sequence[tuple[str, str]]) -> None:
        with self._transaction() as db:
            db.executemany(
                "DELETE FROM deployed WHERE environment = ? AND host = ? AND app = ?",
                [(environment, host, app) for host, app in pairs],
            )

    # -- runs
    def start_run(self, run: RunRecord) -> None:
        self._write("runs", [rows.run_row(run)])

    def _finish_run(
        self, run_id: str, result: str, at: float, summary: Mapping[str, Any], only_running: bool
    ) -> bool:
        sql = "UPDATE runs SET result = ?, finished_at = ?, summary = ? WHERE id = ?"
        params = (rows.finished_result(result), at, rows.json_text(dict(summary)), run_id)
        return self._execute(sql + (" AND finished_at IS NULL" if only_running else ""), params) > 0

    def finish_run(
        self, run_id: str, result: EnvironmentResult, finished_at: float, summary: Mapping[str, Any]
    ) -> None:
        self._finish_run(run_id, result, finished_at, summary, only_running=False)

    def finish_run_if_running(
        self, run_id: str, result: EnvironmentResult, finished_at: float, summary: Mapping[str, Any]
    ) -> bool:
        return self._finish_run(run_id, result, finished_at, summary, only_running=True)

    def run(self, run_id: str) -> RunRecord | None:
        found = self._read(rows.run, "SELECT * FROM runs WHERE id = ?", (run_id,))
        return next(iter(found), None)

    def runs(self, environment: str | None = None, limit: int = 20) -> list[RunRecord]:
        where, params = ("WHERE environment = ?", [environment]) if environment else ("", [])
        sql = f"SELECT * FROM runs {where} {_NEWEST_FIRST}"  # noqa: S608
        return self._read(rows.run, sql, [*params, limit])

    def unfinished_runs(self) -> list[RunRecord]:
        sql = "SELECT * FROM runs WHERE finished_at IS NULL ORDER BY started_at, rowid"
        return self._read(rows.run, sql)

    # -- rollouts and their journal
    def start_rollout(self, rollout: RolloutRecord) -> None:
        self._write("rollouts", [rows.rollout_row(rollout)])

    def finish_rollout(
        self, rollout_id: str, state: RolloutState, reason: str, finished_at: float
    ) -> None:
        sql = "UPDATE rollouts SET state = ?, reason = ?, finished_at = ? WHERE id = ?"
        self._execute(sql, (rows.finished_state(state), reason, finished_at, rollout_id))

    def finish_rollout_if_running(
        self, rollout_id: str, state: RolloutState, reason: str, finished_at: float
    ) -> bool:
        sql = (
            "UPDATE rollouts SET state = ?, reason = ?, finished_at = ?"
            " WHERE id = ? AND finished_at IS NULL"
        )
        params = (rows.finished_state(state), reason, finished_at, rollout_id)
        with self._transaction() as db:
            closed = db.execute(sql, params).rowcount > 0
            if closed:
                db.execute(
                    "UPDATE rollout_steps SET state = ?, finished_at = ?"
                    " WHERE rollout_id = ? AND state = ?",
                    (StepState.INTERRUPTED.value, finished_at, rollout_id, StepState.RUNNING.value),
                )
            return closed

    def rollout(self, rollout_id: str) -> RolloutRecord | None:
        found = self._read(rows.rollout, "SELECT * FROM rollouts WHERE id = ?", (rollout_id,))
        return next(iter(found), None)

    def rollouts(self, environment: str | None = None, limit: int = 20) -> list[RolloutRecord]:
        where, params = ("WHERE environment = ?", [environment]) if environment else ("", [])
        sql = f"SELECT * FROM rollouts {where} {_NEWEST_FIRST}"  # noqa: S608
        return self._read(rows.rollout, sql, [*params, limit])

    def unfinished_rollouts(self) -> list[RolloutRecord]:
        sql = "SELECT * FROM rollouts WHERE finished_at IS NULL ORDER BY started_at, rowid"
        return self._read(rows.rollout, sql)

    def journal_step(self, step: StepRecord) -> None:
        key = ("rollout_id", "phase", "step_index")
        self._write("rollout_steps", [rows.step_row(step)], key, rows.STEP_UPDATE)

    def steps(self, rollout_id: str) -> list[StepRecord]:
        sql = "SELECT * FROM rollout_steps WHERE rollout_id = ? ORDER BY started_at, rowid"
        return self._read(rows.step, sql, (rollout_id,))

    # -- environments
    def environment_status(self, environment: str) -> EnvironmentStatus:
        sql = "SELECT * FROM environments WHERE environment = ?"
        found = self._read(rows.status, sql, (environment,))
        return found[0] if found else EnvironmentStatus.unknown(environment)

    def environment_statuses(self) -> list[EnvironmentStatus]:
        return self._read(rows.status, "SELECT * FROM environments ORDER BY environment")

    def update_environment(
        self, environment: str, updated_at: float, **fields: Unpack[EnvironmentFields]
    ) -> None:
        values = rows.environment_values(fields)  # names checked against a fixed set
        row = {"environment": environment, "updated_at": updated_at, **values}
        self._write("environments", [row], ("environment",), ("updated_at", *values))

    # -- quarantine
    def quarantines(self, environment: str | None = None) -> list[QuarantineRecord]:
        where, params = ("WHERE environment = ?", [environment]) if environment else ("", [])
        sql = f"SELECT * FROM quarantine {where} ORDER BY environment, grp"  # noqa: S608
        return self._read(rows.quarantine, sql, params)

    def quarantine(self, environment: str, group: str) -> QuarantineRecord | None:
        sql = "SELECT * FROM quarantine WHERE environment = ? AND grp = ?"
        return next(iter(self._read(rows.quarantine, sql, (environment, group))), None)

    def set_quarantine(self, record: QuarantineRecord) -> None:
        row = rows.quarantine_row(record)
        self._write("quarantine", [row], ("environment", "grp"), list(row)[2:])

    def clear_quarantine(self, environment: str, group: str) -> None:
        sql = "DELETE FROM quarantine WHERE environment = ? AND grp = ?"
        self._execute(sql, (environment, group))

    # -- observed state
    def record_observed(self, records: Sequence[ObservedVersion]) -> None:
        key = ("environment", "host", "app")
        update = ("version", "status", "detail", "observed_at")
        self._write("observed", [rows.observed_row(r) for r in records], key, update)

    def observed(self, environment: str) -> dict[tuple[str, str], ObservedVersion]:
        sql = "SELECT * FROM observed WHERE environment = ?"
        return {(o.host, o.app): o for o in self._read(rows.observed, sql, (environment,))}

    def drift_marks(self, environment: str) -> dict[tuple[str, str], DriftMark]:
        sql = "SELECT * FROM drift WHERE environment = ?"
        return {(m.host, m.app): m for m in self._read(rows.drift, sql, (environment,))}

    def set_drift_marks(self, environment: str, marks: Sequence[DriftMark]) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM drift WHERE environment = ?", (environment,))
            if marks:
                values = [rows.drift_row(m) for m in marks]
                sql = rows.insert_sql("drift", list(values[0]))
                db.executemany(sql, [tuple(v.values()) for v in values])

    def forget_hosts(self, environment: str, hosts: Sequence[str]) -> None:
        with self._transaction() as db:
            for table in ("deployed", "observed", "drift"):
                db.executemany(
                    f"DELETE FROM {table} WHERE environment = ? AND host = ?",  # noqa: S608
                    [(environment, host) for host in hosts],
                )

    # -- the event log
    def append_event(self, event: Event) -> Event:
        row = rows.event_row(event)
        with self._transaction() as db:
            cursor = db.execute(rows.insert_sql("events", list(row)), tuple(row.values()))
            return dataclasses.replace(event, id=int(cursor.lastrowid or 0))

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
        sql, params = rows.events_sql(
            environment=environment, group=group, kinds=kinds, severities=severities,
            after=after, before=before, limit=limit, oldest_first=oldest_first,
        )  # fmt: skip
        return self._read(rows.event, sql, params)

    def newest_event_id(self) -> int:
        return int(self._read(lambda r: r[0] or 0, "SELECT MAX(id) FROM events")[0])

    def prune_events(self, *, keep: int | None = None, older_than: float | None = None) -> int:
        with self._transaction() as db:
            gone = db.execute(rows.prune_count_sql(), (keep,)).rowcount if keep is not None else 0
            if older_than is not None:
                gone += db.execute(rows.prune_age_sql(), (older_than,)).rowcount
            return int(gone)

    # -- meta
    def get_meta(self, key: str) -> str | None:
        found = self._read(lambda r: str(r[0]), "SELECT value FROM meta WHERE key = ?", (key,))
        return next(iter(found), None)

    def set_meta(self, key: str, value: str) -> None:
        self._write("meta", [{"key": key, "value": value}], ("key",), ("value",))


if TYPE_CHECKING:  # mypy proves the backend implements the interfaces

    def _conforms(
        store: SqliteStateStore, schema: _Schema
    ) -> tuple[StateStore, migrations.Database]:
        return store, schema
