"""What makes the daemon reconcile: the poll, resync and observation jobs, and a file watcher.

Triggers only *request* a sync (``request(reason=..., fetch=...)``); the daemon's loop
coalesces requests. ``Triggers.start`` schedules the poll (every ``poll_interval`` plus jitter),
the resync (every ``resync_interval``, no fetch) and the observation (every
``observation.interval``, give or take ``observation.jitter`` of it, no fetch: a reconcile of every
environment that first looks at what every host runs) with APScheduler, and watches a local
repository path with watchfiles when ``source.watch`` allows it.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Protocol

import structlog
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from reconciler.settings import Settings

log = structlog.get_logger(__name__)


class Requester(Protocol):
    def __call__(
        self,
        environment: str | None = None,
        *,
        reason: str,
        fetch: bool = True,
        observe: bool = False,
    ) -> float: ...


def watch_path(settings: Settings) -> Path | None:
    """The local repository to watch, when ``source.watch`` is on (auto: local paths)."""
    url = settings.source.url
    local = Path(url[len("file://") :] if url.startswith("file://") else url)
    is_local = "://" not in url or url.startswith("file://")
    if settings.source.watch is False or not is_local or not local.is_dir():
        return None
    return local


class Triggers:
    def __init__(self, settings: Settings, request: Requester, stopping: threading.Event) -> None:
        self.settings = settings
        self.request = request
        self.stopping = stopping
        self._scheduler = BackgroundScheduler(timezone="UTC")

    def start(self) -> None:
        source = self.settings.source
        if source.poll_interval > 0:
            self._scheduler.add_job(
                self.request,
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
                self.request,
                IntervalTrigger(seconds=self.settings.daemon.resync_interval),
                kwargs={"reason": "resync", "fetch": False},
                id="resync",
                max_instances=1,
                coalesce=True,
            )
        observation = self.settings.observation
        if observation.interval > 0:
            self._scheduler.add_job(
                self.request,
                IntervalTrigger(
                    seconds=observation.interval,
                    jitter=observation.interval * observation.jitter,
                ),
                kwargs={"reason": "observe", "fetch": False, "observe": True},
                id="observe",
                max_instances=1,
                coalesce=True,
            )
        self._scheduler.start()
        watched = watch_path(self.settings)
        if watched is not None:
            threading.Thread(target=self._watch, args=(watched,), name="watch", daemon=True).start()

    def stop(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)

    def _watch(self, path: Path) -> None:
        from watchfiles import watch

        log.info("watching", path=str(path))
        try:
            for _changes in watch(
                path, stop_event=self.stopping, debounce=200, step=50, recursive=True
            ):
                self.request(reason="watch")
        except Exception:  # the poll still runs when the watcher dies
            log.exception("watch_failed", path=str(path))
