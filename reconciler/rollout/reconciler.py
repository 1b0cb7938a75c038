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

import dataclasses
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import structlog

from reconciler.desired import loading as validation
from reconciler.desired.model import DesiredState, EnvironmentDesired, GroupDesired
from reconciler.desired.windows import next_window, windows_open
from reconciler.edges import git as git_source
from reconciler.edges.ansible.runner import PlaybookRunner
from reconciler.edges.gates.checker import HealthChecker
from reconciler.plan import canary as planning
from reconciler.record.sqlite import QuarantineRecord, RolloutRecord, RunRecord, StateStore
from reconciler.rollout import group as rollout
from reconciler.settings import Settings

log = structlog.get_logger(__name__)

META_LAST_VALID = "source.last_valid_commit"
META_LAST_INVALID = "source.last_invalid_commit"
META_PROBLEMS = "source.problems"
META_SOURCE_ERROR = "source.error"
META_LAST_FETCH = "source.last_fetch_at"
META_LAST_SUCCESS = "environment.{environment}.last_success_at"
INTERRUPTED_STEPS = frozenset({"running", "interrupted"})


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
        return any(e.result not in OK_RESULTS for e in self.environments)


def recorded_versions(store: StateStore, environment: str) -> dict[tuple[str, str], str]:
    return store.recorded_versions(environment)


OK_RESULTS = frozenset({"applied", "in_sync", "suspended", "deferred"})


