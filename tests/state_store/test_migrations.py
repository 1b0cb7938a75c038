"""Versioned migrations: the runner on every backend, and the shipped migration files."""

from __future__ import annotations

import threading
from importlib import resources

import pytest

from reconciler import record
from reconciler.record import migrations
from reconciler.states import EventKind, Severity

SHIPPED = migrations.available


def add_migrations(monkeypatch, *sql: tuple[str, str]) -> int:
    """Make the code ship ``sql`` ((name, script) pairs) after its own; returns the newest."""

    def available(dialect: str) -> tuple[migrations.Migration, ...]:
        shipped = SHIPPED(dialect)
        extra = (
            migrations.Migration(migrations.latest(shipped) + n, name, script)
            for n, (name, script) in enumerate(sql, start=1)
        )
        return (*shipped, *extra)

    monkeypatch.setattr(migrations, "available", available)
    return migrations.latest(SHIPPED("sqlite")) + len(sql)


def applied(backend) -> list[tuple[int, str]]:
    return backend.execute("SELECT version, name FROM schema_migrations ORDER BY version")


def shipped(backend) -> list[tuple[int, str]]:
    return [(m.version, m.name) for m in SHIPPED(backend.name)]


def test_a_new_database_records_every_shipped_migration(backend):
    backend.open().close()
    assert applied(backend) == shipped(backend)
    assert shipped(backend)[0] == (1, "initial")
    [(stamp,)] = backend.execute("SELECT applied_at FROM schema_migrations WHERE version = 1")
    assert stamp > 1_700_000_000


def test_reopening_an_up_to_date_database_writes_nothing(backend):
    backend.open().close()
    rows = backend.execute("SELECT * FROM schema_migrations")
    before = backend.snapshot()
    for _ in range(2):
        backend.open().close()
    assert backend.execute("SELECT * FROM schema_migrations") == rows
    assert backend.snapshot() == before


def test_a_pending_migration_is_applied_once_and_keeps_the_data(backend, monkeypatch):
    store = backend.open()
    store.set_meta("kept", "yes")
    store.close()
    newest = add_migrations(monkeypatch, ("test_extra", "CREATE TABLE test_extra (x INTEGER);"))
    store = backend.open()
    assert applied(backend)[-1] == (newest, "test_extra")
    assert backend.execute("SELECT count(*) FROM test_extra") == [(0,)]
    assert store.get_meta("kept") == "yes"
    store.close()
    backend.open().close()
    assert len(applied(backend)) == len(SHIPPED(backend.name)) + 1  # nothing ran twice


def test_each_migration_is_its_own_transaction(backend, monkeypatch):
    backend.open().close()
    newest = add_migrations(
        monkeypatch,
        ("test_extra", "CREATE TABLE test_extra (x INTEGER);"),
        ("test_broken", "CREATE TABLE test_broken (x INTEGER);\nTHIS IS NOT SQL;\n"),
    )
    with pytest.raises(record.StoreError):
        backend.open()
    assert applied(backend)[-1] == (newest - 1, "test_extra")  # kept: its own transaction
    tables = backend.execute("SELECT count(*) FROM test_extra")  # exists
    assert tables == [(0,)]
    with pytest.raises(Exception, match="test_broken"):  # rolled back entirely
        backend.execute("SELECT count(*) FROM test_broken")
    add_migrations(monkeypatch, ("test_extra", "CREATE TABLE test_extra (x INTEGER);"))
    backend.open().close()  # fixed code: opens


def test_a_newer_database_is_refused_before_anything_is_written(backend):
    backend.open().close()
    backend.record_migration(migrations.latest(SHIPPED(backend.name)) + 5, "from_the_future")
    before = backend.snapshot()
    for read_only in (False, True):
        with pytest.raises(record.StoreError, match="newer than this reconciler"):
            backend.open(read_only=read_only)
    assert backend.snapshot() == before


def test_a_database_migrated_by_another_build_is_refused(backend):
    backend.open().close()
    backend.execute("UPDATE schema_migrations SET name = 'elsewhere' WHERE version = 1")
    with pytest.raises(record.StoreError, match="another build"):
        backend.open()


