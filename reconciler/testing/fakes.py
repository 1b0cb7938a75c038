"""Small fakes of our own Protocols, for fast logic tests of the rollout engine and the reconcile.

Each fake implements exactly one Protocol of ``rollout.ports`` or ``record`` (mypy checks the
assignments at the end of this module, so a fake cannot drift from the Protocol it stands in
for). The real adapters are tested against the real things (ansible-runner, HTTP servers, Git,
SQLite); end-to-end tiers use no fake at all.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from reconciler.desired.messages import RevertRequest
from reconciler.desired.schema import HealthCheck
from reconciler.edges.ansible import HostResult, PlaybookRun, Runner, RunResult
from reconciler.edges.gates import GateChecker, GateResult, GateTarget
from reconciler.edges.git import PushResult
from reconciler.record import Event, EventSink
from reconciler.rollout.ports import LeaseCheck, Reverter, SourceStage
from reconciler.source.refresh import DesiredSnapshot
from reconciler.states import ChangeKind, EventKind, HostStatus, PushStatus, RunOutcome, Severity


class FakeRunner:
    """Every host succeeds, except ``failing`` hosts (only for ``failing_versions`` when
    given: then a rollback to another version succeeds on them). With ``reports`` it emits, for
    every host that succeeds, the event the shipped role's helper gives at the end of each
    app's deploy (``runner_on_ok`` of a ``command`` task of role ``deploy_app`` whose stdout
    carries the app's fact: that version, running)."""

    def __init__(
        self,
        failing: set[str] | frozenset[str] = frozenset(),
        *,
        failing_versions: set[str] | None = None,
        unreachable: set[str] | frozenset[str] = frozenset(),
        before: Callable[[PlaybookRun], None] | None = None,
        reports: bool = False,
    ) -> None:
        self.reports = reports
        self.failing = set(failing)
        self.failing_versions = failing_versions
        self.unreachable = set(unreachable)
        self.before = before
        self.calls: list[tuple[tuple[str, ...], dict[str, str]]] = []
        self.runs_dir = Path("/nonexistent/runs")
        self._lock = threading.Lock()

    def run(
        self,
        run: PlaybookRun,
        *,
        cancel: threading.Event | None = None,
        on_event: Callable[[dict[str, Any]], None] | None = None,
    ) -> RunResult:
        if self.before is not None:
            self.before(run)
        apps = dict(run.extra_vars["reconciler_apps"])
        with self._lock:
            self.calls.append((run.hosts, apps))
        versions_fail = self.failing_versions is None or bool(
            set(apps.values()) & self.failing_versions
        )
        hosts = {}
        for host in run.hosts:
            if host in self.unreachable:
                hosts[host] = HostResult(host, HostStatus.UNREACHABLE, False, "unreachable")
            elif host in self.failing and versions_fail:
                hosts[host] = HostResult(host, HostStatus.FAILED, True, "boom")
            else:
                hosts[host] = HostResult(host, HostStatus.OK, True, "")
        if self.reports and on_event is not None:
            for host in (h for h, r in hosts.items() if r.status is HostStatus.OK):
                for app, version in apps.items():
                    on_event(_report(host, app, version))
        ok = all(r.status is HostStatus.OK for r in hosts.values())
        outcome = RunOutcome.SUCCESSFUL if ok else RunOutcome.FAILED
        return RunResult("fake", outcome, 0, hosts, 0.0, Path("/nonexistent"), "")


def _report(host: str, app: str, version: str) -> dict[str, Any]:
    fact = {"app": app, "version": version, "current": version, "running": True}
    stdout = json.dumps({"changed": True, "fact": {**fact, "state": "running"}})
    data = {
        "host": host,
        "role": "deploy_app",
        "resolved_action": "ansible.builtin.command",
        "res": {"changed": True, "rc": 0, "stdout": stdout},
    }
    return {"event": "runner_on_ok", "event_data": data}


