"""What the rollout engine and the reconcile tell the event log, with our fakes (runner, checker,
reverter, sink) and the real SQLite store: order, kinds, summaries and details."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.plan import canary
from reconciler.record.sqlite import SqliteStateStore
from reconciler.rollout.group import Deployment, GroupRollout
from reconciler.rollout.ports import Adapters, StopRequest
from reconciler.settings import ExecutionSettings
from reconciler.states import EventKind, PushStatus, Severity, StopReason
from reconciler.testing.fakes import FakeChecker, FakeReverter, FakeRunner, RecordingSink
from tests.rollout.test_group_rollout import environment, group, on_v1


@pytest.fixture
def store(tmp_path):
    return SqliteStateStore(tmp_path / "state.db")


def roll(store, g, *, checker=None, reverter=None, runner=None, cancel=None, recorded=None):
    sink = RecordingSink()
    adapters = Adapters(
        store, runner or FakeRunner(), checker or FakeChecker(), reverter, events=sink
    )
    engine = GroupRollout(
        adapters, ExecutionSettings(), environment(g), g,
        Deployment(Path("/repo"), "c0ffee" * 6 + "ab", "r1"), cancel=cancel,
    )  # fmt: skip
    outcome = engine.run(canary.plan_group("prod", g, recorded or on_v1()))
    return outcome, sink


def test_a_good_bump_tells_start_each_step_and_success(store):
    outcome, sink = roll(store, group("2"))
    assert sink.kinds() == ["rollout_started"] + ["step_finished"] * 3 + ["rollout_succeeded"]
    started = sink.events[0]
    assert (started.environment, started.group, started.rollout_id) == (
        "prod", "web", outcome.rollout_id,
    )  # fmt: skip
    assert started.details["versions"] == {"shop": {"from": ["1"], "to": "2"}}
    assert started.summary == "prod/web: rolling out shop 1 -> 2 on 10 host(s) in 3 step(s)"
    steps = sink.of(EventKind.STEP_FINISHED)
    assert [(s.details["step"], s.details["steps"], len(s.details["hosts"])) for s in steps] == [
        (1, 3, 1), (2, 3, 4), (3, 3, 5),
    ]  # fmt: skip
    assert "deploy step 1/3 (10%) finished on" in steps[0].summary
    done = sink.events[-1]
    assert done.severity is Severity.INFO and done.details["changed"] == list(outcome.changed_hosts)
    assert done.summary == "prod/web: shop 1 -> 2 rolled out to 10 host(s)"


def test_a_bad_version_tells_gate_rollback_revert_and_quarantine_in_order(store):
    reverter = FakeReverter()
    outcome, sink = roll(store, group("2"), checker=FakeChecker("2"), reverter=reverter)
    assert sink.kinds() == [
        "rollout_started", "step_finished", "gate_failed", "step_finished",
        "rollout_rolled_back", "revert_pushed", "quarantine_set",
    ]  # fmt: skip
    canary_host = reverter.calls and sink.events[1].details["hosts"][0]
    gate = sink.of(EventKind.GATE_FAILED)[0]
    assert gate.details["host"] == canary_host and gate.details["detail"] == "status 500"
    assert gate.details["version"] == "2" and gate.details["checkpoint"] == "after_step"
    assert f"gate http failed on {canary_host} after step (deploy step 1/3)" in gate.summary
    rollback = sink.events[3]
    assert rollback.details["phase"] == "rollback" and rollback.details["apps"] == {"shop": "1"}
    rolled = sink.of(EventKind.ROLLOUT_ROLLED_BACK)[0]
    assert rolled.summary.startswith("prod/web: shop 2 -> 1 rolled back: step 1: gate http")
    assert rolled.details["reason"] == outcome.reason
    pushed = sink.of(EventKind.REVERT_PUSHED)[0]
    assert pushed.details["revert_commit"] == "feedface" * 5
    assert pushed.details["restore"] == {"shop": "1"} and pushed.details["rolled_back"] is True
    assert pushed.commit == "c0ffee" * 6 + "ab"


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (PushStatus.DISABLED, "revert_awaiting_human"),
        (PushStatus.CONFLICT, "revert_push_failed"),
        (PushStatus.ERROR, "revert_push_failed"),
    ],
)
def test_a_revert_that_is_not_pushed_says_so(store, status, kind):
    _, sink = roll(store, group("2"), checker=FakeChecker("2"), reverter=FakeReverter(status))
    assert kind in sink.kinds() and "revert_pushed" not in sink.kinds()
    assert sink.of(EventKind(kind))[0].severity is Severity.ERROR


def test_no_reverter_awaits_a_human(store):
    _, sink = roll(store, group("2"), checker=FakeChecker("2"))
    [event] = sink.of(EventKind.REVERT_AWAITING_HUMAN)
    assert "no Git source to push to" in event.summary


def test_a_superseded_rollout_tells_it(store):
    cancel = StopRequest()
    runner = FakeRunner(before=lambda run: cancel.request(StopReason.SUPERSEDED))
    _, sink = roll(store, group("2"), runner=runner, cancel=cancel)
    assert sink.kinds()[-1] == "rollout_superseded"
    assert sink.kinds().count("rollout_superseded") == 1


def test_a_step_with_nothing_to_do_keeps_k_of_n_true(store):
    """Step 2's hosts already run the new version: steps 1 and 3 run, told as 1/3 and 3/3."""
    g = group("2")
    step_two = canary.plan_group("prod", g, on_v1()).steps[1].hosts
    recorded = {**on_v1(), **{(h, "shop"): "2" for h in step_two}}
    _, sink = roll(store, g, recorded=recorded)
    steps = sink.of(EventKind.STEP_FINISHED)
    assert [(s.details["step"], s.details["steps"]) for s in steps] == [(1, 3), (3, 3)]
    assert "deploy step 3/3 (100%) finished" in steps[1].summary
