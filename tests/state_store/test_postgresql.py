"""What only the PostgreSQL backend promises: migrations serialized among processes by an
advisory lock, the password never in the URL, a bounded and validated pool, temporary versus
permanent errors, server-side read-only sessions, the same logical schema as SQLite."""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest

from reconciler import record
from reconciler.record import migrations
from reconciler.record.postgresql import MIGRATION_LOCK, PostgresStateStore
from reconciler.record.postgresql.connection import temporary
from reconciler.testing.postgres import PostgresCluster
from tests.pg import Database

SHIPPED = [(m.version, m.name) for m in migrations.available("postgresql")]


def applied(url: str) -> list[tuple[int, str]]:
    with psycopg.connect(url) as db:
        return db.execute("SELECT version, name FROM schema_migrations ORDER BY 1").fetchall()


# ------------------------------------------------------------------ migrations
OPEN_AT_ONCE = """
import json, os, sys, time
from reconciler.record.postgresql import PostgresStateStore
go = sys.argv[2]
while not os.path.exists(go):
    time.sleep(0.005)
store = PostgresStateStore.open(sys.argv[1])
print(json.dumps([m.name for m in store.migrated.applied]))
store.close()
"""


def test_replicas_starting_at_once_apply_each_migration_exactly_once(postgres_url, tmp_path):
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", OPEN_AT_ONCE, postgres_url, str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    time.sleep(1.0)  # every interpreter is up and polling
    go.touch()
    names: list[str] = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        names += json.loads(out)
    assert sorted(names) == sorted(name for _, name in SHIPPED), "each applied by one process"
    assert applied(postgres_url) == SHIPPED


def test_a_migration_waits_for_the_advisory_lock(postgres_url):
    opened: list[PostgresStateStore] = []
    with psycopg.connect(postgres_url) as holder:  # another replica, migrating
        holder.execute("SELECT pg_advisory_xact_lock(%s, %s)", MIGRATION_LOCK)
        thread = threading.Thread(target=lambda: opened.append(PostgresStateStore(postgres_url)))
        thread.start()
        time.sleep(1.5)
        assert thread.is_alive() and not opened, "it waits for the lock"
        holder.commit()  # the other replica is done
        thread.join(timeout=60)
    assert opened and [m.name for m in opened[0].migrated.applied] == [n for _, n in SHIPPED]
    opened[0].close()


def test_migrated_says_what_this_open_did(postgres_url):
    with PostgresStateStore.open(postgres_url) as first:
        shipped = migrations.available("postgresql")
        assert first.migrated == migrations.Outcome(0, migrations.latest(shipped), shipped)
    with PostgresStateStore.open(postgres_url) as second:
        assert second.migrated == migrations.Outcome(
            migrations.latest(shipped), migrations.latest(shipped)
        )


def test_the_same_tables_and_columns_as_sqlite(postgres_url, tmp_path):
    """Except what only several replicas need (leases, members: 0004_leases)."""
    from reconciler.record.sqlite import SqliteStateStore

    SqliteStateStore.open(tmp_path / "state.db").close()
    lite = sqlite3.connect(tmp_path / "state.db")
    tables = [  # sqlite_sequence: SQLite's own (events.id is AUTOINCREMENT)
        t
        for (t,) in lite.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        if not t.startswith("sqlite_")
    ]
    expected = {t: {c[1] for c in lite.execute(f"PRAGMA table_info({t})")} for t in tables}
    lite.close()
    PostgresStateStore.open(postgres_url).close()
    with psycopg.connect(postgres_url) as db:
        found: dict[str, set[str]] = {}
        for table, column in db.execute(
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE table_schema = current_schema()"
        ):
            found.setdefault(table, set()).add(column)
    rowid_stand_ins = {"runs", "rollouts", "rollout_steps"}  # seq: what SQLite's rowid does
    assert found.pop("leases") and found.pop("replicas")
    assert {t: c - ({"seq"} if t in rowid_stand_ins else set()) for t, c in found.items()} == (
        expected
    )


# ------------------------------------------------------------------ passwords
@pytest.mark.parametrize(
    "url",
    [
        "postgresql://reconciler:s3cr3t-pw@127.0.0.1:5432/db",
        "postgresql://reconciler@127.0.0.1:5432/db?password=s3cr3t-pw",
        "host=127.0.0.1 dbname=db password=s3cr3t-pw",
    ],
)
def test_a_password_in_the_url_is_refused_without_repeating_it(url):
    with pytest.raises(record.StoreError, match="must not contain a password") as caught:
        PostgresStateStore.open(url)
    assert "s3cr3t" not in str(caught.value)


@dataclass
class Owned:
    url: str
    role: str


@pytest.fixture
def owned(postgres_cluster: PostgresCluster) -> Iterator[Owned]:
    """A database owned by a role that must give its password ("first-pw")."""
    role = f"owner_{time.monotonic_ns()}"
    postgres_cluster.create_role(role, "first-pw")
    database = Database(postgres_cluster)
    postgres_cluster.psql(f"ALTER DATABASE {database.name} OWNER TO {role}")
    postgres_cluster.psql(f"GRANT ALL ON SCHEMA public TO {role}", database.name)
    yield Owned(postgres_cluster.url(database.name, role), role)
    database.drop()
    postgres_cluster.psql(f"DROP ROLE {role}")