class FakeChecker:
    """Gates fail for targets whose version is ``bad_version``; every call is recorded."""

    def __init__(
        self,
        bad_version: str | None = None,
        *,
        on_call: Callable[[int], None] | None = None,
        verdicts: Callable[[int, GateTarget], bool] | None = None,
    ) -> None:
        self.bad_version = bad_version
        self.on_call = on_call
        self.verdicts = verdicts
        self.calls: list[list[tuple[str, str]]] = []

    def evaluate(
        self,
        checks: Sequence[HealthCheck],
        targets: Sequence[GateTarget],
        *,
        environment: str = "",
        group: str = "",
        cancel: threading.Event | None = None,
    ) -> list[GateResult]:
        self.calls.append([(t.host.name, t.version) for t in targets])
        number = len(self.calls)
        if self.on_call is not None:
            self.on_call(number)
        results = []
        for t in targets:
            passed = self.verdicts(number, t) if self.verdicts else t.version != self.bad_version
            detail = "status 200" if passed else "status 500"
            results.append(
                GateResult("http", "http", t.host.name, t.app, passed, False, 1, detail, 0.0)
            )
        return results


class FakeReverter:
    """Records revert requests; answers ``status`` (pushed by default) with a fake sha."""

    def __init__(self, status: PushStatus = PushStatus.PUSHED) -> None:
        self.status = status
        self.calls: list[RevertRequest] = []

    def revert_rollout(self, request: RevertRequest) -> PushResult:
        self.calls.append(request)
        sha = "feedface" * 5 if self.status is PushStatus.PUSHED else None
        return PushResult(
            status=self.status, kind=ChangeKind.REVERT, sha=sha, attempts=1, detail="revert abc"
        )


class FakeLease:
    """The lease of the environment rolled out: held while ``held`` is True (a test flips it);
    ``on_confirm`` is called at each question (to see when it is asked)."""

    def __init__(self, held: bool = True, on_confirm: Callable[[], None] | None = None) -> None:
        self.held = held
        self.on_confirm = on_confirm
        self.confirmations = 0

    def confirm(self) -> bool:
        self.confirmations += 1
        if self.on_confirm is not None:
            self.on_confirm()
        return self.held


class StaticSource:
    """A source stage whose desired state is a fixed snapshot (refreshes return it)."""

    def __init__(self, snapshot: DesiredSnapshot) -> None:
        self.snapshot = snapshot
        self.refreshes = 0
        self.pins: list[str] = []

    @property
    def current(self) -> DesiredSnapshot | None:
        return self.snapshot

    def refresh(self, *, fetch: bool = True) -> DesiredSnapshot:
        self.refreshes += 1
        return self.snapshot

    @contextmanager
    def pinned(self, sha: str) -> Iterator[None]:
        self.pins.append(sha)
        yield


class RecordingSink:
    """An ``EventSink`` that keeps what is emitted, in order, as ``Event`` records (ids 1, 2,
    ...; severity defaulted as the real sink does)."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._lock = threading.Lock()

    def emit(
        self,
        kind: EventKind,
        *,
        summary: str,
        environment: str | None = None,
        group: str | None = None,
        rollout_id: str | None = None,
        commit: str | None = None,
        details: Mapping[str, Any] | None = None,
        severity: Severity | None = None,
    ) -> None:
        from reconciler.record.events import SEVERITY

        with self._lock:
            self.events.append(
                Event(
                    len(self.events) + 1,
                    0.0,
                    kind,
                    severity or SEVERITY[kind],
                    summary,
                    environment,
                    group,
                    rollout_id,
                    commit,
                    dict(details or {}),
                )
            )

    def kinds(self) -> list[str]:
        return [str(e.kind) for e in self.events]

    def of(self, kind: EventKind) -> list[Event]:
        return [e for e in self.events if e.kind is kind]


# Checked by mypy: each fake satisfies the Protocol it stands in for.
_runner: Runner = FakeRunner()
_checker: GateChecker = FakeChecker()
_reverter: Reverter = FakeReverter()
_lease: LeaseCheck = FakeLease()
_source: SourceStage = StaticSource(DesiredSnapshot(None, None, None))
_sink: EventSink = RecordingSink()
