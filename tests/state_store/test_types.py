"""Record types and the package surface (pure: no database)."""

from __future__ import annotations

import ast
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler import errors, record
from reconciler.states import EnvironmentResult, Phase, RolloutState, StepState

RECORD_DIR = Path(record.__file__).parent

FIELDS = {
    record.Event: "id at kind severity summary environment group rollout_id commit details",
    record.DeployedVersion: "environment host app version group commit rollout_id deployed_at",
    record.RunRecord: "id environment commit started_at finished_at result summary",
    record.RolloutRecord: (
        "id run_id environment group commit apps state reason started_at finished_at trigger"
    ),
    record.StepRecord: (
        "rollout_id phase index percent hosts state host_results gate_results run_dir "
        "started_at finished_at attempts bake_until"
    ),
    record.QuarantineRecord: (
        "environment group fingerprint commit rollout_id reason revert created_at"
    ),
    record.EnvironmentStatus: (
        "environment suspended last_attempted_commit last_applied_commit last_result "
        "last_error updated_at"
    ),
}


@pytest.mark.parametrize("cls", list(FIELDS), ids=lambda c: c.__name__)
def test_field_names_and_order_are_stable(cls):
    assert [f.name for f in dataclasses.fields(cls)] == FIELDS[cls].split()
    assert cls.__dataclass_params__.frozen


def test_states_are_coerced_to_their_enums_and_validated():
    run = record.RunRecord("r", "prod", None, 1.0, None, "running", {})
    assert run.result is EnvironmentResult.RUNNING
    rollout = record.RolloutRecord("ro", "r", "prod", "web", None, {}, "degraded", "", 1.0, None)
    assert rollout.state is RolloutState.DEGRADED and rollout.state == "degraded"
    step = record.StepRecord("ro", "rollback", 1, 10, ("h",), "failed", {}, [], "", 1.0, None)
    assert (step.phase, step.state) == (Phase.ROLLBACK, StepState.FAILED)
    assert dataclasses.replace(step, state="interrupted").state is StepState.INTERRUPTED
    status = record.EnvironmentStatus("prod", False, None, None, "applied", "", None)
    assert status.last_result is EnvironmentResult.APPLIED
    assert record.EnvironmentStatus.unknown("prod").last_result is None
    with pytest.raises(ValueError):
        record.RolloutRecord("ro", "r", "prod", "web", None, {}, "paused", "", 1.0, None)
    with pytest.raises(ValueError):
        record.StepRecord("ro", "forward", 1, 10, (), "running", {}, [], "", 1.0, None)
    with pytest.raises(ValueError):
        record.EnvironmentStatus("prod", False, None, None, "", "", None)  # never: None
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.result = "applied"  # type: ignore[misc]


def test_store_error_is_a_permanent_error():
    assert issubclass(record.StoreError, errors.PermanentError)


def test_fenced_is_a_store_error():
    assert issubclass(record.Fenced, record.StoreError)


def test_store_unavailable_is_a_temporary_error():
    assert issubclass(record.StoreUnavailable, errors.TemporaryError)
    assert not issubclass(record.StoreUnavailable, record.StoreError)


def test_the_package_exports_types_protocols_and_the_error():
    expected = {
        "DeployedVersion", "RunRecord", "RolloutRecord", "StepRecord", "QuarantineRecord",
        "EnvironmentStatus", "DeployedVersions", "RunJournal", "RolloutJournal",
        "EnvironmentStates", "EnvironmentFields", "Quarantines", "Meta", "StateStore",
        "StoreError", "ObservedVersion", "DriftMark", "ObservedState", "Event", "Events",
        "EventSink", "SilentSink",
        "StoreUnavailable",
        "Lease", "Replica", "Leases", "LeaseHolders", "Fenced", "SyncRequests",
    }  # fmt: skip
    assert set(record.__all__) == expected
    assert all(hasattr(record, name) for name in expected)


def test_state_store_is_the_union_of_the_roles():
    roles = (
        record.DeployedVersions, record.RunJournal, record.RolloutJournal,
        record.EnvironmentStates, record.Quarantines, record.ObservedState, record.Meta,
        record.Events,
    )  # fmt: skip
    assert set(record.StateStore.__mro__) >= set(roles)
    methods = {n for role in roles for n in vars(role) if not n.startswith("_")}
    from reconciler.record.postgresql import PostgresStateStore
    from reconciler.record.sqlite import SqliteStateStore

    assert methods <= set(dir(SqliteStateStore))
    assert methods <= set(dir(PostgresStateStore))


def test_importing_record_does_not_import_sqlite3():
    code = "import sys, reconciler.record; assert 'sqlite3' not in sys.modules, 'sqlite3'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_only_postgresql_users_load_psycopg():
    code = (
        "import sys, reconciler.record, reconciler.service.wiring, reconciler.cli;"
        " assert 'psycopg' not in sys.modules, 'psycopg'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_only_record_postgresql_imports_psycopg():
    importers = set()
    for path in RECORD_DIR.parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            if any(n.split(".")[0] in ("psycopg", "psycopg_pool") for n in names):
                importers.add(path.relative_to(RECORD_DIR).as_posix())
    assert importers == {
        "postgresql/connection.py",
        "postgresql/leases.py",
        "postgresql/notifications.py",
        "postgresql/store.py",
    }


def test_only_record_sqlite_imports_sqlite3():
    importers = set()
    for path in RECORD_DIR.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            if any(n.split(".")[0] == "sqlite3" for n in names):
                importers.add(path.relative_to(RECORD_DIR).as_posix())
    assert importers == {"sqlite.py"}


def test_every_record_module_states_its_contract_and_stays_small():
    for path in RECORD_DIR.rglob("*.py"):
        source = path.read_text()
        docstring = ast.get_docstring(ast.parse(source))
        assert docstring, path
        # about 400 lines, more only with the reason in the docstring (and never much more)
        limit = 500 if "Size:" in docstring else 420
        assert len(source.splitlines()) <= limit, path