class Reconciler:
    def __init__(
        self,
        settings: Settings,
        *,
        source: git_source.GitReader,
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
        self._pins: Counter[str] = Counter()
        self._pin_lock = threading.Lock()

    # ------------------------------------------------------------------ source
    def _load(self, sha: str) -> tuple[Path, validation.LoadResult]:
        root = self.source.snapshot(sha)
        if sha not in self._loaded:
            if len(self._loaded) >= 4:  # keep the few commits in play, not every commit seen
                self._loaded.pop(next(iter(self._loaded)))
            self._loaded[sha] = validation.load_repository(root, commit=sha)
        return root, self._loaded[sha]

    def refresh(self, *, fetch: bool = True) -> DesiredSnapshot:
        """Fetch the tip, validate it, and return the desired state in force.

        ``fetch=False`` (the daemon backing off from a failing remote) skips the fetch and
        re-evaluates the last fetched tip.
        """
        tip: git_source.CommitInfo | None = None
        source_error = ""
        try:
            if fetch:
                tip = self.source.fetch()
                self.store.set_meta(META_LAST_FETCH, str(self.clock()))
                self.store.set_meta(META_SOURCE_ERROR, "")
            else:
                tip = self.source.last_fetched()
                source_error = self.store.get_meta(META_SOURCE_ERROR) or ""
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
        with self._pin_lock:
            keep = {valid_sha, *self._pins} | ({tip.sha} if tip else set())
        self.source.prune_snapshots(keep=keep)
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
        self,
        environment: EnvironmentDesired,
        snapshot: DesiredSnapshot,
        *,
        cancel: threading.Event | None = None,
        abort: threading.Event | None = None,
    ) -> EnvironmentOutcome:
        assert snapshot.commit is not None and snapshot.root is not None
        commit = snapshot.commit.sha
        bound = structlog.contextvars.bound_contextvars(
            environment=environment.name, commit=commit[:12]
        )
        with bound, self._pinned(commit):
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
            held = self._held_groups(environment, plan)
            if all(g.in_sync or g.group in held for g in plan.groups):
                return self._unchanged_outcome(environment.name, plan, held, commit)
            return self._apply(
                environment,
                plan,
                snapshot,
                cancel=cancel or self.cancel,
                abort=abort,
            )

    def _held_groups(
        self, environment: EnvironmentDesired, plan: planning.EnvironmentPlan
    ) -> dict[str, rollout.GroupOutcome]:
        """Out-of-sync groups that must not change now: quarantined, or outside their window."""
        held: dict[str, rollout.GroupOutcome] = {}
        now = datetime.fromtimestamp(self.clock(), UTC)
        for group_plan in plan.groups:
            if group_plan.in_sync:
                continue
            group = environment.groups[group_plan.group]
            quarantined = self._quarantined(environment.name, group)
            if quarantined is not None:
                held[group.name] = rollout.GroupOutcome(
                    group.name,
                    "quarantined",
                    quarantined.rollout_id,
                    reason=quarantined.reason,
                    revert=quarantined.revert,
                )
            elif not windows_open(group.maintenance_windows, now):
                opens = next_window(group.maintenance_windows, now)
                when = opens.isoformat() if opens else "never"
                held[group.name] = rollout.GroupOutcome(
                    group.name,
                    "outside_window",
                    reason=f"outside its maintenance windows; the next opens {when}",
                )
            elif deferred := [d for d in group.after if d in held]:
                # groups come in ``after`` order: a group following a held one waits with it
                state = (
                    "outside_window"
                    if all(held[d].state == "outside_window" for d in deferred)
                    else "waiting"
                )
                held[group.name] = rollout.GroupOutcome(
                    group.name, state, reason=f"waiting for {', '.join(deferred)}"
                )
        return held

    def _unchanged_outcome(
        self,
        environment: str,
        plan: planning.EnvironmentPlan,
        held: Mapping[str, rollout.GroupOutcome],
        commit: str,
    ) -> EnvironmentOutcome:
        """Nothing to apply now: in sync, or every drifted group is held. No run recorded."""
        groups = tuple(
            held.get(g.group) or rollout.GroupOutcome(g.group, "in_sync") for g in plan.groups
        )
        result = _environment_result(groups)
        if result == "applied":
            result = "in_sync"
            self.store.update_environment(
                environment,
                self.clock(),
                last_attempted_commit=commit,
                last_applied_commit=commit,
                last_result="in_sync",
                last_error="",
            )
            self._record_success(environment)
        else:
            reasons = "; ".join(f"{g.group}: {g.reason}" for g in held.values())
            self.store.update_environment(
                environment, self.clock(), last_result=result, last_error=reasons
            )
        return EnvironmentOutcome(environment, result, groups)

    def _record_success(self, environment: str) -> None:
        self.store.set_meta(META_LAST_SUCCESS.format(environment=environment), str(self.clock()))

    def _apply(
        self,
        environment: EnvironmentDesired,
        plan: planning.EnvironmentPlan,
        snapshot: DesiredSnapshot,
        *,
        cancel: threading.Event,
        abort: threading.Event | None,
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
            cancel=cancel,
            abort=abort,
        )
        held = self._held_groups(environment, plan)

        def decide(group_plan: planning.GroupPlan) -> rollout.GroupOutcome | None:
            """The outcome of a group that does not roll out, or None when it must."""
            name = group_plan.group
            blocked = [d for d in group_plan.after if outcomes[d].state in BLOCKING]
            if name in held:
                return held[name]
            if group_plan.in_sync:
                return rollout.GroupOutcome(name, "in_sync")
            if blocked:
                return rollout.GroupOutcome(
                    name, "waiting", reason=f"waiting for {', '.join(blocked)}"
                )
            if cancel.is_set():
                return rollout.GroupOutcome(name, "waiting", reason="stopped before it started")
            return None

        def roll(group_plan: planning.GroupPlan) -> rollout.GroupOutcome:
            group = environment.groups[group_plan.group]
            with structlog.contextvars.bound_contextvars(
                environment=environment.name, commit=commit[:12]
            ):
                return engine.run(environment, group, group_plan, deployment)

        outcomes: dict[str, rollout.GroupOutcome] = {}
        pending = list(plan.groups)
        limit = self.settings.execution.parallel_groups
        with ThreadPoolExecutor(max_workers=limit, thread_name_prefix="group") as pool:
            running: dict[Future[rollout.GroupOutcome], str] = {}
            while pending or running:
                for group_plan in list(pending):
                    if any(d not in outcomes for d in group_plan.after):
                        continue  # a group it follows is not finished yet
                    decided = decide(group_plan)
                    if decided is None and len(running) >= limit:
                        continue
                    pending.remove(group_plan)
                    if decided is not None:
                        outcomes[group_plan.group] = decided
                    else:
                        running[pool.submit(roll, group_plan)] = group_plan.group
                if not running:
                    if pending and not any(
                        all(d in outcomes for d in g.after) for g in pending
                    ):  # pragma: no cover - validation rejects cycles
                        raise RuntimeError("group ordering cycle")
                    continue
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    outcomes[running.pop(future)] = future.result()
        outcomes = {g.group: outcomes[g.group] for g in plan.groups}
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
            self._record_success(environment.name)
        self.store.update_environment(environment.name, finished, **fields)
        log.info("reconcile_finished", result=result, seconds=round(finished - started, 3))
        return EnvironmentOutcome(environment.name, result, tuple(outcomes.values()))

    # ------------------------------------------------------------------ resume
    def resume_interrupted(self, snapshot: DesiredSnapshot) -> list[RolloutRecord]:
        """Close rollouts a crash or kill left ``running``; make their hosts get redeployed.

        A host of an interrupted step runs its old or its new version. Where the record
        (old) equals what is desired now, the planner would skip the host, so its record is
        forgotten and the next reconcile deploys it through the normal gated path. Where they
        differ the host is planned anyway and keeps its last good version for a rollback.
        Call only while no rollout of this store runs (daemon start, holding the lock).
        """
        resumed = []
        for record in self.store.unfinished_rollouts():
            steps = [s for s in self.store.steps(record.id) if s.state in INTERRUPTED_STEPS]
            hosts = sorted({h for s in steps for h in s.hosts})
            environment = (
                snapshot.state.environments.get(record.environment) if snapshot.state else None
            )
            group = environment.groups.get(record.group) if environment else None
            recorded = recorded_versions(self.store, record.environment)
            forget = [
                (host, app)
                for host in hosts
                for app in record.apps
                if group is None or group.apps.get(app) == recorded.get((host, app))
            ]
            self.store.forget_deployed(record.environment, forget)
            for step in steps:
                self.store.journal_step(dataclasses.replace(step, state="interrupted"))
            where = ", ".join(f"{s.phase} step {s.index}" for s in steps) or "between steps"
            reason = (
                f"interrupted ({where}); hosts {', '.join(hosts) or 'none'} are redeployed by "
                "the next reconcile"
            )
            self.store.finish_rollout(record.id, "interrupted", reason, self.clock())
            for run in self.store.runs(record.environment, limit=50):
                if run.id == record.run_id and run.finished_at is None:
                    self.store.finish_run(run.id, "interrupted", self.clock(), {})
            log.warning(
                "rollout_resumed",
                rollout_id=record.id,
                environment=record.environment,
                group=record.group,
                hosts=hosts,
                forgotten=len(forget),
            )
            resumed.append(record)
        return resumed

    @contextmanager
    def _pinned(self, sha: str) -> Iterator[None]:
        """Keep the commit's snapshot on disk while a reconcile uses it."""
        with self._pin_lock:
            self._pins[sha] += 1
        try:
            yield
        finally:
            with self._pin_lock:
                self._pins[sha] -= 1
                if not self._pins[sha]:
                    del self._pins[sha]

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


BLOCKING = frozenset(
    {
        "failed",
        "rolled_back",
        "waiting",
        "quarantined",
        "superseded",
        "interrupted",
        "outside_window",
    }
)


def _environment_result(outcomes: Iterable[rollout.GroupOutcome]) -> str:
    states = {o.state for o in outcomes}
    for state, result in (
        ("failed", "failed"),
        ("rolled_back", "rolled_back"),
        ("interrupted", "interrupted"),
        ("superseded", "superseded"),
        ("quarantined", "quarantined"),
        ("waiting", "failed"),
        ("outside_window", "deferred"),
    ):
        if state in states:
            return result
    return "applied"
