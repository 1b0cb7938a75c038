"""The SQLite state store: schema, transactions, journal, reopen."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from reconciler.record.sqlite import (
    DeployedVersion,
    RolloutRecord,
    RunRecord,
    SqliteStateStore,
    StepRecord,
    StoreError,
)


@pytest.fixture
def store(tmp_path):
    store = SqliteStateStore(tmp_path / "state" / "state.db")
    yield store
    store.close()


def test_wal_mode_and_schema_version(store):
    db = sqlite3.connect(store.path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA user_version").fetchone()[0] == 1


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "state.db"
    SqliteStateStore(path).close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(StoreError, match="schema 99 is newer"):
        SqliteStateStore(path)


def test_corrupt_file_is_a_clear_error(tmp_path):
    path = tmp_path / "state.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="cannot open state store"):
        SqliteStateStore(path)


def test_deployed_versions_upsert_and_survive_reopen(tmp_path):
    path = tmp_path / "state.db"
    store = SqliteStateStore(path)
    store.record_deployed([DeployedVersion("prod", "h1", "shop", "1.0", "web", "c1", "r1", 10.0)])
    store.record_deployed(
        [
            DeployedVersion("prod", "h1", "shop", "2.0", "web", "c2", "r2", 20.0),
            DeployedVersion("stage", "h1", "shop", "9.9", "web", "c3", "r3", 30),
        ]
    )
    store.close()
    reopened = SqliteStateStore(path)
    [row] = reopened.deployed("prod")
    assert (row.version, row.commit, row.rollout_id, row.deployed_at) == ("2.0", "c2", "r2", 20.0)
    assert [r.version for r in reopened.deployed("stage")] == ["9.9"]


def test_failed_transaction_leaves_nothing(store):
    bad = [
        DeployedVersion("prod", "h1", "shop", "1.0", "web", None, None, 1.0),
        DeployedVersion("prod", "h2", "shop", None, "web", None, None, 1.0),
    ]  # NOT NULL
    with pytest.raises(sqlite3.IntegrityError):
        store.record_deployed(bad)
    assert store.deployed("prod") == []


def test_journal_records_intent_before_and_result_after(store):
    store.start_run(RunRecord("run1", "prod", "c1", 1.0, None, "running", {}))
    store.start_rollout(
        RolloutRecord("ro1", "run1", "prod", "web", "c1", {"shop": "2"}, "running", "", 1.0, None)
    )
    store.journal_step(
        StepRecord("ro1", "deploy", 1, 10, ("h1",), "running", {}, [], "", 2.0, None)
    )
    assert [r.id for r in store.unfinished_rollouts()] == ["ro1"]
    [step] = store.steps("ro1")
    assert (step.state, step.hosts, step.finished_at) == ("running", ("h1",), None)
    store.journal_step(
        StepRecord(
            "ro1",
            "deploy",
            1,
            10,
            ("h1",),
            "succeeded",
            {"h1": {"status": "ok"}},
            [{"gate": "http"}],
            "/runs/x",
            2.0,
            3.0,
        )
    )
    store.finish_rollout("ro1", "succeeded", "", 4.0)
    store.finish_run("run1", "applied", 4.0, {"web": {"state": "succeeded"}})
    [step] = store.steps("ro1")
    assert (step.state, step.host_results, step.gate_results, step.finished_at) == (
        "succeeded",
        {"h1": {"status": "ok"}},
        [{"gate": "http"}],
        3.0,
    )
    assert store.unfinished_rollouts() == []
    [run] = store.runs("prod")
    assert (run.result, run.summary) == ("applied", {"web": {"state": "succeeded"}})
    [rollout] = store.rollouts()
    assert (rollout.state, rollout.apps, rollout.finished_at) == ("succeeded", {"shop": "2"}, 4.0)


def test_environment_status_fields(store):
    assert store.environment_status("prod").suspended is False
    store.update_environment("prod", 5.0, suspended=True, last_result="suspended")
    status = store.environment_status("prod")
    assert (status.suspended, status.last_result, status.updated_at) == (True, "suspended", 5.0)
    with pytest.raises(ValueError, match="unknown environment fields"):
        store.update_environment("prod", 6.0, **{"suspended = 0; --": 1})


def test_concurrent_writers_from_threads(store):
    def write(n: int) -> None:
        for i in range(50):
            store.record_deployed(
                [DeployedVersion("prod", f"h{n}-{i}", "a", "1", "g", None, None, float(i))]
            )

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store.deployed("prod")) == 200


def test_meta_roundtrip(store):
    assert store.get_meta("x") is None
    store.set_meta("x", "1")
    store.set_meta("x", "2")
    assert store.get_meta("x") == "2"