def test_the_password_file_is_read_at_every_new_connection(owned, postgres_cluster, tmp_path):
    secret = tmp_path / "pg-password"
    secret.write_text("first-pw\n")
    store = PostgresStateStore.open(owned.url, password_file=secret, connect_timeout=2)
    store.set_meta("k", "1")
    postgres_cluster.psql(f"ALTER ROLE {owned.role} PASSWORD 'second-pw'")
    secret.write_text("second-pw\n")  # rotated
    postgres_cluster.psql(
        f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{owned.role}'"
    )
    assert store.get_meta("k") == "1", "a new connection, with the new password"
    store.close()


def test_a_wrong_or_missing_password_fails_clearly(owned, tmp_path):
    secret = tmp_path / "pg-password"
    secret.write_text("wrong-pw\n")
    with pytest.raises((record.StoreError, record.StoreUnavailable), match="password") as caught:
        PostgresStateStore.open(owned.url, password_file=secret, connect_timeout=2)
    assert "wrong-pw" not in str(caught.value)
    with pytest.raises(record.StoreError, match="password_file"):
        PostgresStateStore.open(owned.url, password_file=tmp_path / "missing")
    secret.write_text("\n")
    with pytest.raises(record.StoreError, match="empty"):
        PostgresStateStore.open(owned.url, password_file=secret)


def test_libpq_finds_the_password_in_its_environment(owned, monkeypatch):
    monkeypatch.setenv("PGPASSWORD", "first-pw")
    with PostgresStateStore.open(owned.url) as store:
        store.set_meta("k", "v")
        assert store.get_meta("k") == "v"


# ------------------------------------------------------------------ connections and errors
def test_an_unreachable_server_is_a_temporary_error():
    with socket.socket() as bound:  # a port nothing listens on while it is bound
        bound.bind(("127.0.0.1", 0))
        port = bound.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(record.StoreUnavailable, match=r"127\.0\.0\.1"):
            PostgresStateStore.open(f"postgresql://u@127.0.0.1:{port}/db", connect_timeout=2)
    assert time.monotonic() - started < 10


def test_a_server_outage_is_temporary_and_the_store_recovers(tmp_path):
    cluster = PostgresCluster.start()  # its own server: this test takes it down
    try:
        url = cluster.create_database("outage")
        store = PostgresStateStore.open(url, connect_timeout=2)
        store.set_meta("k", "before")
        cluster.stop_server()
        with pytest.raises(record.StoreUnavailable):
            store.get_meta("k")
        with pytest.raises(record.StoreUnavailable):
            store.set_meta("k", "during")
        cluster.start_server()
        deadline = time.monotonic() + 30
        while True:
            try:
                assert store.get_meta("k") == "before"
                break
            except record.StoreUnavailable:
                assert time.monotonic() < deadline, "the pool reconnects"
                time.sleep(0.5)
        store.set_meta("k", "after")
        assert store.get_meta("k") == "after"
        store.close()
    finally:
        cluster.stop()


def test_the_pool_is_bounded_and_a_caller_waits_connect_timeout_at_most(postgres_url):
    store = PostgresStateStore.open(postgres_url, pool_size=2, connect_timeout=1)
    with store.connections.connection(), store.connections.connection():
        started = time.monotonic()
        with pytest.raises(record.StoreUnavailable):
            store.get_meta("k")
        assert 0.8 < time.monotonic() - started < 5
    assert store.get_meta("k") is None, "usable again once connections are back"
    store.close()


def test_sessions_are_bounded_in_time_and_named(postgres_url):
    with PostgresStateStore.open(postgres_url) as store, store.connections.connection() as db:
        settings = db.execute(
            "SELECT current_setting('statement_timeout'),"
            " current_setting('idle_in_transaction_session_timeout'),"
            " current_setting('application_name'), current_setting('transaction_read_only')"
        ).fetchone()
    assert settings == ("1min", "1min", "reconciler", "off")


def test_a_read_only_store_is_read_only_in_the_server_too(postgres_url):
    PostgresStateStore.open(postgres_url).close()
    with PostgresStateStore.open(postgres_url, read_only=True) as store:
        with (
            pytest.raises(record.StoreError, match="read-only"),
            store.connections.connection() as db,
        ):
            db.execute("INSERT INTO meta (key, value) VALUES ('k', 'v')")
        assert store.get_meta("k") is None


def test_text_with_nul_is_kept_with_a_replacement_character(postgres_url):
    with PostgresStateStore.open(postgres_url) as store:
        store.set_meta("k", "a\x00b")
        store.update_environment("prod", 1.0, last_error="boom\x00!")
        assert store.get_meta("k") == "a\ufffdb"
        assert store.environment_status("prod").last_error == "boom\ufffd!"


@pytest.mark.parametrize(
    ("error", "is_temporary"),
    [
        (psycopg.errors.SerializationFailure("x"), True),
        (psycopg.errors.DeadlockDetected("x"), True),
        (psycopg.errors.AdminShutdown("x"), True),
        (psycopg.errors.QueryCanceled("x"), True),
        (psycopg.errors.LockNotAvailable("x"), True),
        (psycopg.errors.TooManyConnections("x"), True),
        (psycopg.OperationalError("connection refused"), True),
        (psycopg.errors.UniqueViolation("x"), False),
        (psycopg.errors.UndefinedTable("x"), False),
        (psycopg.errors.ReadOnlySqlTransaction("x"), False),
        (psycopg.errors.ProgramLimitExceeded("x"), False),
        (psycopg.InterfaceError("x"), False),
    ],
)
def test_errors_are_temporary_only_when_retrying_can_help(error, is_temporary):
    assert temporary(error) is is_temporary


def test_read_only_without_a_schema_reads_empty_and_never_connects_again(postgres_url):
    store = PostgresStateStore.open(postgres_url, read_only=True)
    assert not store.connections.pooled
    assert store.runs() == [] and store.get_meta("x") is None
    store.close()
