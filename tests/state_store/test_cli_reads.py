"""Reads never write: ``reconciler status`` and ``history`` without a daemon."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

from reconciler.record import RolloutRecord
from reconciler.record.sqlite import SqliteStateStore


def digest(directory) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.iterdir())
        if not p.name.endswith("-shm")  # shared memory: readers write their read marks there
    }


def reconciler(state, command: str) -> subprocess.CompletedProcess[str]:
    """The CLI in its own process (it configures logging globally), without a daemon."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECONCILER_")}
    env.update(RECONCILER_STATE_DIR=str(state), COLUMNS="200")
    code = "from reconciler.cli import main; main()"
    return subprocess.run(
        [sys.executable, "-c", code, command], env=env, capture_output=True, text=True, timeout=60
    )


def test_status_and_history_leave_the_state_store_as_it_was(tmp_path):
    state = tmp_path / "state"
    for command in ("status", "history"):
        result = reconciler(state, command)
        assert result.returncode == 0, result.stdout + result.stderr
    assert not state.exists()  # no database was created to be read

    with SqliteStateStore.open(state / "state.db") as store:
        store.start_rollout(
            RolloutRecord("ro1", "run1", "prod", "web", "c1", {"shop": "2"}, "running", "", 1, None)
        )
        store.finish_rollout("ro1", "rolled_back", "gate failed", 2.0)
        store.update_environment("prod", 2.0, last_result="rolled_back")
    before = digest(state)
    status, history = reconciler(state, "status"), reconciler(state, "history")
    assert (status.returncode, history.returncode) == (0, 0), status.stderr + history.stderr
    assert "rolled_back" in status.stdout and "rolled_back" in history.stdout
    assert {k: v for k, v in digest(state).items() if k in before} == before
