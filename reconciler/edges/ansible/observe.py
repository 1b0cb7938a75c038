"""Observation through Ansible: what to run to read what hosts run, and how to read the answer.

Contract (no Ansible import, no I/O: the run itself goes through the ``Runner`` Protocol):
* ``observe_run(...)`` is the ``PlaybookRun`` of a shipped observation playbook on some hosts:
  ``mode="fact"`` runs ``reconciler-observe.yml``, which reads the local facts ``fact_names``
  with one ``raw`` task per host (no Python module on the host, no fact gathering, no change:
  about a tenth of the controller's CPU of ``setup``); ``mode="command"`` runs
  ``reconciler-observe-command.yml``: ``argv`` on each host without a shell. Its extra vars are
  written ``!unsafe`` by the runner like every playbook's, so nothing in them is templated, and
  they reach the remote shell only through Ansible's ``quote``.
* ``Answers`` is an ``on_event`` callback for that run: per host, the local facts (parsed from
  the raw task's output as ``setup`` would: JSON of an executable or a file, else a message
  string) or the command's stdout and rc, or why the task failed. Hosts the run could not
  reach are told by the run's result (``HostStatus.UNREACHABLE``), not here.
* ``parse_facts(stdout)`` is that parsing: sections after ``@@reconciler-fact <name>@@``
  markers, at most ``_FACT_MAX`` bytes each (the answer at most ``_RAW_MAX``), ``@@missing@@``
  for an absent file; what is not JSON (also nested too deep) is a message string.
* ``DeployReports`` is an ``on_event`` callback for a deploy run of the shipped ``deploy_app``
  role: per host, the local facts its helper reported at the end of each app's deploy (the
  ``fact`` of ``app-service activate``/``record``'s JSON answer, the object the fact file
  prints, under the fact's name ``reconciler_<app>``). Only ``command`` tasks of the role
  ``deploy_app`` are read, their stdout at most ``_FACT_MAX`` bytes; the last report of an app
  wins. A failed or unreachable host reports nothing.
* ``fact_version(facts, name, key)`` reads a version from the local facts: ``name`` is the fact
  (``reconciler_{app}`` with ``-`` written ``_``, as the shipped role writes it), ``key`` the
  field. Anything else than a plain short string is no version. The shipped role's fact is an
  executable the observation runs: its ``version`` is null unless the app runs.
* ``fact_note(facts, name)`` says, shortly and printably, why a fact gave no version: the
  message instead of the fact (it could not run or parse it), or the fact's own ``state``,
  ``reason`` and ``error`` (as the shipped role's fact gives them), or that there is no fact.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from reconciler.edges.ansible import PlaybookRun

PLAYBOOK = "reconciler-observe.yml"
COMMAND_PLAYBOOK = "reconciler-observe-command.yml"
_VERSION_MAX = 128
_FACT_MAX = 64 * 1024
_RAW_MAX = 4 * 1024 * 1024  # every fact of a host's answer: 64 facts at most _FACT_MAX
_MARKER = re.compile(r"^@@reconciler-fact ([A-Za-z0-9_]{1,64})@@$", re.MULTILINE)
_MISSING = "@@missing@@"
_STDOUT_MAX = 64 * 1024
_NOTE_MAX = 240


def observe_run(
    playbooks: Path,
    inventory: Path,
    hosts: Sequence[str],
    *,
    mode: Literal["fact", "command"],
    timeout_s: float,
    envvars: Mapping[str, str],
    label: str,
    fact_path: str | None = None,
    fact_names: Sequence[str] = (),
    argv: Sequence[str] = (),
) -> PlaybookRun:
    """The run of the shipped observation playbook (in the directory ``playbooks``) for ``mode``."""
    extra_vars: dict[str, Any]
    if mode == "fact":
        playbook = playbooks / PLAYBOOK
        extra_vars = {
            "reconciler_fact_path": fact_path or "",
            "reconciler_fact_names": list(fact_names),
        }
    else:
        playbook = playbooks / COMMAND_PLAYBOOK
        extra_vars = {"reconciler_observe_argv": list(argv)}
    return PlaybookRun(
        playbook=playbook,
        inventory=inventory,
        hosts=tuple(hosts),
        extra_vars=extra_vars,
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
            elif action.endswith("raw"):
                stdout = res.get("stdout")
                answer.facts = parse_facts(stdout if isinstance(stdout, str) else "")
            elif action.endswith("command"):
                stdout = res.get("stdout")
                answer.stdout = stdout[:_STDOUT_MAX] if isinstance(stdout, str) else ""
                rc = res.get("rc")
                answer.rc = rc if isinstance(rc, int) else None


DEPLOY_ROLE = "deploy_app"
_APP_RE = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")


SHIPPED_FACT = "reconciler_{app}"


def fact_name(app: str, template: str = SHIPPED_FACT) -> str:
    """The local fact ``template`` names for ``app`` (``{app}`` with ``-`` as ``_``, as fact
    names allow); by default the one the shipped role writes."""
    return template.replace("{app}", app.replace("-", "_"))


@dataclass
class DeployReports:
    """``on_event`` callback collecting what the deploy role's helper reported; thread-safe."""

    by_host: dict[str, dict[str, Any]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, event: dict[str, Any]) -> None:
        data = event.get("event_data")
        if event.get("event") != "runner_on_ok" or not isinstance(data, Mapping):
            return
        if data.get("role") != DEPLOY_ROLE or not _action(data).endswith("command"):
            return
        host, res = data.get("host"), data.get("res")
        stdout = res.get("stdout") if isinstance(res, Mapping) else None
        if not isinstance(host, str) or not isinstance(stdout, str) or len(stdout) > _FACT_MAX:
            return
        if '"fact"' not in stdout:
            return
        try:
            answer = json.loads(stdout)
        except (ValueError, RecursionError):
            return
        fact = answer.get("fact") if isinstance(answer, dict) else None
        app = fact.get("app") if isinstance(fact, dict) else None
        if not isinstance(app, str) or not _APP_RE.match(app):
            return
        with self._lock:
            self.by_host.setdefault(host, {})[fact_name(app)] = fact

    def facts(self, host: str) -> dict[str, Any]:
        """The facts ``host`` reported (a copy)."""
        with self._lock:
            return dict(self.by_host.get(host, {}))