def test_concurrent_first_opens_migrate_once(backend):
    errors: list[BaseException] = []

    def open_store() -> None:
        try:
            backend.open()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert applied(backend) == shipped(backend)


# ------------------------------------------------------------------ migration files
def write(directory, *names: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        (directory / name).write_text(f"-- {name}\n")


def test_load_orders_by_version_and_ignores_other_files(tmp_path):
    write(tmp_path / "lite", "0002_second.sql", "0001_first.sql", "README.md")
    loaded = migrations.load("lite", tmp_path)
    assert [(m.version, m.name, m.sql) for m in loaded] == [
        (1, "first", "-- 0001_first.sql\n"),
        (2, "second", "-- 0002_second.sql\n"),
    ]


@pytest.mark.parametrize(
    "names",
    [("0001_a.sql", "0003_c.sql"), ("0002_b.sql",), ("0001_a.sql", "1_b.sql"), ("0001_A.sql",)],
)
def test_load_refuses_gaps_and_bad_names(tmp_path, names):
    write(tmp_path / "lite", *names)
    with pytest.raises(record.StoreError):
        migrations.load("lite", tmp_path)


def test_load_refuses_an_unknown_dialect(tmp_path):
    with pytest.raises(record.StoreError, match="no migrations"):
        migrations.load("oracle", tmp_path)


def test_every_dialect_ships_the_same_versions_under_the_same_names():
    root = resources.files("reconciler.record").joinpath("sql")
    dialects = sorted(d.name for d in root.iterdir() if d.is_dir() and d.name != "__pycache__")
    assert "sqlite" in dialects
    reference = [(m.version, m.name) for m in migrations.load("sqlite")]
    for dialect in dialects:
        assert [(m.version, m.name) for m in migrations.load(dialect)] == reference, dialect
    assert migrations.available("sqlite") == migrations.load("sqlite")


def test_a_reserved_version_may_be_missing_and_only_its_own_name_fills_it(tmp_path):
    """Version 3 is another branch's (migrations.RESERVED): 1, 2, 4 load; a file 0003 must be
    the reserved one; an unreserved gap is still refused."""
    write(tmp_path / "a", "0001_a.sql", "0002_b.sql", "0004_d.sql")
    loaded = migrations.load("a", tmp_path, reserved={3: "events"})
    assert [m.version for m in loaded] == [1, 2, 4] and migrations.latest(loaded) == 4
    with pytest.raises(record.StoreError, match="without gaps"):
        migrations.load("a", tmp_path, reserved={})
    write(tmp_path / "b", "0001_a.sql", "0002_b.sql", "0003_other.sql", "0004_d.sql")
    with pytest.raises(record.StoreError, match="reserved for 'events'"):
        migrations.load("b", tmp_path, reserved={3: "events"})
    write(tmp_path / "c", "0001_a.sql", "0002_b.sql", "0003_events.sql", "0004_d.sql")
    assert len(migrations.load("c", tmp_path, reserved={3: "events"})) == 4


def test_a_reserved_migration_merged_later_is_applied_after_the_newer_ones(backend, monkeypatch):
    """A database made while version 3 was reserved (1, 2 and 4 applied: main between the
    merges of issue 13 and issue 14) gets the events table once 3 ships, and nothing else
    runs again; the event log works on it."""
    monkeypatch.setattr(
        migrations,
        "available",
        lambda dialect: tuple(m for m in SHIPPED(dialect) if m.version != 3),
    )
    backend.open().close()
    before = applied(backend)
    assert 3 not in dict(before) and 4 in dict(before)

    monkeypatch.undo()
    store = backend.open()
    try:
        assert applied(backend) == sorted([*before, (3, "events")])
        event = store.append_event(
            record.Event(None, 1.0, EventKind.SOURCE_DOWN, Severity.ERROR, "git is down")
        )
        assert [e.id for e in store.events()] == [event.id]
    finally:
        store.close()
