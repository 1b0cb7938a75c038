"""Reads never write: a store opened read-only, on every backend."""

from __future__ import annotations

import pytest

from reconciler import record
from reconciler.record import (
    DeployedVersion,
    QuarantineRecord,
    RolloutRecord,
    RunRecord,
    StepRecord,
)

from .test_migrations import add_migrations


def populate(store) -> None:
    store.record_deployed([DeployedVersion("prod", "h1", "shop", "1", "web", "c1", "ro1", 1.0)])
    store.start_run(RunRecord("run1", "prod", "c1", 1.0, None, "running", {}))
    store.start_rollout(
        RolloutRecord("ro1", "run1", "prod", "web", "c1", {"shop": "1"}, "running", "", 1.0, None)
    )
    store.journal_step(
        StepRecord("ro1", "deploy", 1, 100, ("h1",), "succeeded", {}, [], "", 1.0, 2.0)
    )
    store.finish_rollout("ro1", "succeeded", "", 3.0)
    store.finish_run("run1", "applied", 3.0, {"web": {"state": "succeeded"}})
    store.update_environment("prod", 3.0, last_result="applied", last_applied_commit="c1")
    store.set_quarantine(QuarantineRecord("prod", "api", "fp", "c0", "ro0", "r", "", 0.5))
    store.set_meta("last_valid_commit", "c1")
    store.append_event(record.Event(None, 3.0, "rollout_succeeded", "info", "done", "prod"))


def read_everything(store) -> dict[str, object]:
    """Every read method of ``record.StateStore``, keyed by its name."""
    return {
        "deployed": store.deployed("prod"),
        "recorded_versions": store.recorded_versions("prod"),
        "runs": store.runs(),
        "run": store.run("run1"),
        "unfinished_runs": store.unfinished_runs(),
        "rollouts": store.rollouts("prod"),
        "rollout": store.rollout("ro1"),
        "unfinished_rollouts": store.unfinished_rollouts(),
        "steps": store.steps("ro1"),
        "environment_status": store.environment_status("prod"),
        "environment_statuses": store.environment_statuses(),
        "quarantine": store.quarantine("prod", "api"),
        "quarantines": store.quarantines(),
        "get_meta": store.get_meta("last_valid_commit"),
        "events": store.events(),
        "newest_event_id": store.newest_event_id(),
    }


WRITES = {
    "record_deployed": lambda s: s.record_deployed(
        [DeployedVersion("prod", "h9", "shop", "2", "web", None, None, 9.0)]
    ),
    "forget_deployed": lambda s: s.forget_deployed("prod", [("h1", "shop")]),
    "start_run": lambda s: s.start_run(RunRecord("run9", "prod", None, 9.0, None, "running", {})),
    "finish_run": lambda s: s.finish_run("run1", "failed", 9.0, {}),
    "finish_run_if_running": lambda s: s.finish_run_if_running("run1", "failed", 9.0, {}),
    "start_rollout": lambda s: s.start_rollout(
        RolloutRecord("ro9", "run1", "prod", "web", None, {}, "running", "", 9.0, None)
    ),
    "finish_rollout": lambda s: s.finish_rollout("ro1", "failed", "x", 9.0),
    "finish_rollout_if_running": lambda s: s.finish_rollout_if_running("ro1", "failed", "", 9.0),
    "journal_step": lambda s: s.journal_step(
        StepRecord("ro1", "deploy", 2, 100, (), "running", {}, [], "", 9.0, None)
    ),
    "update_environment": lambda s: s.update_environment("prod", 9.0, suspended=True),
    "set_quarantine": lambda s: s.set_quarantine(
        QuarantineRecord("prod", "web", "fp", None, None, "", "", 9.0)
    ),
    "clear_quarantine": lambda s: s.clear_quarantine("prod", "api"),
    "set_meta": lambda s: s.set_meta("last_valid_commit", "c9"),
    "append_event": lambda s: s.append_event(
        record.Event(None, 9.0, "source_down", "error", "down")
    ),
    "prune_events": lambda s: s.prune_events(keep=0),
}


def test_every_method_is_covered_as_a_read_or_a_write(backend):
    roles = (
        record.DeployedVersions, record.RunJournal, record.RolloutJournal,
        record.EnvironmentStates, record.Quarantines, record.Meta, record.Events,
    )  # fmt: skip
    methods = {name for role in roles for name in vars(role) if not name.startswith("_")}
    reads = set(read_everything(backend.open(read_only=True)))
    assert reads.isdisjoint(WRITES)
    assert reads | set(WRITES) == methods


def test_a_missing_database_reads_as_empty_and_is_not_created(backend):
    store = backend.open(read_only=True)
    assert read_everything(store) == {
        "deployed": [],
        "recorded_versions": {},
        "runs": [],
        "run": None,
        "unfinished_runs": [],
        "rollouts": [],
        "rollout": None,
        "unfinished_rollouts": [],
        "steps": [],
        "environment_status": record.EnvironmentStatus.unknown("prod"),
        "environment_statuses": [],
        "quarantine": None,
        "quarantines": [],
        "get_meta": None,
        "events": [],
        "newest_event_id": 0,
    }
    with pytest.raises(record.StoreError, match="read-only"):
        store.set_meta("x", "y")
    store.close()
    assert not backend.exists()


@pytest.mark.parametrize("write", list(WRITES))
def test_every_write_is_refused_and_changes_nothing(backend, write):
    writer = backend.open()
    populate(writer)
    writer.close()
    before = backend.snapshot()
    store = backend.open(read_only=True)
    expected = read_everything(store)
    with pytest.raises(record.StoreError, match="read-only"):
        WRITES[write](store)
    assert read_everything(store) == expected
    store.close()
    assert backend.snapshot() == before


@pytest.mark.parametrize("write", ["set_meta", "start_run"])
def test_writes_to_a_missing_database_are_refused_too(backend, write):
    with pytest.raises(record.StoreError, match="read-only"):
        WRITES[write](backend.open(read_only=True))
    assert not backend.exists()


def test_reads_leave_the_database_unchanged(backend):
    writer = backend.open()
    populate(writer)
    expected = read_everything(writer)
    writer.close()
    before = backend.snapshot()
    for _ in range(2):
        store = backend.open(read_only=True)
        assert read_everything(store) == expected
        store.close()
    assert backend.snapshot() == before


def test_a_read_only_store_follows_a_running_writer(backend):
    daemon = backend.open()
    daemon.set_meta("k", "1")
    cli = backend.open(read_only=True)
    assert cli.get_meta("k") == "1"
    daemon.set_meta("k", "2")
    populate(daemon)
    assert cli.get_meta("k") == "2"
    assert read_everything(cli) == read_everything(daemon)


def test_an_older_database_is_refused_with_how_to_migrate_it(backend, monkeypatch):
    writer = backend.open()
    populate(writer)
    writer.close()
    before = backend.snapshot()
    add_migrations(monkeypatch, ("test_extra", "CREATE TABLE test_extra (x INTEGER);"))
    with pytest.raises(record.StoreError, match=r"older than this reconciler.*reconciler run"):
        backend.open(read_only=True)
    assert backend.snapshot() == before
    backend.open().close()  # a writer migrates it; then reads work
    assert read_everything(backend.open(read_only=True))["get_meta"] == "c1"
