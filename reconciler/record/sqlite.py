"""The state store: what reconciler deployed, its reconcile runs and the rollout journal.

Contract: ``StateStore`` is the interface the rest of the code uses; ``SqliteStateStore`` is the
only importer of ``sqlite3`` (WAL mode, one transaction per call, versioned schema). Every
timestamp is passed in by the caller (seconds since the epoch), so the store has no clock.

* deployed: per environment/host/app the version last deployed successfully, with its group,
  commit, rollout and time. Only hosts that really succeeded are written here.
* runs: one row per reconcile run of an environment (history).
* rollouts and rollout_steps: the journal. A step is written before its playbook runs
  (``running``) and again when it ends, so an interrupted rollout is visible after a crash.
* environments: per environment suspended flag, attempted/applied commit, last error.
* meta: small key/value facts (last valid commit, source errors).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS deployed (
    environment TEXT NOT NULL,
    host TEXT NOT NULL,
    app TEXT NOT NULL,
    version TEXT NOT NULL,
    grp TEXT NOT NULL,
    commit_sha TEXT,
    rollout_id TEXT,
    deployed_at REAL NOT NULL,
    PRIMARY KEY (environment, host, app)
);
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    environment TEXT NOT NULL,
    commit_sha TEXT,
    started_at REAL NOT NULL,
    finished_at REAL,
    result TEXT NOT NULL,
    summary TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS runs_by_env ON runs (environment, started_at);
CREATE TABLE IF NOT EXISTS rollouts (
    id TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    environment TEXT NOT NULL,
    grp TEXT NOT NULL,
    commit_sha TEXT,
    apps TEXT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    started_at REAL NOT NULL,
    finished_at REAL
);
CREATE INDEX IF NOT EXISTS rollouts_by_env ON rollouts (environment, grp, started_at);
CREATE TABLE IF NOT EXISTS rollout_steps (
    rollout_id TEXT NOT NULL REFERENCES rollouts (id),
    phase TEXT NOT NULL,
    step_index INTEGER NOT NULL,
    percent INTEGER NOT NULL,
    hosts TEXT NOT NULL,
    state TEXT NOT NULL,
    host_results TEXT NOT NULL DEFAULT '{}',
    gate_results TEXT NOT NULL DEFAULT '[]',
    run_dir TEXT NOT NULL DEFAULT '',
    started_at REAL NOT NULL,
    finished_at REAL,
    PRIMARY KEY (rollout_id, phase, step_index)
);
CREATE TABLE IF NOT EXISTS environments (
    environment TEXT PRIMARY KEY,
    suspended INTEGER NOT NULL DEFAULT 0,
    last_attempted_commit TEXT,
    last_applied_commit TEXT,
    last_result TEXT NOT NULL DEFAULT '',
    last_error TEXT NOT NULL DEFAULT '',
    updated_at REAL
);
CREATE TABLE IF NOT EXISTS quarantine (
    environment TEXT NOT NULL,
    grp TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    commit_sha TEXT,
    rollout_id TEXT,
    reason TEXT NOT NULL DEFAULT '',
    revert TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    PRIMARY KEY (environment, grp)
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


class StoreError(Exception):
    """The state store cannot be used (unknown schema, corrupt file)."""


@dataclass(frozen=True)
class DeployedVersion:
    environment: str
    host: str
    app: str
    version: str
    group: str
    commit: str | None
    rollout_id: str | None
    deployed_at: float


@dataclass(frozen=True)
class RunRecord:
    id: str
    environment: str
    commit: str | None
    started_at: float
    finished_at: float | None
    result: str
    summary: Mapping[str, Any]


@dataclass(frozen=True)
class RolloutRecord:
    id: str
    run_id: str
    environment: str
    group: str
    commit: str | None
    apps: Mapping[str, str]
    state: str
    reason: str
    started_at: float
    finished_at: float | None


@dataclass(frozen=True)
class StepRecord:
    rollout_id: str
    phase: str
    index: int
    percent: int
    hosts: tuple[str, ...]
    state: str
    host_results: Mapping[str, Any]
    gate_results: Sequence[Any]
    run_dir: str
    started_at: float
    finished_at: float | None


@dataclass(frozen=True)
class QuarantineRecord:
    """Desired versions of a group whose rollout failed: never retried automatically."""

    environment: str
    group: str
    fingerprint: str
    commit: str | None
    rollout_id: str | None
    reason: str
    revert: str
    created_at: float


@dataclass(frozen=True)
class EnvironmentStatus:
    environment: str
    suspended: bool
    last_attempted_commit: str | None
    last_applied_commit: str | None
    last_result: str
    last_error: str
    updated_at: float | None


class StateStore(Protocol):
    def deployed(self, environment: str) -> list[DeployedVersion]: ...
    def recorded_versions(self, environment: str) -> dict[tuple[str, str], str]: ...
    def record_deployed(self, records: Sequence[DeployedVersion]) -> None: ...
    def forget_deployed(self, environment: str, pairs: Sequence[tuple[str, str]]) -> None: ...
    def start_run(self, run: RunRecord) -> None: ...
    def finish_run(
        self, run_id: str, result: str, finished_at: float, summary: Mapping[str, Any]
    ) -> None: ...
    def runs(self, environment: str | None = None, limit: int = 20) -> list[RunRecord]: ...
    def start_rollout(self, rollout: RolloutRecord) -> None: ...
    def finish_rollout(
        self, rollout_id: str, state: str, reason: str, finished_at: float
    ) -> None: ...
    def rollouts(self, environment: str | None = None, limit: int = 20) -> list[RolloutRecord]: ...
    def unfinished_rollouts(self) -> list[RolloutRecord]: ...
    def rollout(self, rollout_id: str) -> RolloutRecord | None: ...
    def journal_step(self, step: StepRecord) -> None: ...
    def steps(self, rollout_id: str) -> list[StepRecord]: ...
    def environment_status(self, environment: str) -> EnvironmentStatus: ...
    def environment_statuses(self) -> list[EnvironmentStatus]: ...
    def update_environment(self, environment: str, updated_at: float, **fields: Any) -> None: ...
    def quarantine(self, environment: str, group: str) -> QuarantineRecord | None: ...
    def quarantines(self, environment: str | None = None) -> list[QuarantineRecord]: ...
    def set_quarantine(self, record: QuarantineRecord) -> None: ...
    def clear_quarantine(self, environment: str, group: str) -> None: ...
    def get_meta(self, key: str) -> str | None: ...
    def set_meta(self, key: str, value: str) -> None: ...


class SqliteStateStore:
    """``StateStore`` on one SQLite file; safe to share between threads."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.RLock()
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        self._db.row_factory = sqlite3.Row
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise StoreError(f"cannot open state store {path}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"state store schema {version} is newer than this reconciler ({SCHEMA_VERSION})"
            )
        if version < SCHEMA_VERSION:
            with self._transaction() as db:
                for statement in filter(str.strip, _SCHEMA.split(";")):
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    # -- deployed versions
    def deployed(self, environment: str) -> list[DeployedVersion]:
        rows = self._query(
            "SELECT * FROM deployed WHERE environment = ? ORDER BY host, app", (environment,)
        )
        return [
            DeployedVersion(
                r["environment"],
                r["host"],
                r["app"],
                r["version"],
                r["grp"],
                r["commit_sha"],
                r["rollout_id"],
                r["deployed_at"],
            )
            for r in rows
        ]

    def recorded_versions(self, environment: str) -> dict[tuple[str, str], str]:
        """``(host, app) -> version``: what planning needs, without building records."""
        rows = self._query(
            "SELECT host, app, version FROM deployed WHERE environment = ?", (environment,)
        )
        return {(r[0], r[1]): r[2] for r in rows}

    def record_deployed(self, records: Sequence[DeployedVersion]) -> None:
        with self._transaction() as db:
            db.executemany(
                "INSERT INTO deployed VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (environment, host, app) DO UPDATE SET version = excluded.version,"
                " grp = excluded.grp, commit_sha = excluded.commit_sha,"
                " rollout_id = excluded.rollout_id, deployed_at = excluded.deployed_at",
                [
                    (
                        r.environment,
                        r.host,
                        r.app,
                        r.version,
                        r.group,
                        r.commit,
                        r.rollout_id,
                        r.deployed_at,
                    )
                    for r in records
                ],
            )

    def forget_deployed(self, environment: str, pairs: Sequence[tuple[str, str]]) -> None:
        """Drop the records of (host, app) pairs whose real version is unknown."""
        with self._transaction() as db:
            db.executemany(
                "DELETE FROM deployed WHERE environment = ? AND host = ? AND app = ?",
                [(environment, host, app) for host, app in pairs],
            )

    # -- runs
    def start_run(self, run: RunRecord) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    run.id,
                    run.environment,
                    run.commit,
                    run.started_at,
                    run.finished_at,
                    run.result,
                    json.dumps(dict(run.summary)),
                ),
            )

    def finish_run(
        self, run_id: str, result: str, finished_at: float, summary: Mapping[str, Any]
    ) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE runs SET result = ?, finished_at = ?, summary = ? WHERE id = ?",
                (result, finished_at, json.dumps(dict(summary)), run_id),
            )

    def runs(self, environment: str | None = None, limit: int = 20) -> list[RunRecord]:
        sql = "SELECT * FROM runs"
        params: list[Any] = []
        if environment:
            sql += " WHERE environment = ?"
            params.append(environment)
        rows = self._query(sql + " ORDER BY started_at DESC, rowid DESC LIMIT ?", [*params, limit])
        return [
            RunRecord(
                r["id"],
                r["environment"],
                r["commit_sha"],
                r["started_at"],
                r["finished_at"],
                r["result"],
                json.loads(r["summary"]),
            )
            for r in rows
        ]

    # -- rollouts and their journal
    def start_rollout(self, rollout: RolloutRecord) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT INTO rollouts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    rollout.id,
                    rollout.run_id,
                    rollout.environment,
                    rollout.group,
                    rollout.commit,
                    json.dumps(dict(rollout.apps)),
                    rollout.state,
                    rollout.reason,
                    rollout.started_at,
                    rollout.finished_at,
                ),
            )

    def finish_rollout(self, rollout_id: str, state: str, reason: str, finished_at: float) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE rollouts SET state = ?, reason = ?, finished_at = ? WHERE id = ?",
                (state, reason, finished_at, rollout_id),
            )

    @staticmethod
    def _rollout(r: sqlite3.Row) -> RolloutRecord:
        return RolloutRecord(
            r["id"],
            r["run_id"],
            r["environment"],
            r["grp"],
            r["commit_sha"],
            json.loads(r["apps"]),
            r["state"],
            r["reason"],
            r["started_at"],
            r["finished_at"],
        )

    def rollouts(self, environment: str | None = None, limit: int = 20) -> list[RolloutRecord]:
        sql = "SELECT * FROM rollouts"
        params: list[Any] = []
        if environment:
            sql += " WHERE environment = ?"
            params.append(environment)
        rows = self._query(sql + " ORDER BY started_at DESC, rowid DESC LIMIT ?", [*params, limit])
        return [self._rollout(r) for r in rows]

    def rollout(self, rollout_id: str) -> RolloutRecord | None:
        rows = self._query("SELECT * FROM rollouts WHERE id = ?", (rollout_id,))
        return self._rollout(rows[0]) if rows else None

    def unfinished_rollouts(self) -> list[RolloutRecord]:
        rows = self._query("SELECT * FROM rollouts WHERE finished_at IS NULL ORDER BY started_at")
        return [self._rollout(r) for r in rows]

    def journal_step(self, step: StepRecord) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT INTO rollout_steps VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (rollout_id, phase, step_index) DO UPDATE SET"
                " hosts = excluded.hosts, state = excluded.state,"
                " host_results = excluded.host_results, gate_results = excluded.gate_results,"
                " run_dir = excluded.run_dir, finished_at = excluded.finished_at",
                (
                    step.rollout_id,
                    step.phase,
                    step.index,
                    step.percent,
                    json.dumps(step.hosts),
                    step.state,
                    json.dumps(dict(step.host_results)),
                    json.dumps(list(step.gate_results)),
                    step.run_dir,
                    step.started_at,
                    step.finished_at,
                ),
            )

    def steps(self, rollout_id: str) -> list[StepRecord]:
        rows = self._query(
            "SELECT * FROM rollout_steps WHERE rollout_id = ? ORDER BY started_at, rowid",
            (rollout_id,),
        )
        return [
            StepRecord(
                r["rollout_id"],
                r["phase"],
                r["step_index"],
                r["percent"],
                tuple(json.loads(r["hosts"])),
                r["state"],
                json.loads(r["host_results"]),
                json.loads(r["gate_results"]),
                r["run_dir"],
                r["started_at"],
                r["finished_at"],
            )
            for r in rows
        ]

    # -- environments
    @staticmethod
    def _status(r: sqlite3.Row) -> EnvironmentStatus:
        return EnvironmentStatus(
            r["environment"],
            bool(r["suspended"]),
            r["last_attempted_commit"],
            r["last_applied_commit"],
            r["last_result"],
            r["last_error"],
            r["updated_at"],
        )

    def environment_status(self, environment: str) -> EnvironmentStatus:
        rows = self._query("SELECT * FROM environments WHERE environment = ?", (environment,))
        if not rows:
            return EnvironmentStatus(environment, False, None, None, "", "", None)
        return self._status(rows[0])

    def environment_statuses(self) -> list[EnvironmentStatus]:
        return [
            self._status(r) for r in self._query("SELECT * FROM environments ORDER BY environment")
        ]

    _ENVIRONMENT_FIELDS = frozenset(
        {"suspended", "last_attempted_commit", "last_applied_commit", "last_result", "last_error"}
    )

    def update_environment(self, environment: str, updated_at: float, **fields: Any) -> None:
        unknown = set(fields) - self._ENVIRONMENT_FIELDS
        if unknown:
            raise ValueError(f"unknown environment fields: {sorted(unknown)}")
        with self._transaction() as db:
            db.execute(
                "INSERT INTO environments (environment, updated_at) VALUES (?, ?) "
                "ON CONFLICT (environment) DO UPDATE SET updated_at = excluded.updated_at",
                (environment, updated_at),
            )
            for name, value in fields.items():  # names checked against a fixed set above
                db.execute(
                    f"UPDATE environments SET {name} = ? WHERE environment = ?",  # noqa: S608
                    (int(value) if isinstance(value, bool) else value, environment),
                )

    # -- quarantine
    def quarantines(self, environment: str | None = None) -> list[QuarantineRecord]:
        sql, params = "SELECT * FROM quarantine", []
        if environment:
            sql, params = sql + " WHERE environment = ?", [environment]
        return [
            QuarantineRecord(
                r["environment"],
                r["grp"],
                r["fingerprint"],
                r["commit_sha"],
                r["rollout_id"],
                r["reason"],
                r["revert"],
                r["created_at"],
            )
            for r in self._query(sql + " ORDER BY environment, grp", params)
        ]

    def quarantine(self, environment: str, group: str) -> QuarantineRecord | None:
        return next((q for q in self.quarantines(environment) if q.group == group), None)

    def set_quarantine(self, record: QuarantineRecord) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO quarantine VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.environment,
                    record.group,
                    record.fingerprint,
                    record.commit,
                    record.rollout_id,
                    record.reason,
                    record.revert,
                    record.created_at,
                ),
            )

    def clear_quarantine(self, environment: str, group: str) -> None:
        with self._transaction() as db:
            db.execute(
                "DELETE FROM quarantine WHERE environment = ? AND grp = ?", (environment, group)
            )

    # -- meta
    def get_meta(self, key: str) -> str | None:
        rows = self._query("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0]["value"] if rows else None

    def set_meta(self, key: str, value: str) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT INTO meta VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )
