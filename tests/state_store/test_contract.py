"""The state store contract: every method of every role, on every backend (see conftest)."""

from __future__ import annotations

import threading

import pytest

from reconciler import record
from reconciler.record import (
    DeployedVersion,
    QuarantineRecord,
    RolloutRecord,
    RunRecord,
    StepRecord,
)
from reconciler.states import (
    EnvironmentResult,
    ObservationStatus,
    Phase,
    RolloutState,
    RolloutTrigger,
    StepState,
)


def run(id="run1", env="prod", started=1.0, result="running", finished=None, summary=None):
    return RunRecord(id, env, f"c-{id}", started, finished, result, summary or {})


def rollout(id="ro1", env="prod", started=1.0, state="running", run_id="run1", group="web"):
    return RolloutRecord(id, run_id, env, group, "c1", {"shop": "2.5.0"}, state, "", started, None)


def step(rollout_id="ro1", phase="deploy", index=1, state="running", started=2.0, **changes):
    fields = dict(
        percent=10, hosts=("h1",), host_results={}, gate_results=[], run_dir="", finished=None,
        attempts=(), bake_until=None,
    )  # fmt: skip
    fields.update(changes)
    return StepRecord(
        rollout_id, phase, index, fields["percent"], fields["hosts"], state,
        fields["host_results"], fields["gate_results"], fields["run_dir"], started,
        fields["finished"], fields["attempts"], fields["bake_until"],
    )  # fmt: skip


def deployed(host="h1", app="shop", version="1.0", env="prod", at=1.0):
    return DeployedVersion(env, host, app, version, "web", "c1", "ro1", at)


# ------------------------------------------------------------------ deployed versions
def test_deployed_versions_upsert_and_survive_reopen(backend):
    store = backend.open()
    store.record_deployed([deployed(version="1.0", at=10.0)])
    store.record_deployed(
        [
            DeployedVersion("prod", "h1", "shop", "2.0", "web2", "c2", "r2", 20.0),
            deployed(env="stage", version="9.9", at=30.0),
        ]
    )
    store.close()
    reopened = backend.open()
    assert reopened.deployed("prod") == [
        DeployedVersion("prod", "h1", "shop", "2.0", "web2", "c2", "r2", 20.0)
    ]
    assert [r.version for r in reopened.deployed("stage")] == ["9.9"]
    assert reopened.deployed("nowhere") == []


def test_deployed_sorted_by_host_then_app(store):
    store.record_deployed(
        [deployed("h2", "b"), deployed("h1", "b"), deployed("h2", "a"), deployed("h1", "a")]
    )
    assert [(d.host, d.app) for d in store.deployed("prod")] == [
        ("h1", "a"),
        ("h1", "b"),
        ("h2", "a"),
        ("h2", "b"),
    ]


def test_recorded_versions_and_forget(store):
    store.record_deployed(
        [
            deployed("h1", "a", "1"),
            deployed("h1", "b", "2"),
            deployed("h2", "a", "3"),
            deployed("h1", "a", "9", env="stage"),
        ]
    )
    assert store.recorded_versions("prod") == {("h1", "a"): "1", ("h1", "b"): "2", ("h2", "a"): "3"}
    store.forget_deployed("prod", [("h1", "a"), ("h2", "zzz")])
    assert store.recorded_versions("prod") == {("h1", "b"): "2", ("h2", "a"): "3"}
    assert store.recorded_versions("stage") == {("h1", "a"): "9"}
    store.record_deployed([])
    store.forget_deployed("prod", [])
    assert len(store.deployed("prod")) == 2


def test_a_failed_write_leaves_nothing_and_raises_store_error(store):
    bad = [deployed("h1"), DeployedVersion("prod", "h2", "shop", None, "web", None, None, 1.0)]
    with pytest.raises(record.StoreError):
        store.record_deployed(bad)  # version is NOT NULL: the whole call is refused
    assert store.deployed("prod") == []
    store.record_deployed([deployed("h1")])  # the store is usable afterwards
    assert len(store.deployed("prod")) == 1


# ------------------------------------------------------------------ runs
def test_run_round_trip_and_finish(store):
    store.start_run(run(summary={"note": [1, "x"]}))
    assert store.run("run1") == RunRecord(
        "run1", "prod", "c-run1", 1.0, None, "running", {"note": [1, "x"]}
    )
    store.finish_run("run1", EnvironmentResult.APPLIED, 4.0, {"web": {"state": "succeeded"}})
    found = store.run("run1")
    assert (found.result, found.finished_at, found.summary) == (
        EnvironmentResult.APPLIED,
        4.0,
        {"web": {"state": "succeeded"}},
    )
    assert type(found.result) is EnvironmentResult
    assert store.run("nope") is None


def test_finish_run_if_running_closes_only_an_open_run(store):
    store.start_run(run())
    assert store.finish_run_if_running("run1", "error", 5.0, {"error": "boom"}) is True
    assert store.finish_run_if_running("run1", "interrupted", 6.0, {}) is False
    found = store.run("run1")
    assert (found.result, found.finished_at, found.summary) == ("error", 5.0, {"error": "boom"})
    assert store.finish_run_if_running("missing", "error", 5.0, {}) is False
    assert store.unfinished_runs() == []


def test_finish_run_refuses_a_non_terminal_or_unknown_result(store):
    store.start_run(run())
    for bad in ("running", "exploded"):
        with pytest.raises(ValueError):
            store.finish_run("run1", bad, 2.0, {})
        with pytest.raises(ValueError):
            store.finish_run_if_running("run1", bad, 2.0, {})
    assert store.run("run1").finished_at is None


def test_runs_newest_first_ties_last_written_first_with_limit_and_filter(store):
    store.start_run(run("a", started=1.0))
    store.start_run(run("b", started=3.0))
    store.start_run(run("c", started=2.0, env="stage"))
    store.start_run(run("d", started=3.0))
    assert [r.id for r in store.runs()] == ["d", "b", "c", "a"]
    assert [r.id for r in store.runs(None, limit=2)] == ["d", "b"]
    assert [r.id for r in store.runs("prod")] == ["d", "b", "a"]
    assert [r.id for r in store.runs("stage", limit=5)] == ["c"]
    store.finish_run("b", "applied", 9.0, {})
    assert [r.id for r in store.unfinished_runs()] == ["a", "c", "d"]


# ------------------------------------------------------------------ rollouts and steps
def test_journal_records_intent_before_and_result_after(store):
    store.start_run(run())
    store.start_rollout(rollout())
    store.journal_step(step())
    assert [r.id for r in store.unfinished_rollouts()] == ["ro1"]
    [intent] = store.steps("ro1")
    assert (intent.state, intent.hosts, intent.finished_at) == ("running", ("h1",), None)
    store.journal_step(
        step(
            state="succeeded",
            started=2.5,  # kept from the first write
            percent=99,  # kept from the first write
            hosts=("h1", "h2"),
            host_results={"h1": {"status": "ok"}},
            gate_results=[{"gate": "http", "passed": True}],
            run_dir="/runs/x",
            finished=3.0,
        )
    )
    assert store.steps("ro1") == [
        StepRecord(
            "ro1", Phase.DEPLOY, 1, 10, ("h1", "h2"), StepState.SUCCEEDED,
            {"h1": {"status": "ok"}}, [{"gate": "http", "passed": True}], "/runs/x", 2.0, 3.0,
        )
    ]  # fmt: skip
    store.finish_rollout("ro1", RolloutState.SUCCEEDED, "", 4.0)
    assert store.unfinished_rollouts() == []
    assert store.rollout("ro1") == RolloutRecord(
        "ro1", "run1", "prod", "web", "c1", {"shop": "2.5.0"}, "succeeded", "", 1.0, 4.0
    )
    assert store.rollout("nope") is None


def test_steps_keyed_by_phase_and_index_in_journal_order(store):
    store.start_rollout(rollout())
    store.journal_step(step(index=2, started=5.0))
    store.journal_step(step(index=1, started=1.0))
    store.journal_step(step(phase="rollback", index=1, started=5.0))
    store.journal_step(step(phase="rollback", index=2, started=6.0))
    store.journal_step(step(index=1, state="failed", started=1.0))  # an update, not a new step
    assert [(s.phase, s.index) for s in store.steps("ro1")] == [
        ("deploy", 1),
        ("deploy", 2),
        ("rollback", 1),
        ("rollback", 2),
    ]
    assert store.steps("ro1")[0].state == "failed"
    assert store.steps("other") == []


def test_a_step_needs_its_rollout_and_rollout_ids_are_unique(store):
    with pytest.raises(record.StoreError):
        store.journal_step(step(rollout_id="missing"))
    store.start_rollout(rollout())
    with pytest.raises(record.StoreError):
        store.start_rollout(rollout())
    assert len(store.rollouts()) == 1


def test_finish_rollout_if_running_closes_the_rollout_and_its_running_steps(store):
    store.start_rollout(rollout())
    store.journal_step(step(index=1, state="succeeded", finished=3.0))
    store.journal_step(step(index=2, state="running", started=4.0))
    assert store.finish_rollout_if_running("ro1", "failed", "engine raised: boom", 9.0) is True
    found = store.rollout("ro1")
    assert (found.state, found.reason, found.finished_at) == ("failed", "engine raised: boom", 9.0)
    assert [(s.state, s.finished_at) for s in store.steps("ro1")] == [
        (StepState.SUCCEEDED, 3.0),
        (StepState.INTERRUPTED, 9.0),
    ]
    assert store.finish_rollout_if_running("ro1", "interrupted", "later", 10.0) is False
    assert store.rollout("ro1").state == RolloutState.FAILED
    assert store.finish_rollout_if_running("missing", "failed", "", 1.0) is False


def test_finish_rollout_if_running_leaves_a_finished_rollout_and_its_steps(store):
    store.start_rollout(rollout())
    store.finish_rollout("ro1", "rolled_back", "gate failed", 5.0)
    store.journal_step(step(state="running"))  # written late: not the helper's business
    assert store.finish_rollout_if_running("ro1", "failed", "x", 9.0) is False
    assert store.rollout("ro1").reason == "gate failed"
    assert store.steps("ro1")[0].state == StepState.RUNNING


def test_finish_rollout_refuses_a_non_terminal_or_unknown_state(store):
    store.start_rollout(rollout())
    for bad in ("running", "paused"):
        with pytest.raises(ValueError):
            store.finish_rollout("ro1", bad, "", 2.0)
        with pytest.raises(ValueError):
            store.finish_rollout_if_running("ro1", bad, "", 2.0)
    assert store.rollout("ro1").finished_at is None


def test_rollouts_newest_first_with_limit_and_filter_unfinished_oldest_first(store):
    store.start_rollout(rollout("a", started=1.0))
    store.start_rollout(rollout("b", started=3.0, env="stage"))
    store.start_rollout(rollout("c", started=2.0))
    store.start_rollout(rollout("d", started=2.0))
    assert [r.id for r in store.rollouts()] == ["b", "d", "c", "a"]
    assert [r.id for r in store.rollouts("prod", limit=2)] == ["d", "c"]
    assert [r.id for r in store.rollouts("stage")] == ["b"]
    store.finish_rollout("a", "succeeded", "", 5.0)
    assert [r.id for r in store.unfinished_rollouts()] == ["c", "d", "b"]


# ------------------------------------------------------------------ enums
@pytest.mark.parametrize("state", list(RolloutState))
def test_every_rollout_state_round_trips_as_its_enum(store, state):
    if state is RolloutState.RUNNING:
        store.start_rollout(rollout(state=state))
    else:
        store.start_rollout(rollout(state="running"))
        store.finish_rollout("ro1", state, "why", 2.0)
    assert type(store.rollout("ro1").state) is RolloutState
    assert store.rollout("ro1").state is state
    assert store.rollouts()[0].state is state


@pytest.mark.parametrize("result", list(EnvironmentResult))
def test_every_environment_result_round_trips_as_its_enum(store, result):
    store.start_run(run(result=result))
    assert store.run("run1").result is result
    store.update_environment("prod", 1.0, last_result=result)
    assert store.environment_status("prod").last_result is result
    assert store.environment_statuses()[0].last_result is result


@pytest.mark.parametrize("state", list(StepState))
@pytest.mark.parametrize("phase", list(Phase))
def test_every_step_state_and_phase_round_trips_as_its_enum(store, state, phase):
    store.start_rollout(rollout())
    store.journal_step(step(phase=phase.value, state=state.value))
    [found] = store.steps("ro1")
    assert (found.phase, found.state) == (phase, state)
    assert (type(found.phase), type(found.state)) == (Phase, StepState)


def test_a_stored_value_that_is_no_state_is_a_store_error(backend, store):
    store.start_rollout(rollout())
    backend.execute("UPDATE rollouts SET state = 'paused'")
    with pytest.raises(record.StoreError, match="paused"):
        store.rollout("ro1")


# ------------------------------------------------------------------ environments
def test_an_unknown_environment_was_never_reconciled(store):
    assert store.environment_status("prod") == record.EnvironmentStatus.unknown("prod")
    status = store.environment_status("prod")
    assert (status.suspended, status.last_result, status.last_error) == (False, None, "")
    assert store.environment_statuses() == []


def test_update_environment_sets_only_the_given_fields(store):
    store.update_environment("prod", 5.0, suspended=True)
    status = store.environment_status("prod")
    assert (status.suspended, status.last_result, status.updated_at) == (True, None, 5.0)
    store.update_environment(
        "prod", 6.0, last_result="applied", last_attempted_commit="c2", last_applied_commit="c2"
    )
    store.update_environment("prod", 7.0, last_error="boom")
    assert store.environment_status("prod") == record.EnvironmentStatus(
        "prod", True, "c2", "c2", EnvironmentResult.APPLIED, "boom", 7.0
    )
    store.update_environment("prod", 8.0, suspended=False, last_result=None)
    status = store.environment_status("prod")
    assert (status.suspended, status.last_result, status.last_applied_commit) == (False, None, "c2")
    store.update_environment("dev", 1.0)
    assert [s.environment for s in store.environment_statuses()] == ["dev", "prod"]


def test_update_environment_refuses_unknown_fields_and_results_before_writing(store):
    with pytest.raises(ValueError, match="unknown environment fields"):
        store.update_environment("prod", 6.0, **{"suspended = 0; --": 1})
    with pytest.raises(ValueError):
        store.update_environment("prod", 6.0, last_result="great")
    assert store.environment_statuses() == []


# ------------------------------------------------------------------ quarantine
def test_quarantine_upsert_list_and_clear(store):
    first = QuarantineRecord("prod", "web", "fp1", "c1", "ro1", "gate failed", "pushed", 1.0)
    store.set_quarantine(first)
    store.set_quarantine(QuarantineRecord("prod", "api", "fp", None, None, "", "", 2.0))
    store.set_quarantine(QuarantineRecord("dev", "web", "fp", "c", "r", "", "", 3.0))
    assert store.quarantine("prod", "web") == first
    replaced = QuarantineRecord("prod", "web", "fp2", "c2", "ro2", "again", "conflict", 4.0)
    store.set_quarantine(replaced)
    assert store.quarantine("prod", "web") == replaced
    assert [(q.environment, q.group) for q in store.quarantines()] == [
        ("dev", "web"),
        ("prod", "api"),
        ("prod", "web"),
    ]
    assert [q.group for q in store.quarantines("prod")] == ["api", "web"]
    store.clear_quarantine("prod", "web")
    store.clear_quarantine("prod", "never")
    assert store.quarantine("prod", "web") is None
    assert len(store.quarantines()) == 2


