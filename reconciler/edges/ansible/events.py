"""Interpret ansible-runner events of one run: per-host tracking, failure messages, stats.

``RunState`` is the per-run state shared by ansible-runner's callbacks (all called in the run's
thread): ``event_handler`` must return True (or ansible-runner drops the events and ``stats``
comes back None) and never raise; ``cancel_callback`` returns True to stop the run and kills the
run's process tree first (ansible-core 2.19 workers ``setsid`` away from the process group).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from reconciler.edges.ansible import process_tree
from reconciler.states import RunOutcome

log = logging.getLogger(__name__)

MESSAGE_MAX = 500
_NO_HOSTS_MARKERS = ("no hosts to target", "no hosts matched")


def truncate(text: str, limit: int = MESSAGE_MAX) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


def tail(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else "..." + text[-(limit - 3) :]


def _failure_message(event: str, data: Mapping[str, Any]) -> str:
    res = data.get("res")
    res = res if isinstance(res, Mapping) else {}
    if isinstance(res.get("results"), list):  # loop: use the last failed item
        failed_items = [
            r
            for r in res["results"]
            if isinstance(r, Mapping) and (r.get("failed") or r.get("unreachable"))
        ]
        if failed_items:
            res = failed_items[-1]
    msg = str(res.get("msg") or "").strip()
    stderr = str(res.get("stderr") or res.get("module_stderr") or "").strip()
    parts = []
    task = str(data.get("task") or "").strip()
    if task:
        parts.append(f"{task}:")
    parts.append(msg or ("host unreachable" if event == "runner_on_unreachable" else "task failed"))
    if stderr and stderr not in msg:
        parts.append(f"(stderr: {tail(stderr, 200)})")
    if "rc" in res and res.get("rc") not in (0, None):
        parts.append(f"[rc={res['rc']}]")
    return truncate(" ".join(parts))


def stdout_error(artifact_dir: Path) -> str:
    """The ERROR lines Ansible printed (no events are emitted for early errors)."""
    try:
        text = (artifact_dir / "stdout").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith(("ERROR!", "[ERROR]"))]
    if errors:
        return truncate(" ".join(errors))
    return tail("\n".join(lines), MESSAGE_MAX)


class HostTrack:
    __slots__ = ("changed", "failed", "message", "seen", "unreachable")

    def __init__(self) -> None:
        self.seen = False
        self.changed = False
        self.failed = False
        self.unreachable = False
        self.message = ""


_FAIL_EVENTS = frozenset({"runner_on_failed", "runner_on_async_failed", "runner_item_on_failed"})


class RunState:
    """Per-run mutable state shared by the callbacks (all called in the run's thread)."""

    def __init__(
        self,
        ident: str,
        deadline: float,
        cancel: threading.Event | None,
        on_event: Callable[[dict], None] | None,
    ) -> None:
        self.ident = ident
        self.deadline = deadline
        self.cancel = cancel
        self.on_event = on_event
        self.stopped: RunOutcome | None = None  # TIMEOUT or CANCELED
        self.killed: list[int] = []
        self.stats: dict[str, Any] | None = None
        self.hosts: dict[str, HostTrack] = {}

    # ansible-runner: return True to stop the run. Must never raise (CallbackError otherwise).
    def cancel_callback(self) -> bool:
        if self.stopped is not None:
            return True
        if self.cancel is not None and self.cancel.is_set():
            reason = RunOutcome.CANCELED
        elif time.monotonic() >= self.deadline:
            reason = RunOutcome.TIMEOUT
        else:
            return False
        self.stopped = reason
        try:
            self.killed = process_tree.kill_run(self.ident)
        except Exception:
            log.exception("run %s: killing the process tree failed", self.ident)
        log.info("run %s: %s, killed %d process(es)", self.ident, reason, len(self.killed))
        return True

    # ansible-runner: return True so that the event is written (stats depend on it).
    def event_handler(self, event: dict) -> bool:
        try:
            self._track(event)
        except Exception:
            log.exception("run %s: could not interpret event", self.ident)
        if self.on_event is not None:
            try:
                self.on_event(event)
            except Exception:
                log.exception("run %s: on_event callback raised", self.ident)
        return True

    def _track(self, event: Mapping[str, Any]) -> None:
        name = event.get("event")
        data = event.get("event_data")
        if not isinstance(data, Mapping):
            return
        if name == "playbook_on_stats":
            self.stats = {
                key: dict(data.get(key) or {})
                for key in (
                    "ok",
                    "failures",
                    "dark",
                    "changed",
                    "skipped",
                    "rescued",
                    "ignored",
                    "processed",
                )
            }
            return
        host = data.get("host")
        if not isinstance(host, str) or not name or not name.startswith("runner_"):
            return
        track = self.hosts.setdefault(host, HostTrack())
        track.seen = True
        res = data.get("res")
        if isinstance(res, Mapping) and res.get("changed") is True:
            track.changed = True
        if name in _FAIL_EVENTS and not data.get("ignore_errors"):
            track.failed = True
            track.message = _failure_message(name, data)
        elif name == "runner_on_unreachable" and not data.get("ignore_unreachable"):
            track.unreachable = True
            track.message = _failure_message(name, data)


def no_hosts_matched(error: str) -> bool:
    """Ansible's message when none of the requested hosts is in the inventory."""
    return any(marker in error.lower() for marker in _NO_HOSTS_MARKERS)
