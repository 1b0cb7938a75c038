"""Observation through Ansible: what to run to read what hosts run, and how to read the answer.

Contract (no Ansible import, no I/O: the run itself goes through the ``Runner`` Protocol):
* ``observe_run(...)`` is the ``PlaybookRun`` of the shipped ``reconciler-observe.yml`` on some
  hosts: ``mode="fact"`` gathers only local facts (cheap: no other fact gathering, no change),
  ``mode="command"`` runs ``argv`` on each host without a shell. Its extra vars are written
  ``!unsafe`` by the runner like every playbook's, so an argv is never templated.
* ``Answers`` is an ``on_event`` callback for that run: per host, the local facts
  (``ansible_local``) or the command's stdout and rc, or why the task failed. Hosts the run
  could not reach are told by the run's result (``HostStatus.UNREACHABLE``), not here.
* ``fact_version(facts, name, key)`` reads a version from the local facts: ``name`` is the fact
  (``reconciler_{app}`` with ``-`` written ``_``, as the shipped role writes it), ``key`` the
  field. Anything else than a plain short string is no version. The shipped role's fact is an
  executable that setup runs: its ``version`` is null unless the app runs.
* ``fact_note(facts, name)`` says, shortly and printably, why a fact gave no version: setup's
  message instead of the fact (it could not run or parse it), or the fact's own ``state``,
  ``reason`` and ``error`` (as the shipped role's fact gives them), or that there is no fact.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from reconciler.edges.ansible import PlaybookRun

PLAYBOOK = "reconciler-observe.yml"
_VERSION_MAX = 128
_STDOUT_MAX = 64 * 1024
_NOTE_MAX = 240


def observe_run(
    playbook: Path,
    inventory: Path,
    hosts: Sequence[str],
    *,
    mode: Literal["fact", "command"],
    timeout_s: float,
    envvars: Mapping[str, str],
    label: str,
    fact_path: str | None = None,
    argv: Sequence[str] = (),
) -> PlaybookRun:
    return PlaybookRun(
        playbook=playbook,
        inventory=inventory,
        hosts=tuple(hosts),
        extra_vars={
            "reconciler_observe": mode,
            "reconciler_fact_path": fact_path or "",
            "reconciler_observe_argv": list(argv),
        },
        timeout_s=timeout_s,
        envvars=dict(envvars),
        label=label,
    )


@dataclass
class Answer:
    """What one host answered (only what its task gave)."""

    facts: Mapping[str, Any] | None = None
    stdout: str | None = None
    rc: int | None = None
    failure: str = ""


def _action(data: Mapping[str, Any]) -> str:
    return str(data.get("resolved_action") or data.get("task_action") or "")


@dataclass
class Answers:
    """``on_event`` callback collecting each host's answer; thread-safe."""

    by_host: dict[str, Answer] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, event: dict[str, Any]) -> None:
        name = event.get("event")
        data = event.get("event_data")
        if not isinstance(data, Mapping) or name not in ("runner_on_ok", "runner_on_failed"):
            return
        host, res = data.get("host"), data.get("res")
        if not isinstance(host, str) or not isinstance(res, Mapping):
            return
        action = _action(data)
        with self._lock:
            answer = self.by_host.setdefault(host, Answer())
            if name == "runner_on_failed":
                answer.failure = str(res.get("msg") or res.get("stderr") or "task failed")[:300]
            elif action.endswith("setup"):
                facts = res.get("ansible_facts")
                local = facts.get("ansible_local") if isinstance(facts, Mapping) else None
                answer.facts = local if isinstance(local, Mapping) else {}
            elif action.endswith("command"):
                stdout = res.get("stdout")
                answer.stdout = stdout[:_STDOUT_MAX] if isinstance(stdout, str) else ""
                rc = res.get("rc")
                answer.rc = rc if isinstance(rc, int) else None


def fact_version(facts: Mapping[str, Any] | None, name: str, key: str) -> str | None:
    """The version the fact ``name`` holds under ``key``, or None."""
    fact = facts.get(name) if facts else None
    value = fact.get(key) if isinstance(fact, Mapping) else None
    if isinstance(value, str) and 0 < len(value) <= _VERSION_MAX and value.isprintable():
        return value
    return None


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else " " for c in text)


def fact_stopped(facts: Mapping[str, Any] | None, name: str) -> bool:
    """The fact says the app is not running (``running: false``): a stopped app."""
    fact = facts.get(name) if facts else None
    return isinstance(fact, Mapping) and fact.get("running") is False


def fact_note(facts: Mapping[str, Any] | None, name: str) -> str:
    """Why the fact ``name`` has no version, as far as it tells (see the module docstring)."""
    fact = facts.get(name) if facts else None
    if fact is None:
        return "no such fact"
    if isinstance(fact, str):  # setup's message: the fact could not be run or read
        return _printable(fact[:_NOTE_MAX])
    if not isinstance(fact, Mapping):
        return "not a mapping"
    parts = [fact.get(key) for key in ("state", "reason", "error")]
    note = "; ".join(part for part in parts if isinstance(part, str) and part)
    return _printable(note[:_NOTE_MAX])
