"""``PostgresStateStore``: ``record.StateStore`` on a PostgreSQL database.

Contract (beyond ``record.protocols``; connections, errors and migrations: ``connection``):
* ``PostgresStateStore.open(url, read_only=..., password_file=..., pool_size=...,
  connect_timeout=...)``. Read-write, it brings the schema up to date through
  ``record.migrations`` (``sql/postgresql/``), serialized among replicas by an advisory lock;
  ``migrated`` tells what this open did. Then it serves calls from its connection pool.
* Read-only: never migrates or writes (every write raises ``StoreError``), refuses a schema
  older or newer than the code (with how to migrate), reads a database without a schema as
  empty (and never connects again).
* One call is one transaction: a single statement (autocommit) or ``BEGIN``...``COMMIT``;
  a write of nothing (an empty list) makes no round trip.
* ``fenced(token)``: the same store (same pool) whose every write carries a lease's fencing
  token; a write the database refuses for it raises ``record.Fenced`` (``leases``).
* Values as ``record.rows`` makes them (times double precision, JSON as compact text, states
  as text); ties of ``runs``/``rollouts``/``steps`` are ordered by ``seq`` (SQLite's rowid).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, Unpack

from psycopg import rows as pg_rows

from reconciler.record import migrations, rows
from reconciler.record.postgresql.connection import (
    DIALECT,
    Connection,
    Connections,
    Schema,
    sendable,
)
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

if TYPE_CHECKING:
    from reconciler.record.protocols import StateStore

__all__ = ["PostgresStateStore"]

_NEWEST_FIRST = "ORDER BY started_at DESC, seq DESC LIMIT %s"  # ties: last written first
#: Appends to the event log take this transaction-level advisory lock: ids are drawn and
#: committed in one order, so "after id N" never skips an event committed late.
_EVENT_APPEND_LOCK = 0x7265636F6E657674  # "reconevt"
_T = TypeVar("_T")


class PostgresStateStore:
    """``record.StateStore`` on a PostgreSQL database; safe to share between threads."""

    def __init__(
        self,
        url: str,
        *,
        read_only: bool = False,
        password_file: Path | None = None,
        pool_size: int = 8,
        connect_timeout: float = 10.0,
    ) -> None:
        self.read_only = read_only
        self.fence: int | None = None
        self.migrated: migrations.Outcome | None = None
        self.connections = Connections(
            url,
            read_only=read_only,
            password_file=password_file,
            pool_size=pool_size,
            connect_timeout=connect_timeout,
        )
        self.where = self.connections.where
        with self.connections.connect() as db, self.connections.translated():
            schema = Schema(db)
            if not read_only:
                self.migrated = migrations.migrate(schema, migrations.available(DIALECT))
            elif migrations.current_version(schema) == 0:
                return  # no schema yet: reads as empty, never connects again
            else:
                migrations.require_current(schema, migrations.available(DIALECT))
        self.connections.open_pool()

    @classmethod
    def open(
        cls,
        url: str,
        *,
        read_only: bool = False,
        password_file: Path | None = None,
        pool_size: int = 8,
        connect_timeout: float = 10.0,
    ) -> PostgresStateStore:
        return cls(
            url,
            read_only=read_only,
            password_file=password_file,
            pool_size=pool_size,
            connect_timeout=connect_timeout,
        )

    def fenced(self, token: int) -> PostgresStateStore:
        """This store with every write carrying ``token`` (a view: close the original)."""
        view = copy.copy(self)
        view.fence = int(token)
        return view

    def close(self) -> None:
        self.connections.close()

    def __enter__(self) -> PostgresStateStore:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        with self.connections.transaction(self.fence) as db:
            yield db

    def _read(
        self, convert: Callable[[Mapping[str, Any]], _T], sql: str, values: Sequence[Any] = ()
    ) -> list[_T]:
        if not self.connections.pooled:
            return []  # read-only, no schema yet: empty
        with (
            self.connections.connection() as db,
            db.cursor(row_factory=pg_rows.dict_row) as cursor,
        ):
            found = cursor.execute(sql.encode(), values).fetchall()
        try:
            return [convert(r) for r in found]
        except (ValueError, TypeError) as exc:  # an unknown state, broken JSON
            raise StoreError(f"state store {self.where}: unreadable row: {exc}") from exc

    def _write(
        self,
        table: str,
        values: Sequence[Mapping[str, Any]],
        key: Sequence[str] = (),
        update: Sequence[str] = (),
    ) -> None:
        """Insert (or upsert) rows given as ``column -> value``, all in one transaction."""
        if not values:
            self.connections.check_writable()
            return
        sql = rows.insert_sql(table, list(values[0]), key, update, mark="%s").encode()
        if len(values) == 1:  # one statement: its own transaction, without BEGIN/COMMIT
            with self.connections.writer(self.fence) as db:
                db.execute(sql, sendable(list(values[0].values())))
            return
        with self._transaction() as db, db.cursor() as cursor:
            cursor.executemany(sql, [sendable(list(r.values())) for r in values])

    def _execute(self, sql: str, values: Sequence[Any] = ()) -> int:
        """One write statement (its own transaction); returns how many rows it changed."""
        with self.connections.writer(self.fence) as db:
            return db.execute(sql.encode(), sendable(values)).rowcount

    def _execute_many(self, sql: str, values: Sequence[Sequence[Any]]) -> None:
        if not values:
            self.connections.check_writable()
            return
        with self._transaction() as db, db.cursor() as cursor:
            cursor.executemany(sql.encode(), [sendable(v) for v in values])

    # -- deployed versions
    def deployed(self, environment: str) -> list[DeployedVersion]:
        sql = "SELECT * FROM deployed WHERE environment = %s ORDER BY host, app"
        return self._read(rows.deployed, sql, (environment,))

    def recorded_versions(self, environment: str) -> dict[tuple[str, str], str]:
        sql = "SELECT host, app, version FROM deployed WHERE environment = %s"
        found = self._read(lambda r: ((r["host"], r["app"]), r["version"]), sql, (environment,))
        return dict(found)

    def record_deployed(self, records: Sequence[DeployedVersion]) -> None:
        update = ("version", "grp", "commit_sha", "rollout_id", "deployed_at")
        key = ("environment", "host", "app")
        self._write("deployed", [rows.deployed_row(r) for r in records], key, update)

    def forget_deployed(self, environment: str, pairs: Sequence[tuple[str, str]]) -> None:
        self._execute_many(
            "DELETE FROM deployed WHERE environment = %s AND host = %s AND app = %s",
            [(environment, host, app) for host, app in pairs],
        )

    # -- runs
    def start_run(self, run: RunRecord) -> None:
        self._write("runs", [rows.run_row(run)])

    def _finish_run(
        self, run_id: str, result: str, at: float, summary: Mapping[str, Any], only_running: bool
    ) -> bool:
        sql = "UPDATE runs SET result = %s, finished_at = %s, summary = %s WHERE id = %s"
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
        found = self._read(rows.run, "SELECT * FROM runs WHERE id = %s", (run_id,))
        return next(iter(found), None)

    def runs(self, environment: str | None = None, limit: int = 20) -> list[RunRecord]:
        where, params = ("WHERE environment = %s", [environment]) if environment else ("", [])
        sql = f"SELECT * FROM runs {where} {_NEWEST_FIRST}"  # noqa: S608
        return self._read(rows.run, sql, [*params, limit])

    def unfinished_runs(self) -> list[RunRecord]:
        sql = "SELECT * FROM runs WHERE finished_at IS NULL ORDER BY started_at, seq"
        return self._read(rows.run, sql)

    # -- rollouts and their journal
    def start_rollout(self, rollout: RolloutRecord) -> None:
        self._write("rollouts", [rows.rollout_row(rollout)])

    def finish_rollout(
        self, rollout_id: str, state: RolloutState, reason: str, finished_at: float
    ) -> None:
        sql = "UPDATE rollouts SET state = %s, reason = %s, finished_at = %s WHERE id = %s"
        self._execute(sql, (rows.finished_state(state), reason, finished_at, rollout_id))

    def finish_rollout_if_running(
        self, rollout_id: str, state: RolloutState, reason: str, finished_at: float
    ) -> bool:
        sql = (
            "UPDATE rollouts SET state = %s, reason = %s, finished_at = %s"
            " WHERE id = %s AND finished_at IS NULL"
        )
        values = sendable((rows.finished_state(state), reason, finished_at, rollout_id))
        with self._transaction() as db:
            closed = db.execute(sql.encode(), values).rowcount > 0
            if closed:
                db.execute(
                    b"UPDATE rollout_steps SET state = %s, finished_at = %s"
                    b" WHERE rollout_id = %s AND state = %s",
                    (StepState.INTERRUPTED.value, finished_at, rollout_id, StepState.RUNNING.value),
                )
            return closed

    def rollout(self, rollout_id: str) -> RolloutRecord | None:
        found = self._read(rows.rollout, "SELECT * FROM rollouts WHERE id = %s", (rollout_id,))
        return next(iter(found), None)

    def rollouts(self, environment: str | None = None, limit: int = 20) -> list[RolloutRecord]:
        where, params = ("WHERE environment = %s", [environment]) if environment else ("", [])
        sql = f"SELECT * FROM rollouts {where} {_NEWEST_FIRST}"  # noqa: S608
        return self._read(rows.rollout, sql, [*params, limit])

    def unfinished_rollouts(self) -> list[RolloutRecord]:
        sql = "SELECT * FROM rollouts WHERE finished_at IS NULL ORDER BY started_at, seq"
        return self._read(rows.rollout, sql)

    def journal_step(self, step: StepRecord) -> None:
        key = ("rollout_id", "phase", "step_index")
        self._write("rollout_steps", [rows.step_row(step)], key, rows.STEP_UPDATE)

    def steps(self, rollout_id: str) -> list[StepRecord]:
        sql = "SELECT * FROM rollout_steps WHERE rollout_id = %s ORDER BY started_at, seq"
        return self._read(rows.step, sql, (rollout_id,))

    # -- environments
    def environment_status(self, environment: str) -> EnvironmentStatus:
        sql = "SELECT * FROM environments WHERE environment = %s"
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
        where, params = ("WHERE environment = %s", [environment]) if environment else ("", [])
        sql = f"SELECT * FROM quarantine {where} ORDER BY environment, grp"  # noqa: S608
        return self._read(rows.quarantine, sql, params)

    def quarantine(self, environment: str, group: str) -> QuarantineRecord | None:
        sql = "SELECT * FROM quarantine WHERE environment = %s AND grp = %s"
        return next(iter(self._read(rows.quarantine, sql, (environment, group))), None)

    def set_quarantine(self, record: QuarantineRecord) -> None:
        row = rows.quarantine_row(record)
        self._write("quarantine", [row], ("environment", "grp"), list(row)[2:])

    def clear_quarantine(self, environment: str, group: str) -> None:
        sql = "DELETE FROM quarantine WHERE environment = %s AND grp = %s"
        self._execute(sql, (environment, group))

    # -- observed state
    def record_observed(self, records: Sequence[ObservedVersion]) -> None:
        key = ("environment", "host", "app")
        update = ("version", "status", "detail", "observed_at")
        self._write("observed", [rows.observed_row(r) for r in records], key, update)

    def observed(self, environment: str) -> dict[tuple[str, str], ObservedVersion]:
        sql = "SELECT * FROM observed WHERE environment = %s"
        return {(o.host, o.app): o for o in self._read(rows.observed, sql, (environment,))}

    def drift_marks(self, environment: str) -> dict[tuple[str, str], DriftMark]:
        sql = "SELECT * FROM drift WHERE environment = %s"
        return {(m.host, m.app): m for m in self._read(rows.drift, sql, (environment,))}

    def set_drift_marks(self, environment: str, marks: Sequence[DriftMark]) -> None:
        with self._transaction() as db, db.cursor() as cursor:
            cursor.execute(b"DELETE FROM drift WHERE environment = %s", (environment,))
            if marks:
                values = [rows.drift_row(m) for m in marks]
                sql = rows.insert_sql("drift", list(values[0]), mark="%s")
                cursor.executemany(sql.encode(), [sendable(list(v.values())) for v in values])

    def forget_hosts(self, environment: str, hosts: Sequence[str]) -> None:
        with self._transaction() as db:
            for table in ("deployed", "observed", "drift"):
                db.execute(
                    f"DELETE FROM {table} WHERE environment = %s AND host = ANY(%s)".encode(),  # noqa: S608
                    (environment, sendable(list(hosts))),
                )

    # -- the event log
    def append_event(self, event: Event) -> Event:
        row = rows.event_row(event)
        sql = rows.insert_sql("events", list(row), mark="%s") + " RETURNING id"
        with self._transaction() as db:
            db.execute(b"SELECT pg_advisory_xact_lock(%s)", (_EVENT_APPEND_LOCK,))
            found = db.execute(sql.encode(), sendable(list(row.values()))).fetchone()
        assert found is not None  # RETURNING gives the row's id
        return dataclasses.replace(event, id=int(found[0]))

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
            after=after, before=before, limit=limit, oldest_first=oldest_first, mark="%s",
        )  # fmt: skip
        return self._read(rows.event, sql, params)

    def newest_event_id(self) -> int:
        found = self._read(lambda r: r["newest"] or 0, "SELECT MAX(id) AS newest FROM events")
        return int(found[0]) if found else 0

    def prune_events(self, *, keep: int | None = None, older_than: float | None = None) -> int:
        with self._transaction() as db:
            gone = 0
            if keep is not None:
                gone += db.execute(rows.prune_count_sql("%s").encode(), (keep,)).rowcount
            if older_than is not None:
                gone += db.execute(rows.prune_age_sql("%s").encode(), (older_than,)).rowcount
            return gone

    # -- meta
    def get_meta(self, key: str) -> str | None:
        sql = "SELECT value FROM meta WHERE key = %s"
        return next(iter(self._read(lambda r: str(r["value"]), sql, (key,))), None)

    def set_meta(self, key: str, value: str) -> None:
        self._write("meta", [{"key": key, "value": value}], ("key",), ("value",))


if TYPE_CHECKING:  # mypy proves the backend implements the interfaces

    def _conforms(
        store: PostgresStateStore, schema: Schema
    ) -> tuple[StateStore, migrations.Database]:
        return store, schema
