"""The long-running service: ``reconciler run``.

Contract:
* One daemon per state dir (``service.leadership.StateDirLock``).
* Triggers (``service.triggers``: poll, resync, observation, a watcher on a local
  repository), webhooks and ``POST /api/v1/sync`` only *request* a sync (the observation, and
  ``POST /api/v1/observe``, one that looks at every host first). The source loop coalesces
  requests: one fetch + validation serves every request that arrived before it started, so a
  burst of pushes becomes one reconcile of the newest commit.
* Environments reconcile in a bounded pool, at most one reconcile per environment. A request for
  a busy environment is remembered and runs when it finishes; if the busy environment's desired
  state changed, its rollout is superseded after the running step. The daemon's own revert
  commit does not supersede anything: it becomes the commit in force and the desired state of
  the running reconcile.
* A remote that fails is retried with exponential backoff (poll requests skip the fetch until
  then; explicit requests always fetch); the last valid desired state stays in force.
* A state store that cannot be reached (``StoreUnavailable``) ends the reconcile it interrupts
  with a warning; the daemon keeps running and the next cycle tries again. At start the store
  must be reachable (else ``run`` exits 2 and systemd restarts it).
* SIGTERM/SIGINT: stop taking work, let running playbook steps finish (``shutdown_grace``), then
  kill what still runs; the journal tells the next start what to resume. Exit 0.
* Start: raise the soft open-files limit to the hard one (``service.resources``: the API's
  connections must never take the descriptors Git and Ansible need), kill orphans of a killed
  predecessor, resume rollouts the journal shows unfinished.
* It is the API's ``Control``: status, environments and metrics are rendered from the status
  read model (``report.status``) over the desired state in force; ``event_feed`` is the event
  log (``report.events.EventLog``) its stages emit to.
* Events: suspending and resuming an environment are told (``environment_suspended``,
  ``_resumed``). The event consumers (notifications, commit statuses: ``report.delivery``)
  start with the daemon and stop after its rollouts; the event log is closed then, which ends
  the API's event streams cleanly, before the API stops.
* Several replicas (PostgreSQL, ``service.replication``): an environment is reconciled only
  by the replica holding its lease, through a store whose writes carry the lease's fencing
  token; start resumes nothing, each lease gained resumes that environment's unfinished
  rollouts; a lease lost cancels its reconcile (its writes are refused anyway); requests
  are also sent to the other replicas; a refused write (``Fenced``) ends the reconcile
  quietly: this replica no longer owns it.

Size: over 400 lines: one object is the API's ``Control`` (status, environments, sync
requests and their waits, suspension, events) and owns the whole lifecycle (start, source
loop, environment dispatch, shutdown), which share its state and lock; split, they would
share their privates.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import structlog

from reconciler.desired.model import EnvironmentDesired
from reconciler.edges.ansible import process_tree
from reconciler.errors import ReconcilerError
from reconciler.plan.outcomes import EnvironmentOutcome
from reconciler.record import Fenced, Lease, StateStore, StoreUnavailable
from reconciler.report import status as read_model
from reconciler.report.delivery import Count, EventWorker
from reconciler.report.events import EventLog
from reconciler.report.metrics import Metrics
from reconciler.report.webhook_log import WebhookLog
from reconciler.rollout.ports import StopRequest
from reconciler.rollout.reconciler import Reconciler
from reconciler.service import discovery, resources, systemd_notify
from reconciler.service.leadership import StateDirLock
from reconciler.service.replication import FROM_REPLICA, Replication
from reconciler.service.triggers import Triggers
from reconciler.settings import Settings
from reconciler.source.refresh import DesiredSnapshot
from reconciler.states import EnvironmentResult, EventKind, StopReason
from reconciler.support.backoff import Backoff

log = structlog.get_logger(__name__)

MAX_BACKOFF_S = 600.0


@dataclass
class _EnvironmentRun:
    environment: EnvironmentDesired
    commit: str
    started: float
    cancel: StopRequest = field(default_factory=StopRequest)
    abort: threading.Event = field(default_factory=threading.Event)
    future: Future[None] | None = None
    observe: bool = False


@dataclass(frozen=True)
class _Finished:
    """The last finished reconcile of an environment (for ``sync --wait``)."""

    started: float  # monotonic
    outcome: EnvironmentOutcome | None


class Daemon:
    """Owns the triggers, the environment pool and the shutdown sequence."""

    def __init__(
        self,
        settings: Settings,
        reconciler: Reconciler,
        *,
        stopping: threading.Event | None = None,
        events: EventLog | None = None,
        consumers: Sequence[EventWorker] = (),
        replication: Replication | None = None,
    ) -> None:
        self.settings = settings
        self.replication = replication
        self.reconciler = reconciler
        self.store: StateStore = reconciler.store
        self.journal = self.store
        self.metrics = Metrics(self.status)
        self.webhooks = WebhookLog()
        self.events = events or EventLog(self.store)
        self.consumers = list(consumers)
        reconciler.adapters = dataclasses.replace(
            reconciler.adapters, reporter=self.metrics, events=self.events
        )
        self.lock = StateDirLock(settings.lock_path)
        self.started_at = time.time()
        self.ready = threading.Event()
        self.stopping = stopping if stopping is not None else threading.Event()
        self.url: str | None = None
        self._wake = threading.Event()
        self._state = threading.Condition()
        self._requested: set[str] | None = set()  # None: every environment
        self._forced_fetch = False
        self._observe: set[str] | None = set()  # None: every environment
        self._running: dict[str, _EnvironmentRun] = {}
        self._pending: set[str] = set()
        self._finished: dict[str, _Finished] = {}
        self._failures = 0
        self._backoff_until = 0.0
        self._heartbeat = time.monotonic()
        self._pool = ThreadPoolExecutor(
            settings.daemon.parallel_environments, thread_name_prefix="environment"
        )
        self._triggers = Triggers(settings, self.request_sync, self.stopping)
        if replication is not None:
            replication.ownership.busy = lambda name: name in self.running()
            self.metrics.owner_gauge.owners = replication.owners

    @property
    def snapshot(self) -> DesiredSnapshot | None:
        """The desired state in force (the source stage's last refresh)."""
        return self.reconciler.source.current

    # ------------------------------------------------------------------ the API's Control
    def status(self) -> read_model.StatusView:
        return read_model.build(
            self.store,
            self.snapshot,
            url=self.settings.source.url,
            branch=self.settings.source.branch,
            daemon=self.describe(),
            now=time.time(),
            owners=self._owners(),
        )

    def environments(
        self, only: str | None = None, with_hosts: bool = False
    ) -> list[read_model.EnvironmentDetail]:
        return read_model.environment_views(
            self.store,
            self.snapshot,
            reconciling=self.running(),
            only=only,
            with_hosts=with_hosts,
            now=time.time(),
            owners=self._owners(),
        )

    def _owners(self) -> read_model.Owners:
        """Who owns what: the leases table (replicas), else this daemon owns everything
        (SQLite: the state-dir flock; named as a replica would be)."""
        if self.replication is not None:
            return read_model.lease_owners(self.replication.ownership.leases)
        name = self.settings.state.replica or f"{os.uname().nodename}-{os.getpid()}"
        return read_model.sole_owner(name)

    def in_force(self) -> list[str]:
        snapshot = self.snapshot
        return sorted(snapshot.state.environments) if snapshot and snapshot.state else []

    def known(self, environment: str) -> bool:
        return environment in self.in_force() or any(
            s.environment == environment for s in self.store.environment_statuses()
        )

    @property
    def event_feed(self) -> EventLog:
        return self.events

    def set_suspended(self, environment: str, suspended: bool) -> None:
        was = self.store.environment_status(environment).suspended
        self.store.update_environment(environment, time.time(), suspended=suspended)
        log.info(
            "environment_suspended" if suspended else "environment_resumed",
            environment=environment,
        )
        if was != suspended:
            self.events.emit(
                EventKind.ENVIRONMENT_SUSPENDED if suspended else EventKind.ENVIRONMENT_RESUMED,
                summary=f"{environment}: "
                + ("suspended: diffed and reported, not changed" if suspended else "resumed"),
                environment=environment,
            )
        if not suspended:
            self.request_sync(environment, reason="resume", fetch=False)

    def request_sync(
        self,
        environment: str | None = None,
        *,
        reason: str,
        fetch: bool = True,
        observe: bool = False,
    ) -> float:
        """Ask for a fetch + reconcile (``observe``: looking at every host first); returns the
        monotonic time of the request."""
        now = time.monotonic()
        with self._state:
            if environment is None:
                self._requested = None
            elif self._requested is not None:
                self._requested.add(environment)
            if observe and environment is None:
                self._observe = None
            elif observe and self._observe is not None:
                self._observe.add(environment)  # type: ignore[arg-type]
            self._forced_fetch = self._forced_fetch or (fetch and reason != "poll")
        log.debug("sync_requested", reason=reason, environment=environment)
        self._wake.set()
        if self.replication is not None and reason not in ("poll", "start", "lease"):
            self.replication.notify(environment, reason)  # the owner may be another replica
        return now

    def wait_finished(
        self, environments: list[str], since: float, timeout: float
    ) -> dict[str, EnvironmentOutcome | None]:
        """Wait until each environment finished a reconcile that started after ``since``."""
        deadline = time.monotonic() + timeout

        def finished(name: str) -> _Finished | None:
            f = self._finished.get(name)
            return f if f is not None and f.started >= since else None

        with self._state:
            while not self.stopping.is_set() and not all(finished(e) for e in environments):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._state.wait(min(left, 1.0))
            return {e: (f.outcome if (f := finished(e)) else None) for e in environments}

    def describe(self) -> read_model.DaemonView:
        return read_model.DaemonView(
            pid=os.getpid(),
            started_at=self.started_at,
            ready=self.ready.is_set(),
            stopping=self.stopping.is_set(),
            running=self.running(),
            source_failures=self._failures,
            source_retry_in=max(0.0, round(self._backoff_until - time.monotonic(), 1)),
            webhooks=self.webhooks.views(),
        )

    def running(self) -> dict[str, str]:
        with self._state:
            return {name: run.commit for name, run in self._running.items()}

    @property
    def alive(self) -> bool:
        """The source loop still turns (what /healthz and the watchdog report)."""
        return time.monotonic() - self._heartbeat < max(120.0, 4 * self._tick())

    # ------------------------------------------------------------------ main loop
    def run(self, serve: Callable[[Daemon], tuple[str, Callable[[], None]]] | None = None) -> int:
        """Run until SIGTERM/SIGINT; ``serve`` starts the API: returns its URL and stop."""
        open_files = resources.raise_open_files()
        self.lock.acquire()
        stop_api: Callable[[], None] = lambda: None  # noqa: E731
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            killed = process_tree.kill_orphans(str(self.reconciler.adapters.runner.runs_dir))
            if killed:
                log.warning("orphans_killed", pids=killed)
            self.events.prune()
            counters: dict[str, Count] = {
                "notification": self.metrics.notification,
                "commit_status": self.metrics.commit_status,
            }
            for consumer in self.consumers:
                consumer.start(self.events, counters.get(consumer.metric))
            if serve is not None:
                self.url, stop_api = serve(self)
                discovery.write(self.discovery_path, self.url, self.started_at)
            snapshot = self.reconciler.refresh()
            self._note_source(snapshot)
            resumed = []
            if self.replication is None:
                resumed = self.reconciler.resume_interrupted(snapshot)
            else:  # each lease gained resumes its environment
                self.replication.start(
                    self.in_force,
                    self._lease_gained,
                    self._lease_lost,
                    self._replica_request,
                    self._lease_trusted,
                )
            self._triggers.start()
            self.ready.set()
            systemd_notify.ready()
            systemd_notify.status(self._status_line())
            log.info(
                "daemon_started",
                url=self.url,
                resumed=[r.id for r in resumed],
                open_files_limit=open_files,
            )
            self.request_sync(reason="start")
            self._loop()
        finally:
            self._shutdown()
            stop_api()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            discovery.remove(self.discovery_path)
            self.lock.release()
        log.info("daemon_stopped")
        return 0

    def _tick(self) -> float:
        interval = systemd_notify.watchdog_interval()
        return min(1.0, interval / 2) if interval else 1.0

    def _loop(self) -> None:
        debounce = 0.1
        while not self.stopping.is_set():
            self._heartbeat = time.monotonic()
            systemd_notify.watchdog()
            if not self._wake.wait(self._tick()):
                continue
            if self.stopping.is_set():
                break
            self.stopping.wait(debounce)  # let a burst of triggers land in this one cycle
            self._wake.clear()
            with self._state:
                requested, self._requested = self._requested, set()
                forced, self._forced_fetch = self._forced_fetch, False
                observe, self._observe = self._observe, set()
            self._cycle(requested, forced, observe)

    def _cycle(
        self, requested: set[str] | None, forced: bool, observe: set[str] | None = None
    ) -> None:
        fetch = forced or time.monotonic() >= self._backoff_until
        try:
            snapshot = self.reconciler.refresh(fetch=fetch)
        except Exception:  # never let one bad cycle end the daemon
            log.exception("refresh_failed")
            return
        if fetch:
            self._note_source(snapshot)
        systemd_notify.status(self._status_line())
        if snapshot.state is None or snapshot.commit is None:
            return
        for name, environment in snapshot.state.environments.items():
            if self.replication is not None and self.replication.token(name) is None:
                continue  # another replica's, or ours not trusted now (``_lease_trusted``)
            if requested is None or name in requested:
                look = observe is None or name in (observe or set())
                self._dispatch(name, environment, snapshot, observe=look)

    def _note_source(self, snapshot: DesiredSnapshot) -> None:
        if snapshot.store_error:
            return  # the store, not the source, failed: no fetch backoff (the lease path waits)
        if snapshot.source_error:
            self._failures += 1
            delay = Backoff(self.settings.source.poll_interval, MAX_BACKOFF_S).delay(self._failures)
            self._backoff_until = time.monotonic() + delay
            log.warning("source_backoff", failures=self._failures, retry_in=round(delay, 1))
        else:
            if self._failures:
                log.info("source_recovered", after_failures=self._failures)
            self._failures = 0
            self._backoff_until = 0.0

    # ------------------------------------------------------------------ environments
    def _dispatch(
        self,
        name: str,
        environment: EnvironmentDesired,
        snapshot: DesiredSnapshot,
        *,
        observe: bool = False,
    ) -> None:
        assert snapshot.commit is not None
        with self._state:
            if self.stopping.is_set():
                return
            busy = self._running.get(name)
            if busy is not None:
                self._pending.add(name)
                if observe and self._observe is not None:
                    self._observe.add(name)  # when the pending reconcile runs
                if busy.environment != environment and not busy.cancel.is_set():
                    log.info("rollout_superseding", environment=name, by=snapshot.commit.sha[:12])
                    busy.cancel.request(StopReason.SUPERSEDED)
                return
            run = _EnvironmentRun(environment, snapshot.commit.sha, time.monotonic())
            run.observe = observe
            self._running[name] = run
            run.future = self._pool.submit(self._reconcile, name, run, snapshot)

    def _reconcile(self, name: str, run: _EnvironmentRun, snapshot: DesiredSnapshot) -> None:
        outcome: EnvironmentOutcome | None = None

        def adopted(new: DesiredSnapshot) -> None:
            """Our own revert is in force: it is this reconcile's desired state now."""
            found = new.state.environments.get(name) if new.state else None
            if found is not None:
                with self._state:
                    run.environment = found

        try:
            reconciler = self._reconciler(name)
            if reconciler is None:
                return
            outcome = reconciler.reconcile_environment(
                run.environment,
                snapshot,
                cancel=run.cancel,
                abort=run.abort,
                on_revert=adopted,
                observe=run.observe,
            )
        except StoreUnavailable as exc:  # nothing can be recorded now; the next cycle retries
            log.warning("store_unavailable", environment=name, error=str(exc), retry="next cycle")
        except Fenced as exc:  # another replica holds the lease now: stand down, write nothing
            log.warning("reconcile_fenced", environment=name, error=str(exc))
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            log.exception("reconcile_crashed", environment=name)
            try:
                self.store.update_environment(
                    name, time.time(), last_result=EnvironmentResult.ERROR, last_error=error[:500]
                )
            except ReconcilerError as failed:  # the store itself: logged, the daemon goes on
                log.warning("reconcile_error_not_recorded", environment=name, error=str(failed))
        finally:
            with self._state:
                self._running.pop(name, None)
                self._finished[name] = _Finished(run.started, outcome)
                again = name in self._pending and not self.stopping.is_set()
                self._pending.discard(name)
                self._state.notify_all()
            if again:
                current = self.snapshot
                if current and current.state and name in current.state.environments:
                    with self._state:
                        look = self._observe is not None and name in self._observe
                        if look and self._observe is not None:
                            self._observe.discard(name)
                    self._dispatch(name, current.state.environments[name], current, observe=look)

    # ------------------------------------------------------------------ replicas
    def _reconciler(self, name: str) -> Reconciler | None:
        """The reconciler to run ``name`` with: fenced by its lease's token (replicas)."""
        if self.replication is None:
            return self.reconciler
        token = self.replication.token(name)
        if token is None:
            log.info("reconcile_skipped", environment=name, reason="not this replica's")
            return None
        return self.reconciler.with_store(
            self.replication.fenced(token), self.replication.lease(name, token)
        )

    def _lease_gained(self, lease: Lease) -> None:
        self.metrics.lease_transitions.labels(lease.environment, "acquired").inc()
        snapshot = self.snapshot
        if snapshot is not None and lease.environment not in self.running():
            assert self.replication is not None
            fenced = self.replication.fenced(lease.token)
            check = self.replication.lease(lease.environment, lease.token)
            resumed = self.reconciler.with_store(fenced, check).resume_interrupted(
                snapshot, only=lease.environment
            )
            if resumed:
                log.info("takeover_resumed", environment=lease.environment, rollouts=len(resumed))

    def _lease_trusted(self, name: str) -> None:
        """The lease of ``name`` gives a token now (gained, or renewed after an outage):
        reconcile it, as a request skipped while it gave none is owed."""
        self.request_sync(name, reason="lease", fetch=False)

    def _lease_lost(self, name: str) -> None:
        self.metrics.lease_transitions.labels(name, "lost").inc()
        with self._state:
            run = self._running.get(name)
        if run is not None:
            run.cancel.request(StopReason.INTERRUPTED)
            run.abort.set()

    def _replica_request(self, environment: str | None, reason: str) -> None:
        log.debug("sync_from_replica", environment=environment, reason=reason)
        self.request_sync(environment, reason=FROM_REPLICA)

    # ------------------------------------------------------------------ lifecycle
    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if not self.stopping.is_set():
            log.info("shutdown_requested", signal=signal.Signals(signum).name)
        self.stopping.set()
        self._wake.set()

    def _shutdown(self) -> None:
        self.stopping.set()
        systemd_notify.stopping()
        self._triggers.stop()
        with self._state:
            runs = dict(self._running)
            self._pending.clear()
        for run in runs.values():
            run.cancel.request(StopReason.INTERRUPTED)
        grace = self.settings.daemon.shutdown_grace
        deadline = time.monotonic() + grace
        for name, run in runs.items():
            if run.future is None:
                continue
            try:
                run.future.result(timeout=max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                log.warning("shutdown_grace_exceeded", environment=name, grace=grace)
                run.abort.set()
            except Exception:  # already logged by _reconcile
                log.debug("environment_failed_at_shutdown", environment=name)
        for run in runs.values():
            if run.future is not None and not run.future.done():
                try:  # the runner polls its cancel about every second, then kills the tree
                    run.future.result(timeout=60)
                except Exception:
                    log.exception("environment_did_not_stop")
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.events.close()  # event streams end; consumers finish what is queued for them
        deadline = time.monotonic() + 10
        for consumer in self.consumers:
            consumer.stop(timeout=max(0.5, deadline - time.monotonic()))
        if self.replication is not None:
            self.replication.stop()
        with self._state:
            self._state.notify_all()

    @property
    def discovery_path(self) -> Path:
        return self.settings.state_dir / "daemon.json"

    def _status_line(self) -> str:
        snapshot = self.snapshot
        commit = snapshot.commit.sha[:12] if snapshot and snapshot.commit else "none"
        source = "down" if snapshot and snapshot.source_error else "up"
        return f"commit {commit}, source {source}, {len(self._running)} reconciling"
