"""The long-running service: ``reconciler run``.

Contract:
* One daemon per state dir (an exclusive ``flock`` on ``state_dir/daemon.lock``).
* Triggers - the poll job (APScheduler, interval + jitter), the resync job, a watcher on a
  local repository (watchfiles), webhooks and ``POST /api/v1/sync`` - only *request* a sync.
  The source loop coalesces requests: one fetch + validation serves every request that arrived
  before it started, so a burst of pushes becomes one reconcile of the newest commit.
* Environments reconcile in a bounded pool, at most one reconcile per environment. A request for
  a busy environment is remembered and runs when it finishes; if the busy environment's desired
  state changed, its rollout is superseded after the running step.
* A remote that fails is retried with exponential backoff (poll requests skip the fetch until
  then; explicit requests always fetch); the last valid desired state stays in force.
* SIGTERM/SIGINT: stop taking work, let running playbook steps finish (``shutdown_grace``), then
  kill what still runs; the journal tells the next start what to resume. Exit 0.
* Start: kill orphans of a killed predecessor, resume rollouts the journal shows unfinished.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any

import structlog
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from reconciler.desired.model import EnvironmentDesired
from reconciler.edges.ansible import process_tree
from reconciler.report.metrics import Metrics
from reconciler.rollout import group as rollout
from reconciler.rollout.reconciler import DesiredSnapshot, EnvironmentOutcome, Reconciler
from reconciler.service import systemd_notify
from reconciler.settings import Settings
from reconciler.support.backoff import Backoff

log = structlog.get_logger(__name__)

MAX_BACKOFF_S = 600.0


class AlreadyRunning(RuntimeError):
    """Another daemon (or a foreground sync) holds the state dir's lock."""


