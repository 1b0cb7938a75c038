"""One reconcile: fetch -> validate -> plan -> roll out -> record.

Contract: ``Reconciler.reconcile_once()`` never raises for a bad commit, an unreachable remote or
a failed host; it returns a ``ReconcileResult`` and leaves the store telling what happened.
* The source's tip is validated as a whole; an invalid commit is rejected and the last valid
  commit stays in force (``source.last_valid_commit`` in the store's meta).
* A remote that cannot be fetched leaves the last valid commit in force (``source.up`` = 0).
* Per environment: suspended -> planned and reported, nothing changed; in sync -> no playbook;
  otherwise groups roll out in ``after`` order, a group waits when a group it follows failed.
* Only hosts whose playbook run succeeded are recorded as deployed.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import structlog

from reconciler import git_source, planning, rollout, validation
from reconciler.desired_state import DesiredState, EnvironmentDesired, GroupDesired
from reconciler.health_checks import HealthChecker
from reconciler.playbook_runner import PlaybookRunner
from reconciler.settings import Settings
from reconciler.state_store import QuarantineRecord, RunRecord, StateStore

log = structlog.get_logger(__name__)

META_LAST_VALID = "source.last_valid_commit"
META_LAST_INVALID = "source.last_invalid_commit"
META_PROBLEMS = "source.problems"
META_SOURCE_ERROR = "source.error"
META_LAST_FETCH = "source.last_fetch_at"


@dataclass(frozen=True)
class DesiredSnapshot:
    """The desired state in force, and what happened to the source's newest commit."""

    commit: git_source.CommitInfo | None
    root: Path | None
    state: DesiredState | None
    tip: git_source.CommitInfo | None = None
    problems: tuple[validation.Problem, ...] = ()
    source_error: str = ""

    @property
    def tip_rejected(self) -> bool:
        return bool(self.problems)


@dataclass(frozen=True)
class EnvironmentOutcome:
    environment: str
    result: str  # in_sync | applied | failed | suspended
    groups: tuple[rollout.GroupOutcome, ...]


@dataclass(frozen=True)
class ReconcileResult:
    snapshot: DesiredSnapshot
    environments: tuple[EnvironmentOutcome, ...]

    @property
    def failed(self) -> bool:
        return any(e.result not in ("applied", "in_sync", "suspended") for e in self.environments)


def recorded_versions(store: StateStore, environment: str) -> dict[tuple[str, str], str]:
    return {(d.host, d.app): d.version for d in store.deployed(environment)}


