"""The configured state store: ``state.url`` in the settings (never with a password), the
backend the wiring picks, ``reconciler migrate``, and the CLI's reads on PostgreSQL."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pydantic
import pytest

from reconciler.record import RolloutRecord, migrations
from reconciler.record.postgresql import PostgresStateStore
from reconciler.record.sqlite import SqliteStateStore
from reconciler.service import wiring
from reconciler.settings import Settings

NEWEST = migrations.latest(migrations.available("sqlite"))


# ------------------------------------------------------------------ settings
@pytest.mark.parametrize(
    "url",
    [
        "postgresql://reconciler:s3cr3t-pw@db.example.com/reconciler",
        "postgresql://reconciler@db.example.com/reconciler?sslmode=require&password=s3cr3t-pw",
        "postgres://:s3cr3t-pw@db.example.com/reconciler",
        "postgresql://reconciler@db.example.com/reconciler?sslpassword=s3cr3t-pw",
    ],
)
def test_a_state_url_with_a_password_is_refused_without_echoing_it(url, monkeypatch):
    with pytest.raises(pydantic.ValidationError, match="must not contain a password") as caught:
        Settings(state={"url": url})
    assert "s3cr3t" not in str(caught.value)
    monkeypatch.setenv("RECONCILER_STATE__URL", url)
    with pytest.raises(pydantic.ValidationError) as caught:
        Settings()
    assert "s3cr3t" not in str(caught.value)


@pytest.mark.parametrize("url", ["mysql://db/x", "db.example.com:5432", "sqlite:///x.db"])
def test_a_state_url_must_be_postgresql(url):
    with pytest.raises(pydantic.ValidationError, match="postgresql://"):
        Settings(state={"url": url})


def test_the_state_section_defaults_to_sqlite(monkeypatch, tmp_path):
    settings = Settings(state_dir=tmp_path)
    assert (settings.state.url, settings.state.password_file) == ("", None)
    assert not settings.state.postgresql
    monkeypatch.setenv("RECONCILER_STATE__URL", "postgresql://r@db:5432/x?sslmode=verify-full")
    monkeypatch.setenv("RECONCILER_STATE__PASSWORD_FILE", "/run/credentials/x/pg-password")
    configured = Settings(state_dir=tmp_path)
    assert configured.state.url == "postgresql://r@db:5432/x?sslmode=verify-full"
    assert configured.state.password_file == Path("/run/credentials/x/pg-password")
    assert configured.state_dir == tmp_path, "state_dir and state.* are different keys"


# ------------------------------------------------------------------ wiring
def test_the_wiring_opens_the_configured_backend(tmp_path, postgres_url):
    lite = wiring.open_store(Settings(state_dir=tmp_path))
    assert isinstance(lite, SqliteStateStore) and lite.path == tmp_path / "state.db"
    lite.close()
    settings = Settings(state_dir=tmp_path / "pg", state={"url": postgres_url, "pool_size": 3})
    store = wiring.open_store(settings)
    assert isinstance(store, PostgresStateStore) and store.connections.pool_size == 3
    store.close()
    reader = wiring.open_store(settings, read_only=True)
    assert isinstance(reader, PostgresStateStore) and reader.read_only
    assert reader.connections.pool_size == wiring.READ_ONLY_POOL
    reader.close()
    assert not (tmp_path / "pg").exists(), "nothing under state_dir for PostgreSQL"


# ------------------------------------------------------------------ the CLI
def reconciler(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI in its own process, configured by ``env`` only."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("RECONCILER_", "PG"))}
    code = "from reconciler.cli import main; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        env={**clean, "COLUMNS": "200", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_migrate_applies_pending_migrations_and_says_so_on_sqlite(tmp_path):
    env = {"RECONCILER_STATE_DIR": str(tmp_path / "state")}
    first = reconciler(env, "migrate")
    assert first.returncode == 0, first.stderr
    assert "applied 0001_initial" in first.stdout and "applied 0002_observed_state" in first.stdout
    assert f"schema 0 -> {NEWEST}" in first.stdout
    again = reconciler(env, "migrate")
    assert again.returncode == 0 and f"schema {NEWEST}, up to date" in again.stdout
    assert "applied" not in again.stdout


def test_migrate_and_reads_on_postgresql(tmp_path, postgres_url):
    env = {"RECONCILER_STATE_DIR": str(tmp_path / "state"), "RECONCILER_STATE__URL": postgres_url}
    status = reconciler(env, "status")  # no schema yet: empty, nothing created
    assert status.returncode == 0, status.stderr
    first = reconciler(env, "migrate")
    assert first.returncode == 0, first.stderr
    assert "applied 0001_initial" in first.stdout and f"schema 0 -> {NEWEST}" in first.stdout
    assert postgres_url.split("?")[0] in first.stdout
    assert "up to date" in reconciler(env, "migrate").stdout
    with PostgresStateStore.open(postgres_url) as store:
        store.start_rollout(
            RolloutRecord("ro1", "run1", "prod", "web", "c1", {"shop": "2"}, "running", "", 1, None)
        )
        store.finish_rollout("ro1", "rolled_back", "gate failed", 2.0)
        store.update_environment("prod", 2.0, last_result="rolled_back")
    status, history = reconciler(env, "status"), reconciler(env, "history")
    assert (status.returncode, history.returncode) == (0, 0), status.stderr + history.stderr
    assert "rolled_back" in status.stdout and "rolled_back" in history.stdout
    assert not (tmp_path / "state").exists()


def test_an_unreachable_or_badly_configured_store_is_a_clear_exit_2(tmp_path):
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        url = f"postgresql://reconciler@127.0.0.1:{bound.getsockname()[1]}/x"
        env = {"RECONCILER_STATE_DIR": str(tmp_path), "RECONCILER_STATE__URL": url}
        for command in ("migrate", "status", "history"):
            done = reconciler({**env, "RECONCILER_STATE__CONNECT_TIMEOUT": "2s"}, command)
            assert done.returncode == 2, (command, done.stdout, done.stderr)
            assert "127.0.0.1" in done.stderr and "Traceback" not in done.stderr
    leaked = {**env, "RECONCILER_STATE__URL": "postgresql://r:s3cr3t-pw@127.0.0.1/x"}
    done = reconciler(leaked, "migrate")
    assert done.returncode == 2 and "must not contain a password" in done.stderr
    assert "s3cr3t" not in done.stderr + done.stdout
