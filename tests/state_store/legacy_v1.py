"""The first release's state store schema and open procedure, verbatim (``reconciler`` 0.1.0).

Test support: builds databases exactly as the landed release did (``PRAGMA user_version = 1``,
no ``schema_migrations``) and reads them the way it did, so the tests can prove that this code
adopts them without data loss and that the old code still reads what this code writes.
Copied from ``reconciler/state_store.py`` at commit 4cbe833; never edit it.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

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
    """The first release's own error type."""


def connect(path: Path) -> sqlite3.Connection:
    """``SqliteStateStore.__init__`` and ``_migrate`` of the first release."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA foreign_keys=ON")
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        db.close()
        raise StoreError(
            f"state store schema {version} is newer than this reconciler ({SCHEMA_VERSION})"
        )
    if version < SCHEMA_VERSION:
        db.execute("BEGIN IMMEDIATE")
        for statement in filter(str.strip, _SCHEMA.split(";")):
            db.execute(statement)
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.execute("COMMIT")
    return db


def populate(db: sqlite3.Connection) -> None:
    """Rows of every table, written with the first release's statements."""
    db.execute("BEGIN IMMEDIATE")
    db.execute(
        "INSERT INTO deployed VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        ("prod", "web1", "shop", "2.4.1", "web", "c1", "ro1", 10.0),
    )
    db.execute(
        "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?)",
        ("run1", "prod", "c1", 1.0, 12.0, "rolled_back", json.dumps({"web": {"state": "x"}})),
    )
    db.execute(
        "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?)",
        ("run2", "prod", "c2", 20.0, None, "running", "{}"),
    )
    db.execute(
        "INSERT INTO rollouts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        ("ro1", "run1", "prod", "web", "c1", json.dumps({"shop": "2.5.0"}), "rolled_back",
         "gate http failed", 2.0, 11.0),
    )  # fmt: skip
    db.execute(
        "INSERT INTO rollout_steps VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        ("ro1", "deploy", 1, 10, json.dumps(["web1"]), "failed",
         json.dumps({"web1": {"status": "ok"}}), json.dumps([{"gate": "http", "passed": False}]),
         "/runs/1", 3.0, 4.0),
    )  # fmt: skip
    db.execute(
        "INSERT INTO rollout_steps VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        ("ro1", "rollback", 1, 10, json.dumps(["web1"]), "succeeded", "{}", "[]", "", 5.0, 6.0),
    )
    db.execute("INSERT INTO environments (environment, updated_at) VALUES (?, ?)", ("prod", 12.0))
    db.execute(
        "UPDATE environments SET last_result = ?, last_error = ?, last_attempted_commit = ?"
        " WHERE environment = ?",
        ("rolled_back", "web: gate http failed", "c1", "prod"),
    )
    db.execute(
        "INSERT INTO environments (environment, updated_at) VALUES (?, ?)", ("staging", 13.0)
    )
    db.execute("UPDATE environments SET suspended = 1 WHERE environment = 'staging'")
    db.execute(
        "INSERT OR REPLACE INTO quarantine VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        ("prod", "web", '{"shop":"2.5.0"}', "c1", "ro1", "gate http failed", "pushed abc", 11.0),
    )
    db.execute("INSERT INTO meta VALUES (?, ?)", ("last_valid_commit", "c2"))
    db.execute("COMMIT")


V1_COLUMNS = {
    "rollouts": [
        "id", "run_id", "environment", "grp", "commit_sha", "apps", "state", "reason",
        "started_at", "finished_at",
    ],
    "rollout_steps": [
        "rollout_id", "phase", "step_index", "percent", "hosts", "state", "host_results",
        "gate_results", "run_dir", "started_at", "finished_at",
    ],
}  # fmt: skip


def dump(path: Path) -> dict[str, list[tuple[object, ...]]]:
    """Every row of every v1 table (its v1 columns: later migrations add some), in a stable
    order (to compare before and after)."""
    db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return {
            table: sorted(
                db.execute(f"SELECT {', '.join(V1_COLUMNS.get(table, ['*']))} FROM {table}"),
                key=repr,
            )
            for table in (
                "deployed", "runs", "rollouts", "rollout_steps", "environments", "quarantine",
                "meta",
            )
        }  # fmt: skip
    finally:
        db.close()