def parse_facts(stdout: str) -> dict[str, Any]:
    """The facts in the raw task's output (see the module docstring): name -> the parsed JSON
    (a mapping, as the fact printed it) or, as ``setup`` does, a message string when the output
    is no JSON; absent files are left out."""
    facts: dict[str, Any] = {}
    # a host's answer is bounded before it is searched; raw over SSH runs in a tty: CRLF
    stdout = stdout[:_RAW_MAX].replace("\r\n", "\n")
    marks = list(_MARKER.finditer(stdout))
    for index, mark in enumerate(marks):
        end = marks[index + 1].start() if index + 1 < len(marks) else len(stdout)
        body = stdout[mark.end() : end].strip()
        name = mark.group(1)
        if body == _MISSING:
            continue
        if len(body) > _FACT_MAX:
            facts[name] = f"the fact {name} is larger than {_FACT_MAX} bytes"
            continue
        try:
            facts[name] = json.loads(body)
        except (ValueError, RecursionError):  # RecursionError: nested too deep
            facts[name] = f"error loading the fact {name}: its output is not JSON"
    return facts


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
    if isinstance(fact, str):  # the message of a fact that could not be run or read
        return _printable(fact[:_NOTE_MAX])
    if not isinstance(fact, Mapping):
        return "not a mapping"
    parts = [fact.get(key) for key in ("state", "reason", "error")]
    note = "; ".join(part for part in parts if isinstance(part, str) and part)
    return _printable(note[:_NOTE_MAX])
