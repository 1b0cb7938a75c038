"""Deploy status on the desired-state commit at the Git host, from the event log.

Contract (``StatusWorker``, an ``report.delivery.EventWorker``: its own thread, its cursor
persisted, so a rollout never waits and a restart never posts a status twice):
* ``statuses(event)`` decides, per environment (context ``reconciler/<environment>``), on the
  commit the event is about:
  - ``rollout_started`` (a change, not a self-heal) -> ``pending``;
  - ``environment_synced`` -> ``success``;
  - ``rollout_rolled_back`` / ``rollout_failed`` (a change) -> ``failure`` with the reason;
  - ``rollout_superseded`` -> ``canceled`` (a newer commit took over);
  - ``commit_rejected`` -> ``failure`` with the first problem, for every environment in force
    (context ``reconciler`` when none is known);
  - ``revert_pushed`` -> on the revert commit, ``success`` (the hosts are back on the versions
    it declares), or ``failure`` when the rollback itself failed.
* A failure is final for its commit and context: later ``pending``/``success`` for them are
  not posted (parallel groups); a state equal to the last one posted is not posted again.
* ``target_url`` (optional) has ``{environment}``, ``{rollout_id}`` and ``{commit}`` replaced
  literally.
* Each status is tried up to ``attempts`` times while the answer says a retry may help
  (``edges.commit_status.Posted.retry``), waiting 2 s doubling to 60 s; outcomes are counted
  (``count(provider, result)``: ``set``, ``failed``) and failures logged without the token.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import structlog

from reconciler.edges.commit_status import Poster, State, Status
from reconciler.record import Event
from reconciler.report.delivery import CursorStore, EventWorker
from reconciler.settings import CommitStatusSettings
from reconciler.states import EventKind
from reconciler.support.backoff import Backoff

__all__ = ["StatusWorker", "statuses"]

log = structlog.get_logger(__name__)

WANTED = frozenset(
    {
        EventKind.ROLLOUT_STARTED,
        EventKind.ENVIRONMENT_SYNCED,
        EventKind.ROLLOUT_ROLLED_BACK,
        EventKind.ROLLOUT_FAILED,
        EventKind.ROLLOUT_SUPERSEDED,
        EventKind.COMMIT_REJECTED,
        EventKind.REVERT_PUSHED,
    }
)
_REMEMBERED = 2048


def _context(environment: str | None) -> str:
    return f"reconciler/{environment}" if environment else "reconciler"


def _after_group(event: Event) -> str:
    """The summary without its ``environment/group: `` prefix."""
    _, sep, rest = event.summary.partition(": ")
    return f"{event.group}: {rest}" if sep and event.group else event.summary


def statuses(event: Event, target_url: str | None = None) -> list[Status]:
    """The statuses ``event`` sets (see the module docstring)."""
    change = event.details.get("trigger", "change") == "change"
    state: State | None = None
    sha, environments = event.commit, [event.environment]
    if event.kind is EventKind.ROLLOUT_STARTED and change:
        state, text = "pending", _after_group(event)
    elif event.kind is EventKind.ENVIRONMENT_SYNCED:
        state, text = "success", event.summary.partition(": ")[2] or event.summary
    elif event.kind in (EventKind.ROLLOUT_ROLLED_BACK, EventKind.ROLLOUT_FAILED) and change:
        state, text = "failure", f"{event.group} {event.kind.removeprefix('rollout_')}: "
        text += str(event.details.get("reason") or event.summary)
    elif event.kind is EventKind.ROLLOUT_SUPERSEDED:
        state, text = "canceled", f"{event.group}: superseded by a newer commit"
    elif event.kind is EventKind.COMMIT_REJECTED:
        problems = event.details.get("problems") or ["invalid"]
        state, text = "failure", f"rejected: {problems[0]}"
        environments = list(event.details.get("environments") or [None])
    elif event.kind is EventKind.REVERT_PUSHED and event.details.get("revert_commit"):
        sha = str(event.details["revert_commit"])
        restored = ", ".join(f"{a}={v}" for a, v in event.details.get("restore", {}).items())
        offending = str(event.details.get("offending_commit") or "")[:12]
        if event.details.get("rolled_back"):
            state, text = "success", f"reverts {offending}: {event.group} back on {restored}"
        else:
            state, text = "failure", f"reverts {offending}: the rollback of {event.group} failed"
    if state is None or not sha:
        return []
    return [
        Status(sha, state, _context(environment), text, _target(target_url, environment, event))
        for environment in environments
    ]


def _target(template: str | None, environment: str | None, event: Event) -> str | None:
    if not template:
        return None
    values = {
        "{environment}": environment or "",
        "{rollout_id}": event.rollout_id or "",
        "{commit}": event.commit or "",
    }
    for token, value in values.items():
        template = template.replace(token, value)
    return template


class StatusWorker(EventWorker):
    """Posts the statuses the events decide, through ``poster``."""

    metric = "commit_status"

    def __init__(
        self,
        poster: Poster,
        meta: CursorStore,
        settings: CommitStatusSettings,
        *,
        catch_up: float = 3600.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        extra = {"clock": clock} if clock is not None else {}
        super().__init__(
            poster.provider, meta, "commit_status.delivered", catch_up=catch_up, **extra
        )
        self.poster = poster
        self.target_url = settings.target_url
        self.attempts = settings.attempts
        self.backoff = Backoff(2.0, 60.0, jitter=0.2)
        self._last: OrderedDict[tuple[str, str], State] = OrderedDict()

    def wants(self, event: Event) -> bool:
        return event.kind in WANTED

    def handle(self, event: Event) -> None:
        for status in statuses(event, self.target_url):
            key = (status.sha, status.context)
            last = self._last.get(key)
            if last == status.state or (last == "failure" and status.state != "failure"):
                continue
            if self._post(status, event):
                self._last[key] = status.state
                self._last.move_to_end(key)
                while len(self._last) > _REMEMBERED:
                    self._last.popitem(last=False)
            if self.stopping.is_set():
                return

    def _post(self, status: Status, event: Event) -> bool:
        waits = self.backoff.waits()
        for attempt in range(1, self.attempts + 1):
            posted = self.poster.post(status)
            if posted.ok:
                self.count(self.name, "set")
                log.info(
                    "commit_status_set",
                    commit=status.sha[:12],
                    context=status.context,
                    state=status.state,
                )
                return True
            if not posted.retry or attempt == self.attempts or self.stopping.wait(next(waits)):
                break
        self.count(self.name, "failed")
        log.warning(
            "commit_status_failed",
            provider=self.name,
            commit=status.sha[:12],
            context=status.context,
            state=status.state,
            event_id=event.id,
            attempts=attempt,
            detail=posted.detail,
        )
        return False
