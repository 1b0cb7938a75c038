"""What only the SQLite backend promises: files, modes, pragmas, the first release's databases."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import pytest

from reconciler import record
from reconciler.record import migrations
from reconciler.record.sqlite import SqliteStateStore
from reconciler.states import EnvironmentResult, Phase, RolloutState, StepState

from . import legacy_v1
from .test_migrations import add_migrations


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def user_version(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return db.execute("PRAGMA user_version").fetchone()[0]
    finally:
        db.close()


def schema(path: Path) -> list[tuple[str, str, str]]:
    """The definitions in sqlite_master, whitespace-normalised, without the bookkeeping."""
    db = sqlite3.connect(path)
    try:
        rows = db.execute("SELECT type, name, sql FROM sqlite_master ORDER BY type, name")
        return [
            (kind, name, " ".join((sql or "").split()))
            for kind, name, sql in rows
            if name != "schema_migrations"
        ]
    finally:
        db.close()


def legacy_database(path: Path) -> Path:
    db = legacy_v1.connect(path)
    legacy_v1.populate(db)
    db.close()
    return path


@pytest.fixture
def umask():
    previous = os.umask(0o022)
    os.umask(previous)

    def set_umask(value: int) -> None:
        os.umask(value)

    yield set_umask
    os.umask(previous)


def test_wal_mode(tmp_path):
    with SqliteStateStore.open(tmp_path / "state.db") as store:
        db = sqlite3.connect(store.path)
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        db.close()


@pytest.mark.parametrize("value", [0o000, 0o022, 0o277])
def test_new_files_are_private_whatever_the_umask(tmp_path, umask, value):
    (tmp_path / "var").mkdir(mode=0o755)
    (tmp_path / "var").chmod(0o755)
    umask(value)
    path = tmp_path / "var" / "lib" / "reconciler" / "state.db"
    with SqliteStateStore.open(path) as store:
        store.set_meta("k", "v")
        sidecars = [path.with_name(path.name + s) for s in ("-wal", "-shm")]
        assert [mode(p) for p in sidecars] == [0o600, 0o600]
    umask(0o022)
    assert [mode(p) for p in (path.parent.parent, path.parent, path)] == [0o700, 0o700, 0o600]
    assert mode(tmp_path / "var") == 0o755  # an existing directory is left alone


def test_the_modes_of_existing_files_are_left_alone(tmp_path):
    path = tmp_path / "state.db"
    path.touch()
    path.chmod(0o640)
    SqliteStateStore.open(path).close()
    assert mode(path) == 0o640


@pytest.mark.parametrize("read_only", [False, True])
def test_a_corrupt_file_is_a_clear_error(tmp_path, read_only):
    path = tmp_path / "state.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(record.StoreError, match="cannot open state store"):
        SqliteStateStore.open(path, read_only=read_only)


def test_a_first_release_database_is_adopted_as_migration_1_without_data_loss(tmp_path):
    path = legacy_database(tmp_path / "state.db")
    rows_before = legacy_v1.dump(path)
    assert user_version(path) == 1
    with SqliteStateStore.open(path) as store:
        [run_done, run_open] = sorted(store.runs("prod"), key=lambda r: r.id)
        assert run_done.result is EnvironmentResult.ROLLED_BACK
        assert run_open.finished_at is None
        assert store.unfinished_runs() == [run_open]
        rollout = store.rollout("ro1")
        assert (rollout.state, rollout.apps) == (RolloutState.ROLLED_BACK, {"shop": "2.5.0"})
        steps = store.steps("ro1")
        assert [(s.phase, s.state) for s in steps] == [
            (Phase.DEPLOY, StepState.FAILED),
            (Phase.ROLLBACK, StepState.SUCCEEDED),
        ]
        assert steps[0].gate_results == [{"gate": "http", "passed": False}]
        assert store.recorded_versions("prod") == {("web1", "shop"): "2.4.1"}
        prod, staging = store.environment_statuses()
        assert (prod.last_result, prod.last_error) == (
            EnvironmentResult.ROLLED_BACK,
            "web: gate http failed",
        )
        assert (staging.suspended, staging.last_result) == (True, None)  # '' read as never
        assert store.quarantine("prod", "web").revert == "pushed abc"
        assert store.get_meta("last_valid_commit") == "c2"
    assert legacy_v1.dump(path) == rows_before
    db = sqlite3.connect(path)
    applied = db.execute("SELECT version, name FROM schema_migrations ORDER BY version")
    shipped = [(m.version, m.name) for m in migrations.available("sqlite")]
    assert applied.fetchall() == shipped and shipped[0] == (1, "initial")
    db.close()
    assert user_version(path) == shipped[-1][0]
    SqliteStateStore.open(tmp_path / "fresh.db").close()
    assert schema(path) == schema(tmp_path / "fresh.db")  # 0001 is exactly the v1 schema


def test_a_first_release_database_is_not_adopted_by_a_read(tmp_path):
    path = legacy_database(tmp_path / "state.db")
    before = path.read_bytes()
    with pytest.raises(record.StoreError, match="start the daemon"):
        SqliteStateStore.open(path, read_only=True)
    assert path.read_bytes() == before
    db = sqlite3.connect(path)
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    db.close()
    assert "schema_migrations" not in tables


def test_a_legacy_version_beyond_the_code_is_refused(tmp_path):
    path = legacy_database(tmp_path / "state.db")
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 7")
    db.close()
    for read_only in (False, True):
        with pytest.raises(record.StoreError, match="schema 7 is newer"):
            SqliteStateStore.open(path, read_only=read_only)


def test_the_first_release_refuses_what_a_newer_schema_wrote(tmp_path):
    path = tmp_path / "state.db"
    with SqliteStateStore.open(path) as store:
        store.set_meta("last_valid_commit", "c9")
    newest = migrations.available("sqlite")[-1].version
    assert newest > 1
    with pytest.raises(legacy_v1.StoreError, match=f"schema {newest} is newer"):
        legacy_v1.connect(path)  # a downgrade never writes into a schema it does not know


def test_user_version_follows_migrations_so_the_first_release_refuses_newer(tmp_path, monkeypatch):
    path = tmp_path / "state.db"
    SqliteStateStore.open(path).close()
    newest = add_migrations(monkeypatch, ("test_extra", "CREATE TABLE test_extra (x INTEGER);"))
    SqliteStateStore.open(path).close()
    assert user_version(path) == newest == migrations.available("sqlite")[-1].version
    with pytest.raises(legacy_v1.StoreError, match="newer"):
        legacy_v1.connect(path)


def test_migration_scripts_keep_semicolons_in_strings_comments_and_triggers(tmp_path, monkeypatch):
    script = """
    -- a comment; with a semicolon
    CREATE TABLE test_log (line TEXT NOT NULL DEFAULT 'a;b');
    CREATE TRIGGER test_log_meta AFTER INSERT ON meta BEGIN
        INSERT INTO test_log (line) VALUES (NEW.key || ';' || NEW.value);
    END;
    /* trailing block; comment */
    """
    add_migrations(monkeypatch, ("test_trigger", script))
    with SqliteStateStore.open(tmp_path / "state.db") as store:
        store.set_meta("k", "v")
    db = sqlite3.connect(tmp_path / "state.db")
    assert db.execute("SELECT line FROM test_log").fetchall() == [("k;v",)]
    db.close()


def test_read_only_creates_no_directory_and_no_file(tmp_path):
    path = tmp_path / "not" / "yet" / "state.db"
    with SqliteStateStore.open(path, read_only=True) as store:
        assert store.runs() == []
    assert not (tmp_path / "not").exists()


def test_read_only_reads_an_empty_file_as_an_empty_store(tmp_path):
    path = tmp_path / "state.db"
    path.touch()  # a writer created it and stopped before its first migration
    with SqliteStateStore.open(path, read_only=True) as store:
        assert store.environment_statuses() == []
    assert path.read_bytes() == b""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.db"]


def test_read_only_opens_paths_that_need_quoting_in_a_uri(tmp_path):
    path = tmp_path / "we?ird #dir %41" / "state.db"
    with SqliteStateStore.open(path) as store:
        store.set_meta("k", "v")
    with SqliteStateStore.open(path, read_only=True) as store:
        assert store.get_meta("k") == "v"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["we?ird #dir %41"]