class Reconciler:
    def __init__(
        self,
        settings: Settings,
        *,
        source: git_source.GitSource,
        store: StateStore,
        runner: PlaybookRunner,
        checker: HealthChecker | None = None,
        reverter: rollout.Reverter | None = None,
        clock: Callable[[], float] = time.time,
        reporter: rollout.Reporter | None = None,
        cancel: threading.Event | None = None,
    ) -> None:
        self.settings = settings
        self.source = source
        self.store = store
        self.runner = runner
        self.checker = checker or HealthChecker()
        self.reverter = reverter
        self.clock = clock
        self.reporter: rollout.Reporter = reporter or rollout.SilentReporter()
        self.cancel = cancel or threading.Event()
        self._loaded: dict[str, validation.LoadResult] = {}

    # ------------------------------------------------------------------ source
    def _load(self, sha: str) -> tuple[Path, validation.LoadResult]:
        root = self.source.snapshot(sha)
        if sha not in self._loaded:
            if len(self._loaded) >= 4:  # keep the few commits in play, not every commit seen
                self._loaded.pop(next(iter(self._loaded)))
            self._loaded[sha] = validation.load_repository(root, commit=sha)
        return root, self._loaded[sha]

    def refresh(self) -> DesiredSnapshot:
        """Fetch the tip, validate it, and return the desired state in force."""
        tip: git_source.CommitInfo | None = None
        source_error = ""
        try:
            tip = self.source.fetch()
            self.store.set_meta(META_LAST_FETCH, str(self.clock()))
            self.store.set_meta(META_SOURCE_ERROR, "")
        except git_source.SourceError as exc:
            source_error = str(exc)
            self.store.set_meta(META_SOURCE_ERROR, source_error)
            log.warning("source_unavailable", error=source_error)

        problems: tuple[validation.Problem, ...] = ()
        if tip is not None:
            try:
                _, result = self._load(tip.sha)
            except git_source.UnsafeTreeError as exc:
                result = validation.LoadResult(None, (validation.Problem(".", 1, str(exc)),))
            except git_source.SourceError as exc:
                source_error = str(exc)
                result = validation.LoadResult(None, ())
            if result.ok:
                self.store.set_meta(META_LAST_VALID, tip.sha)
                self.store.set_meta(META_PROBLEMS, "[]")
            elif result.problems:
                problems = result.problems
                if self.store.get_meta(META_LAST_INVALID) != tip.sha:
                    log.error(
                        "commit_rejected", commit=tip.sha, problems=[str(p) for p in problems]
                    )
                self.store.set_meta(META_LAST_INVALID, tip.sha)
                self.store.set_meta(META_PROBLEMS, json.dumps([str(p) for p in problems]))

        valid_sha = self.store.get_meta(META_LAST_VALID)
        if valid_sha is None:
            return DesiredSnapshot(None, None, None, tip, problems, source_error)
        try:
            root, result = self._load(valid_sha)
            commit = self.source.commit_info(valid_sha)
        except (git_source.SourceError, ValueError) as exc:
            return DesiredSnapshot(None, None, None, tip, problems, source_error or str(exc))
        self.source.prune_snapshots(keep={valid_sha} | ({tip.sha} if tip else set()))
        return DesiredSnapshot(commit, root, result.state, tip, problems, source_error)

    # --------------------------------------------------------------- reconcile
    def reconcile_once(self, environments: set[str] | None = None) -> ReconcileResult:
        snapshot = self.refresh()
        outcomes: list[EnvironmentOutcome] = []
        if snapshot.state is None or snapshot.commit is None or snapshot.root is None:
            return ReconcileResult(snapshot, ())
        for name, environment in snapshot.state.environments.items():
            if environments and name not in environments:
                continue
            outcomes.append(self.reconcile_environment(environment, snapshot))
        return ReconcileResult(snapshot, tuple(outcomes))

    def reconcile_environment(
        self, environment: EnvironmentDesired, snapshot: DesiredSnapshot
    ) -> EnvironmentOutcome:
        assert snapshot.commit is not None and snapshot.root is not None
        commit = snapshot.commit.sha
        bound = structlog.contextvars.bound_contextvars(
            environment=environment.name, commit=commit[:12]
        )
        with bound:
            status = self.store.environment_status(environment.name)
            plan = planning.plan_environment(
                environment, recorded_versions(self.store, environment.name)
            )
            if status.suspended:
                log.info(
                    "environment_suspended", drifted_groups=sum(not g.in_sync for g in plan.groups)
                )
                self.store.update_environment(
                    environment.name, self.clock(), last_result="suspended"
                )
                return EnvironmentOutcome(
                    environment.name,
                    "suspended",
                    tuple(
                        rollout.GroupOutcome(g.group, "in_sync" if g.in_sync else "suspended")
                        for g in plan.groups
                    ),
                )
            quarantined = {
                g.group: q
                for g in plan.groups
                if (q := self._quarantined(environment.name, environment.groups[g.group]))
                and not g.in_sync
            }
            if plan.in_sync or all(g.in_sync or g.group in quarantined for g in plan.groups):
                if quarantined:
                    return self._quarantine_outcome(environment.name, plan, quarantined)
                self.store.update_environment(
                    environment.name,
                    self.clock(),
                    last_attempted_commit=commit,
                    last_applied_commit=commit,
                    last_result="in_sync",
                    last_error="",
                )
                return EnvironmentOutcome(
                    environment.name,
                    "in_sync",
                    tuple(rollout.GroupOutcome(g.group, "in_sync") for g in plan.groups),
                )
            return self._apply(environment, plan, snapshot)

    def _apply(
        self,
        environment: EnvironmentDesired,
        plan: planning.EnvironmentPlan,
        snapshot: DesiredSnapshot,
    ) -> EnvironmentOutcome:
        assert snapshot.commit is not None and snapshot.root is not None
        commit = snapshot.commit.sha
        run_id = uuid.uuid4().hex
        started = self.clock()
        self.store.start_run(
            RunRecord(run_id, environment.name, commit, started, None, "running", {})
        )
        self.store.update_environment(environment.name, started, last_attempted_commit=commit)
        deployment = rollout.Deployment(snapshot.root, commit, run_id)
        engine = rollout.GroupRollout(
            store=self.store,
            runner=self.runner,
            checker=self.checker,
            execution=self.settings.execution,
            reporter=self.reporter,
            reverter=self.reverter,
            clock=self.clock,
            cancel=self.cancel,
        )
        outcomes: dict[str, rollout.GroupOutcome] = {}
        for group_plan in plan.groups:
            name = group_plan.group
            blocked = [
                d for d in group_plan.after if outcomes.get(d) and outcomes[d].state in BLOCKING
            ]
            quarantined = self._quarantined(environment.name, environment.groups[name])
            if quarantined is not None:
                outcomes[name] = rollout.GroupOutcome(
                    name,
                    "quarantined",
                    quarantined.rollout_id,
                    reason=f"{quarantined.reason} (revert: {quarantined.revert})",
                    revert=quarantined.revert,
                )
            elif group_plan.in_sync:
                outcomes[name] = rollout.GroupOutcome(name, "in_sync")
            elif blocked:
                outcomes[name] = rollout.GroupOutcome(
                    name, "waiting", reason=f"waiting for {', '.join(blocked)}"
                )
            elif self.cancel.is_set():
                outcomes[name] = rollout.GroupOutcome(name, "waiting", reason="superseded")
            else:
                outcomes[name] = engine.run(
                    environment, environment.groups[name], group_plan, deployment
                )
        failed = [o for o in outcomes.values() if o.state in BLOCKING]
        result = _environment_result(outcomes.values())
        finished = self.clock()
        summary = {
            name: {
                "state": o.state,
                "changed": list(o.changed_hosts),
                "failed": dict(o.failed_hosts),
                "reason": o.reason,
                "revert": o.revert,
            }
            for name, o in outcomes.items()
        }
        self.store.finish_run(run_id, result, finished, summary)
        error = "; ".join(f"{o.group}: {o.reason}" for o in failed)
        fields: dict[str, object] = {"last_result": result, "last_error": error}
        if result == "applied":
            fields["last_applied_commit"] = commit
        self.store.update_environment(environment.name, finished, **fields)
        log.info("reconcile_finished", result=result, seconds=round(finished - started, 3))
        return EnvironmentOutcome(environment.name, result, tuple(outcomes.values()))

    def _quarantine_outcome(
        self,
        environment: str,
        plan: planning.EnvironmentPlan,
        quarantined: dict[str, QuarantineRecord],
    ) -> EnvironmentOutcome:
        """Every out-of-sync group is quarantined: report, change nothing, record no run."""
        reasons = "; ".join(f"{g}: revert {q.revert}" for g, q in quarantined.items())
        self.store.update_environment(
            environment, self.clock(), last_result="quarantined", last_error=reasons
        )
        return EnvironmentOutcome(
            environment,
            "quarantined",
            tuple(
                rollout.GroupOutcome(
                    g.group,
                    "quarantined" if g.group in quarantined else "in_sync",
                    quarantined[g.group].rollout_id if g.group in quarantined else None,
                    reason=quarantined[g.group].reason if g.group in quarantined else "",
                    revert=quarantined[g.group].revert if g.group in quarantined else "",
                )
                for g in plan.groups
            ),
        )

    def _quarantined(self, environment: str, group: GroupDesired) -> QuarantineRecord | None:
        """The group's quarantine if its desired versions are still the ones that failed."""
        record = self.store.quarantine(environment, group.name)
        if record is None:
            return None
        if record.fingerprint == rollout.fingerprint(group.apps):
            return record
        self.store.clear_quarantine(environment, group.name)
        log.info("quarantine_lifted", group=group.name, reason="desired versions changed")
        return None


BLOCKING = frozenset({"failed", "rolled_back", "waiting", "quarantined", "superseded"})


def _environment_result(outcomes: Iterable[rollout.GroupOutcome]) -> str:
    states = {o.state for o in outcomes}
    for result in ("failed", "rolled_back", "superseded", "quarantined", "waiting"):
        if result in states:
            return "failed" if result == "waiting" else result
    return "applied"
