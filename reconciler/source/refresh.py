"""The desired state in force: fetch the tip, validate it whole, keep the last valid commit.

Contract (``DesiredSource.refresh(fetch=True)``):
* Fetches the tracked branch (or, with ``fetch=False``, re-reads the last fetched tip) and
  validates the tip as a whole. A valid tip becomes the commit in force; a rejected tip leaves
  the last valid commit in force and is reported with its ``file:line`` problems; an
  unreachable remote leaves everything in force and is reported as the source error.
* Never raises: a daemon starts and reports whatever its tip holds. Anything a commit's content
  makes the loader raise rejects that commit (the problem names the error), and so does a tree
  the Git edge refuses (``UnsafeTreeError``: a link escaping the repository, a nested ``.git``,
  too many bytes): a problem of that commit, shown as its rejection, never as an outage. A
  failing remote is the source error; an unforeseen failure keeps the last snapshot, with the
  failure as its ``source_error``. A state store that is unavailable (``StoreUnavailable``)
  keeps the last snapshot with ``store_error`` set (logged ``refresh_store_unavailable``): it
  is not a source failure, and the daemon does not back off fetching for it. Problems render
  terminal-safe and length-capped (``desired.problems``).
* ``record=True`` (the daemon, a foreground ``sync``) writes what happened to the store
  (``source.facts``) and logs ``commit_rejected`` once per rejected commit. ``record=False``
  (``diff``, ``plan``, ``status``) writes nothing anywhere: reads never change what the daemon
  reports.
* ``current`` is the snapshot of the last refresh; it is what every surface (status read model,
  metrics, API) shows. After the daemon pushes a revert commit, a refresh makes that commit the
  one in force at once.
* Snapshots (the tree of a commit on disk) in use by a reconcile are pinned and never pruned.
* Events (``events``, a ``record.EventSink``; only when recording): ``commit_accepted`` once
  per new valid commit in force (with what it changes: apps and versions from -> to per
  environment and group), ``commit_rejected`` once per rejected commit (its problems, and the
  environments whose commit status it fails), ``source_down`` when a fetch fails after one
  worked (or at the first failure) and ``source_up`` when one works again. "Once" holds across
  restarts: it is decided against what the store recorded.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import structlog

from reconciler.desired.loading import LoadResult
from reconciler.desired.model import DesiredState
from reconciler.desired.problems import Problem
from reconciler.edges.git import CommitInfo, SourceError, UnsafeTreeError
from reconciler.record.events import EventSink, SilentSink
from reconciler.record.protocols import StoreUnavailable
from reconciler.source import facts
from reconciler.states import EventKind

log = structlog.get_logger(__name__)

Loader = Callable[[Path, str], LoadResult]


class Reader(Protocol):
    """What the source stage needs of the Git edge (``edges.git.reader.GitSource`` is one)."""

    def fetch(self) -> CommitInfo: ...
    def last_fetched(self) -> CommitInfo: ...
    def commit_info(self, sha: str) -> CommitInfo: ...
    def snapshot(self, sha: str) -> Path: ...
    def prune_snapshots(self, keep: set[str]) -> None: ...


@dataclass(frozen=True)
class DesiredSnapshot:
    """The desired state in force, and what happened to the source's newest commit."""

    commit: CommitInfo | None  # in force
    root: Path | None  # its tree on disk
    state: DesiredState | None
    tip: CommitInfo | None = None  # the newest commit seen
    problems: tuple[Problem, ...] = ()  # why the tip was rejected
    source_error: str = ""  # why the last fetch failed
    store_error: str = ""  # the state store was unavailable: this is the previous snapshot

    @property
    def tip_rejected(self) -> bool:
        return bool(self.problems)