class StateDirLock:
    """An exclusive ``flock`` on the state dir, held for the life of the process."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle: IO[str] | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        handle = self.path.open("a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise AlreadyRunning(
                f"{self.path.parent} is in use by another reconciler (pid {holder})"
            ) from exc
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None

    def __enter__(self) -> StateDirLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@dataclass
class _EnvironmentRun:
    environment: EnvironmentDesired
    commit: str
    started: float
    cancel: rollout.StopRequest = field(default_factory=rollout.StopRequest)
    abort: threading.Event = field(default_factory=threading.Event)
    future: Future[None] | None = None


@dataclass(frozen=True)
class Finished:
    """The last finished reconcile of an environment (for ``sync --wait``)."""

    started: float  # monotonic
    outcome: EnvironmentOutcome | None
    error: str = ""


class Daemon:
    """Owns the triggers, the environment pool and the shutdown sequence."""

    def __init__(self, settings: Settings, reconciler: Reconciler) -> None:
        self.settings = settings
        self.reconciler = reconciler
        self.store = reconciler.store
        self.snapshot: DesiredSnapshot | None = None
        self.metrics = Metrics(self.store, lambda: self.snapshot)
        reconciler.reporter = self.metrics
        self.lock = StateDirLock(settings.lock_path)
        self.started_at = time.time()
        self.ready = threading.Event()
        self.stopping = threading.Event()
        self.url: str | None = None
        self._wake = threading.Event()
        self._state = threading.Condition()
        self._requested: set[str] | None = set()  # None: every environment
        self._forced_fetch = False
        self._running: dict[str, _EnvironmentRun] = {}
        self._pending: set[str] = set()
        self._finished: dict[str, Finished] = {}
        self._failures = 0
        self._backoff_until = 0.0
        self._heartbeat = time.monotonic()
        self._pool = ThreadPoolExecutor(
            settings.daemon.parallel_environments, thread_name_prefix="environment"
        )
        self._scheduler = BackgroundScheduler(timezone="UTC")

    # ------------------------------------------------------------------ triggers
    def request_sync(
        self, environment: str | None = None, *, reason: str, fetch: bool = True
    ) -> float:
        """Ask for a fetch + reconcile; returns the monotonic time of the request."""
        now = time.monotonic()
        with self._state:
            if environment is None:
                self._requested = None
            elif self._requested is not None:
                self._requested.add(environment)
            self._forced_fetch = self._forced_fetch or (fetch and reason != "poll")
        log.debug("sync_requested", reason=reason, environment=environment)
        self._wake.set()
        return now

    def wait_finished(
        self, environments: list[str], since: float, timeout: float
    ) -> dict[str, Finished | None]:
        """Wait until each environment finished a reconcile that started after ``since``."""
        deadline = time.monotonic() + timeout

        def done() -> bool:
            return (
                all(
                    (f := self._finished.get(e)) is not None and f.started >= since
                    for e in environments
                )
                or self.stopping.is_set()
            )

        with self._state:
            while not done():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._state.wait(min(left, 1.0))
            return {
                e: f if (f := self._finished.get(e)) and f.started >= since else None
                for e in environments
            }

    def describe(self) -> dict[str, Any]:
        """The daemon part of ``GET /api/v1/status``."""
        return {
            "pid": os.getpid(),
            "started_at": self.started_at,
            "ready": self.ready.is_set(),
            "stopping": self.stopping.is_set(),
            "running": self.running(),
            "source_failures": self._failures,
            "source_retry_in": max(0.0, round(self._backoff_until - time.monotonic(), 1)),
        }

    def running(self) -> dict[str, str]:
        with self._state:
            return {name: run.commit for name, run in self._running.items()}

    @property
    def alive(self) -> bool:
        """The source loop still turns (what /healthz and the watchdog report)."""
        return time.monotonic() - self._heartbeat < max(120.0, 4 * self._tick())

    # ------------------------------------------------------------------ main loop
    def run(self, serve: Callable[[Daemon], Callable[[], None]] | None = None) -> int:
        """Run until SIGTERM/SIGINT; ``serve`` starts the API and returns its stop function."""
        self.lock.acquire()
        stop_api: Callable[[], None] = lambda: None  # noqa: E731
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            killed = process_tree.kill_orphans(str(self.reconciler.runner.runs_dir))
            if killed:
                log.warning("orphans_killed", pids=killed)
            if serve is not None:
                stop_api = serve(self)
            self._write_discovery()
            self.snapshot = self.reconciler.refresh()
            self._note_source(self.snapshot)
            resumed = self.reconciler.resume_interrupted(self.snapshot)
            self._start_triggers()
            self.ready.set()
            systemd_notify.ready()
            systemd_notify.status(self._status_line())
            log.info("daemon_started", url=self.url, resumed=[r.id for r in resumed])
            self.request_sync(reason="start")
            self._loop()
        finally:
            self._shutdown()
            stop_api()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self._remove_discovery()
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
            time.sleep(debounce)  # let a burst of triggers land in this one cycle
            self._wake.clear()
            with self._state:
                requested, self._requested = self._requested, set()
                forced, self._forced_fetch = self._forced_fetch, False
            self._cycle(requested, forced)

    def _cycle(self, requested: set[str] | None, forced: bool) -> None:
        fetch = forced or time.monotonic() >= self._backoff_until
        try:
            snapshot = self.reconciler.refresh(fetch=fetch)
        except Exception:  # never let one bad cycle end the daemon
            log.exception("refresh_failed")
            return
        self.snapshot = snapshot
        if fetch:
            self._note_source(snapshot)
        systemd_notify.status(self._status_line())
        if snapshot.state is None or snapshot.commit is None:
            return
        for name, environment in snapshot.state.environments.items():
            if requested is None or name in requested:
                self._dispatch(name, environment, snapshot)

    def _note_source(self, snapshot: DesiredSnapshot) -> None:
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
        self, name: str, environment: EnvironmentDesired, snapshot: DesiredSnapshot
    ) -> None:
        with self._state:
            if self.stopping.is_set():
                return
            busy = self._running.get(name)
            if busy is not None:
                self._pending.add(name)
                if busy.environment != environment and not busy.cancel.is_set():
                    log.info("rollout_superseding", environment=name, by=snapshot.commit.sha[:12])
                    busy.cancel.request("superseded")
                return
            assert snapshot.commit is not None
            run = _EnvironmentRun(environment, snapshot.commit.sha, time.monotonic())
            self._running[name] = run
            run.future = self._pool.submit(self._reconcile, name, run, snapshot)

    def _reconcile(self, name: str, run: _EnvironmentRun, snapshot: DesiredSnapshot) -> None:
        started = time.time()
        outcome: EnvironmentOutcome | None = None
        error = ""
        try:
            outcome = self.reconciler.reconcile_environment(
                run.environment, snapshot, cancel=run.cancel, abort=run.abort
            )
            rollouts = self.store.rollouts(name, limit=len(run.environment.groups) + 5)
            self.metrics.reconciled(outcome, time.time() - started, rollouts)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            log.exception("reconcile_crashed", environment=name)
            self.store.update_environment(
                name, time.time(), last_result="error", last_error=error[:500]
            )
        finally:
            with self._state:
                self._running.pop(name, None)
                self._finished[name] = Finished(run.started, outcome, error)
                again = name in self._pending and not self.stopping.is_set()
                self._pending.discard(name)
                self._state.notify_all()
            if again:
                current = self.snapshot
                if current and current.state and name in current.state.environments:
                    self._dispatch(name, current.state.environments[name], current)

    # ------------------------------------------------------------------ lifecycle
    def _start_triggers(self) -> None:
        source = self.settings.source
        if source.poll_interval > 0:
            self._scheduler.add_job(
                self.request_sync,
                IntervalTrigger(
                    seconds=source.poll_interval, jitter=source.poll_interval * source.poll_jitter
                ),
                kwargs={"reason": "poll"},
                id="poll",
                max_instances=1,
                coalesce=True,
            )
        if self.settings.daemon.resync_interval > 0:
            self._scheduler.add_job(
                self.request_sync,
                IntervalTrigger(seconds=self.settings.daemon.resync_interval),
                kwargs={"reason": "resync", "fetch": False},
                id="resync",
                max_instances=1,
                coalesce=True,
            )
        self._scheduler.start()
        watched = watch_path(self.settings)
        if watched is not None:
            threading.Thread(target=self._watch, args=(watched,), name="watch", daemon=True).start()

    def _watch(self, path: Path) -> None:
        from watchfiles import watch

        log.info("watching", path=str(path))
        try:
            for _changes in watch(
                path, stop_event=self.stopping, debounce=200, step=50, recursive=True
            ):
                self.request_sync(reason="watch")
        except Exception:  # the poll still runs when the watcher dies
            log.exception("watch_failed", path=str(path))

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if not self.stopping.is_set():
            log.info("shutdown_requested", signal=signal.Signals(signum).name)
        self.stopping.set()
        self._wake.set()

    def _shutdown(self) -> None:
        self.stopping.set()
        systemd_notify.stopping()
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        with self._state:
            runs = dict(self._running)
            self._pending.clear()
        for run in runs.values():
            run.cancel.request("interrupted")
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
        with self._state:
            self._state.notify_all()

    # ------------------------------------------------------------------ discovery
    @property
    def discovery_path(self) -> Path:
        return self.settings.state_dir / "daemon.json"

    def _write_discovery(self) -> None:
        """Tell the CLI where the running daemon listens (``state_dir/daemon.json``)."""
        if self.url is None:
            return
        data = {"pid": os.getpid(), "url": self.url, "started_at": self.started_at}
        tmp = self.discovery_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data) + "\n", encoding="utf-8")
        os.replace(tmp, self.discovery_path)

    def _remove_discovery(self) -> None:
        try:
            data = json.loads(self.discovery_path.read_text(encoding="utf-8"))
            if data.get("pid") == os.getpid():
                self.discovery_path.unlink()
        except (OSError, ValueError):
            pass

    def _status_line(self) -> str:
        snapshot = self.snapshot
        commit = snapshot.commit.sha[:12] if snapshot and snapshot.commit else "none"
        source = "down" if snapshot and snapshot.source_error else "up"
        return f"commit {commit}, source {source}, {len(self._running)} reconciling"


def watch_path(settings: Settings) -> Path | None:
    """The local repository to watch, when ``source.watch`` is on (auto: local paths)."""
    url = settings.source.url
    local = Path(url[len("file://") :] if url.startswith("file://") else url)
    is_local = "://" not in url or url.startswith("file://")
    if settings.source.watch is False or not is_local or not local.is_dir():
        return None
    return local