# ------------------------------------------------------------------ meta
def test_meta_roundtrip(store):
    assert store.get_meta("x") is None
    store.set_meta("x", "1")
    store.set_meta("x", "2")
    store.set_meta("y", "")
    assert (store.get_meta("x"), store.get_meta("y")) == ("2", "")


# ------------------------------------------------------------------ sharing
def test_concurrent_writers_from_threads(store):
    def write(n: int) -> None:
        for i in range(50):
            store.record_deployed([deployed(f"h{n}-{i}", "a", at=float(i))])
            store.set_meta(f"k{n}", str(i))

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store.deployed("prod")) == 200
    assert [store.get_meta(f"k{n}") for n in range(4)] == ["49"] * 4


def test_two_stores_on_one_database_see_each_others_writes(backend):
    daemon, cli = backend.open(), backend.open()
    daemon.start_rollout(rollout())
    cli.update_environment("prod", 1.0, suspended=True)
    assert cli.rollout("ro1").state == "running"
    assert daemon.environment_status("prod").suspended is True


# ------------------------------------------------------------------ observed state (issue 12)
def observed(host="h1", app="shop", version="1.0", status="ok", at=5.0, env="prod"):
    return record.ObservedVersion(env, host, app, version, status, "", at)


def test_observations_upsert_per_host_and_app(store):
    store.record_observed([observed(version="1.0", at=5.0), observed("h2", status="unreachable")])
    store.record_observed([observed(version="1.1", at=6.0)])
    found = store.observed("prod")
    assert set(found) == {("h1", "shop"), ("h2", "shop")}
    assert (found[("h1", "shop")].version, found[("h1", "shop")].observed_at) == ("1.1", 6.0)
    assert found[("h2", "shop")].status is ObservationStatus.UNREACHABLE
    assert store.observed("staging") == {}


def test_drift_marks_replace_the_environments_marks(store):
    first = [
        record.DriftMark("prod", "h1", "shop", 10.0, None, False),
        record.DriftMark("prod", "h2", "shop", 11.0, 12.0, True),
    ]
    store.set_drift_marks("prod", first)
    store.set_drift_marks("staging", [record.DriftMark("staging", "s1", "shop", 1.0, None, False)])
    assert store.drift_marks("prod") == {("h1", "shop"): first[0], ("h2", "shop"): first[1]}
    store.set_drift_marks("prod", first[1:])
    assert list(store.drift_marks("prod")) == [("h2", "shop")]
    assert list(store.drift_marks("staging")) == [("s1", "shop")], "other environments kept"


def test_forget_hosts_drops_every_row_of_those_hosts(store):
    store.record_deployed([deployed("h1"), deployed("h2")])
    store.record_observed([observed("h1"), observed("h2")])
    store.set_drift_marks("prod", [record.DriftMark("prod", "h1", "shop", 1.0, None, False)])
    store.forget_hosts("prod", ["h1"])
    assert set(store.recorded_versions("prod")) == {("h2", "shop")}
    assert set(store.observed("prod")) == {("h2", "shop")}
    assert store.drift_marks("prod") == {}


def test_rollout_trigger_and_step_attempts_round_trip(store):
    store.start_run(run())
    base = rollout()
    store.start_rollout(
        RolloutRecord(*[getattr(base, f) for f in ("id", "run_id", "environment", "group",
                      "commit", "apps", "state", "reason", "started_at", "finished_at")],
                      RolloutTrigger.SELF_HEAL)
    )  # fmt: skip
    attempts = [{"attempt": 1, "unreachable": ["h1"]}, {"attempt": 2, "unreachable": []}]
    store.journal_step(step(attempts=attempts))
    assert store.rollout("ro1").trigger is RolloutTrigger.SELF_HEAL
    assert list(store.steps("ro1")[0].attempts) == attempts
    assert rollout().trigger is RolloutTrigger.CHANGE, "the default"
    assert store.steps("ro1")[0].bake_until is None
    store.journal_step(step(attempts=attempts, bake_until=1234.5))
    assert store.steps("ro1")[0].bake_until == 1234.5, "a journalled step gains its bake end"