class DesiredSource:
    """The source stage of one Git source. Thread-safe; refreshes are serialised."""

    def __init__(
        self,
        reader: Reader,
        *,
        meta: facts.MetaWriter,
        load: Loader,
        record: bool = True,
        clock: Callable[[], float] = time.time,
        keep_loaded: int = 4,
        events: EventSink | None = None,
    ) -> None:
        self.reader = reader
        self.meta = meta
        self.load = load
        self.record = record
        self.clock = clock
        self.keep_loaded = keep_loaded
        self.events: EventSink = events or SilentSink()
        self._loaded: OrderedDict[str, LoadResult] = OrderedDict()
        self._pins: Counter[str] = Counter()
        self._lock = threading.Lock()  # one refresh at a time
        self._pin_lock = threading.Lock()
        self._current: DesiredSnapshot | None = None
        self._last_valid: str | None = None

    @property
    def current(self) -> DesiredSnapshot | None:
        return self._current

    # ------------------------------------------------------------------ refresh
    def refresh(self, *, fetch: bool = True) -> DesiredSnapshot:
        with self._lock:
            try:
                snapshot = self._refresh(fetch)
            except StoreUnavailable as exc:  # a store outage is not the source's fault
                log.warning("refresh_store_unavailable", error=str(exc)[:500])
                previous = self._current or DesiredSnapshot(None, None, None)
                snapshot = dataclasses.replace(previous, store_error=str(exc)[:500])
            except Exception as exc:  # the daemon's start-up refresh included: never raise
                log.exception("refresh_failed")
                error = f"refresh failed: {type(exc).__name__}: {exc}"[:500]
                previous = self._current or DesiredSnapshot(None, None, None)
                snapshot = dataclasses.replace(previous, source_error=error)
            self._current = snapshot
            return snapshot

    def _refresh(self, fetch: bool) -> DesiredSnapshot:
        tip, source_error = self._tip(fetch)
        problems: tuple[Problem, ...] = ()
        if tip is not None:
            result, error = self._validate(tip.sha)
            source_error = source_error or error
            if result is not None and result.ok:
                self._accepted(tip, result)
                self._last_valid = tip.sha
                self._write(facts.LAST_VALID, tip.sha)
                self._write(facts.PROBLEMS, "[]")
            elif result is not None:
                problems = result.problems
                self._rejected(tip.sha, problems)

        valid_sha = self._last_valid or self.meta.get_meta(facts.LAST_VALID)
        if valid_sha is None:
            return DesiredSnapshot(None, None, None, tip, problems, source_error)
        try:
            root = self.reader.snapshot(valid_sha)
            result, error = self._validate(valid_sha)
            commit = self.reader.commit_info(valid_sha)
        except (SourceError, UnsafeTreeError, ValueError) as exc:  # e.g. limits lowered since
            return DesiredSnapshot(None, None, None, tip, problems, source_error or str(exc))
        if result is None or not result.ok:
            # The commit in force no longer loads (e.g. a cache wiped): nothing is in force.
            return DesiredSnapshot(None, None, None, tip, problems, source_error or error)
        with self._pin_lock:
            keep = {valid_sha, *self._pins} | ({tip.sha} if tip else set())
        self.reader.prune_snapshots(keep=keep)
        return DesiredSnapshot(commit, root, result.state, tip, problems, source_error)

    def _tip(self, fetch: bool) -> tuple[CommitInfo | None, str]:
        try:
            if not fetch:
                return self.reader.last_fetched(), self.meta.get_meta(facts.ERROR) or ""
            tip = self.reader.fetch()
        except SourceError as exc:
            if self.record and not self.meta.get_meta(facts.ERROR):
                self.events.emit(
                    EventKind.SOURCE_DOWN,
                    summary=f"Git source unavailable: {exc}",
                    details={"error": str(exc)},
                )
            self._write(facts.ERROR, str(exc))
            log.warning("source_unavailable", error=str(exc))
            return None, str(exc)
        if self.record and self.meta.get_meta(facts.ERROR):
            self.events.emit(
                EventKind.SOURCE_UP,
                summary=f"Git source reachable again at {tip.short}",
                commit=tip.sha,
                details={"tip": tip.sha},
            )
        self._write(facts.LAST_FETCH, str(self.clock()))
        self._write(facts.ERROR, "")
        return tip, ""

    def _validate(self, sha: str) -> tuple[LoadResult | None, str]:
        """The commit's validation, cached; (None, error) when its tree cannot be read now."""
        if sha in self._loaded:
            self._loaded.move_to_end(sha)
            return self._loaded[sha], ""
        try:
            root = self.reader.snapshot(sha)
        except UnsafeTreeError as exc:  # what the commit holds: a problem of that commit
            result = LoadResult(None, (Problem(exc.path, 1, str(exc)),))
        except SourceError as exc:
            return None, str(exc)
        except Exception as exc:  # unforeseen: reported like an outage, retried, never raised
            log.exception("snapshot_failed", commit=sha)
            return None, f"cannot read commit {sha[:12]}: {type(exc).__name__}: {exc}"[:500]
        else:
            try:
                result = self.load(root, sha)
            except Exception as exc:  # what a commit contains must never stop the daemon
                log.exception("commit_unloadable", commit=sha)
                message = f"cannot validate this commit: {type(exc).__name__}: {exc}"
                result = LoadResult(None, (Problem(".", 1, message[:500]),))
        self._loaded[sha] = result
        while len(self._loaded) > self.keep_loaded:
            self._loaded.popitem(last=False)
        return result, ""

    def _accepted(self, tip: CommitInfo, result: LoadResult) -> None:
        """``commit_accepted`` when ``tip`` is a new valid commit (not the one in force)."""
        previous = self._last_valid or self.meta.get_meta(facts.LAST_VALID)
        if not self.record or previous == tip.sha or result.state is None:
            return
        before = self._current.state if self._current and self._current.state else None
        if before is None and previous is not None:
            loaded, _ = self._validate(previous)
            before = loaded.state if loaded is not None else None
        changes = changed_versions(before, result.state)
        shown = "; ".join(
            f"{c['environment']}/{c['group']} {c['app']} {c['from'] or 'none'} -> "
            f"{c['to'] or 'removed'}"
            for c in changes[:5]
        )
        more = f" (+{len(changes) - 5} more)" if len(changes) > 5 else ""
        self.events.emit(
            EventKind.COMMIT_ACCEPTED,
            summary=f"commit {tip.short} accepted ({tip.subject}): "
            + (shown + more if changes else "no version changes"),
            commit=tip.sha,
            details={
                **_commit_details(tip),
                "previous": previous,
                "changes": changes,
                "environments": sorted(result.state.environments),
            },
        )

    def _rejected(self, sha: str, problems: tuple[Problem, ...]) -> None:
        if not self.record:
            return
        if self.meta.get_meta(facts.LAST_INVALID) != sha:
            log.error("commit_rejected", commit=sha, problems=[str(p) for p in problems])
            self._announce_rejection(sha, problems)
        self.meta.set_meta(facts.LAST_INVALID, sha)
        self.meta.set_meta(facts.PROBLEMS, json.dumps([str(p) for p in problems]))

    def _announce_rejection(self, sha: str, problems: tuple[Problem, ...]) -> None:
        try:
            tip = self.reader.commit_info(sha)
        except Exception:  # the event is worth more than its commit's subject
            tip = CommitInfo(sha, "", "", "", 0.0)
        in_force = self._current.state if self._current and self._current.state else None
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        self.events.emit(
            EventKind.COMMIT_REJECTED,
            summary=f"commit {tip.short} rejected ({tip.subject}): {problems[0]}{more}"
            if problems
            else f"commit {tip.short} rejected",
            commit=sha,
            details={
                **_commit_details(tip),
                "problems": [str(p) for p in problems[:50]],
                "environments": sorted(in_force.environments) if in_force else [],
            },
        )

    def _write(self, key: str, value: str) -> None:
        if self.record:
            self.meta.set_meta(key, value)

    # ------------------------------------------------------------------ pins
    @contextmanager
    def pinned(self, sha: str) -> Iterator[None]:
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


def _commit_details(commit: CommitInfo) -> dict[str, str]:
    return {"subject": commit.subject, "author": commit.author, "author_email": commit.author_email}


def changed_versions(
    before: DesiredState | None, after: DesiredState
) -> list[dict[str, str | None]]:
    """Per environment, group and app, the desired versions that differ (``from`` None: new,
    ``to`` None: removed), sorted."""
    old = {
        (e, g, a): v
        for e, env in (before.environments.items() if before else ())
        for g, group in env.groups.items()
        for a, v in group.apps.items()
    }
    new = {
        (e, g, a): v
        for e, env in after.environments.items()
        for g, group in env.groups.items()
        for a, v in group.apps.items()
    }
    return [
        {
            "environment": e,
            "group": g,
            "app": a,
            "from": old.get((e, g, a)),
            "to": new.get((e, g, a)),
        }
        for e, g, a in sorted(old.keys() | new.keys())
        if old.get((e, g, a)) != new.get((e, g, a))
    ]
