"""Observe what hosts run: one cheap look per group, the answers turned into observations.

Contract (``Observer.observe(environment, group, hosts, root)``):
* ``observe: {fact: ...}`` (the default): one Ansible run of the shipped
  ``reconciler-observe.yml`` on the hosts, reading the group's apps' local facts with one
  ``raw`` task per host; the version is the fact's ``key`` (the shipped role writes
  ``reconciler_<app>.fact`` with ``version``).
* ``observe: {command: {argv, version_regex}}``: one run per app of ``argv`` on the hosts,
  without a shell (placeholders ``{app}``, ``{name}``, ``{host}``, ``{environment}``,
  ``{group}`` replaced literally); the version is found in its stdout.
* ``observe: {http: {url, version_regex}}``: a GET per host and app from the controller
  (placeholders as in gates: ``{host}`` is the address, ``{port}`` the app's port).
* Every (host, app) gets one ``ObservedVersion``: ``ok`` with the version, ``unreachable``
  (the host did not answer: never "in sync"), ``stopped`` (the fact says the app does not
  run), ``missing`` (it answered without a version: no fact, no match) or ``failed`` (the
  probe failed, e.g. a command's non-zero exit), with a short detail. A version must look
  like one (``desired.schema.VERSION_RE``); the regular expression only sees the first 4 KiB
  of an answer.
* ``reported(environment, group, hosts, reports)`` (a function): what a deploy run of the
  shipped role already told (its helper's facts at the end of the deploy, seen when that run
  ended), read exactly as a look's answer would be, for the hosts that told every app of a
  group observing the shipped facts; the other hosts are to be looked at.
* Never raises for what hosts do; a run that cannot start makes its hosts ``failed``.
* A run stopped by ``cancel`` (a newer commit, a shutdown) observes nothing of its hosts: what
  was seen before stands (a look cut short says nothing about the hosts).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from reconciler import content
from reconciler.desired.model import EnvironmentDesired, GroupDesired, Host
from reconciler.desired.schema import VERSION_RE, CommandProbe, FactProbe, HttpProbe
from reconciler.edges.ansible import HostStatus, Runner, RunOutcome, RunResult
from reconciler.edges.ansible import observe as ansible_observe
from reconciler.edges.gates.templates import MissingPlaceholder, render_template
from reconciler.record import ObservedVersion
from reconciler.rollout.ports import VersionReader
from reconciler.settings import ExecutionSettings
from reconciler.states import ObservationStatus

_SCAN_MAX = 4096


def version_in(text: str, regex: str) -> str | None:
    """The version ``regex`` finds in ``text`` (its group, or the whole match), if it is one."""
    match = re.search(regex, text[:_SCAN_MAX])
    if match is None:
        return None
    found = match.group(1) if match.re.groups else match.group(0)
    return found if found and VERSION_RE.fullmatch(found) else None


def _from_fact(
    environment: EnvironmentDesired,
    host: Host,
    app: str,
    fact: str,
    key: str,
    answer: ansible_observe.Answer,
    now: float,
) -> ObservedVersion:
    """The observation of ``app`` on ``host`` from the local facts the host gave."""
    version = ansible_observe.fact_version(answer.facts, fact, key)
    detail = ""
    if version is not None and not VERSION_RE.fullmatch(version):
        detail = f"{key!r} in the local fact {fact!r} is not a version"
        version = None
    elif version is None:
        note = ansible_observe.fact_note(answer.facts, fact)
        detail = f"no {key!r} in the local fact {fact!r}: {note}"[:300]
    if version:
        status = ObservationStatus.OK
    elif ansible_observe.fact_stopped(answer.facts, fact):
        status = ObservationStatus.STOPPED
    else:
        status = ObservationStatus.MISSING
    return ObservedVersion(environment.name, host.name, app, version, status, detail, now)


def reported(
    environment: EnvironmentDesired,
    group: GroupDesired,
    hosts: Sequence[Host],
    reports: Mapping[str, tuple[float, Mapping[str, Any]]],
) -> tuple[list[ObservedVersion], list[Host]]:
    """What a deploy run already told of ``hosts``, and the hosts still to look at.

    ``reports``: per host, when its deploy run ended and the local facts the shipped role's
    helper reported at the end of it (``ansible_observe.DeployReports``). They stand for a
    look only when the group observes the shipped role's facts (``observe: {fact: ...}`` named
    ``reconciler_{app}``) and the host reported every app of the group; every other host is to
    be looked at.
    """
    probe = group.observe.fact if group.observe is not None else None
    names = {app: ansible_observe.fact_name(app) for app in group.apps}
    if probe is None or any(
        ansible_observe.fact_name(app, probe.name) != names[app] for app in group.apps
    ):
        return [], list(hosts)
    found: list[ObservedVersion] = []
    rest: list[Host] = []
    for host in hosts:
        seen_at, facts = reports.get(host.name, (0.0, {}))
        if not group.apps or any(name not in facts for name in names.values()):
            rest.append(host)
            continue
        answer = ansible_observe.Answer(facts=facts)
        found.extend(
            _from_fact(environment, host, app, names[app], probe.key, answer, seen_at)
            for app in group.apps
        )
    return found, rest


@dataclass(frozen=True)
class Observer:
    runner: Runner
    versions: VersionReader | None
    execution: ExecutionSettings
    clock: Callable[[], float]
    forks: int = 50

    def observe(
        self,
        environment: EnvironmentDesired,
        group: GroupDesired,
        hosts: Sequence[Host],
        root: Path,
        *,
        cancel: threading.Event | None = None,
    ) -> list[ObservedVersion]:
        probe = group.observe
        if probe is None or not hosts:
            return []
        if probe.fact is not None:
            return self._facts(environment, group, hosts, root, probe.fact, cancel)
        if probe.command is not None:
            return self._command(environment, group, hosts, root, probe.command, cancel)
        assert probe.http is not None
        return self._http(environment, group, hosts, probe.http)

    # -- through Ansible
    def _run(
        self,
        environment: EnvironmentDesired,
        group: GroupDesired,
        hosts: Sequence[Host],
        root: Path,
        cancel: threading.Event | None,
        *,
        mode: Literal["fact", "command"],
        timeout: float,
        fact_path: str | None = None,
        fact_names: Sequence[str] = (),
        argv: Sequence[str] = (),
    ) -> tuple[RunResult, ansible_observe.Answers]:
        forks = min(max(self.forks, self.execution.forks), len(hosts))
        envvars = {
            "ANSIBLE_FORKS": str(forks),
            "ANSIBLE_PIPELINING": str(self.execution.pipelining),
        }
        if self.execution.private_key_file:
            envvars["ANSIBLE_PRIVATE_KEY_FILE"] = str(self.execution.private_key_file)
        envvars.update(self.execution.extra_envvars)
        run = ansible_observe.observe_run(
            content.playbooks_dir(),
            (root / environment.inventory).resolve(),
            [h.name for h in hosts],
            # a budget per wave of ``forks`` hosts: a fixed one cut large groups short
            timeout_s=max(60.0, 3 * timeout) * -(-len(hosts) // forks),
            envvars=envvars,
            label=f"{environment.name}-{group.name}-observe",
            mode=mode,
            fact_path=fact_path,
            fact_names=fact_names,
            argv=argv,
        )
        answers = ansible_observe.Answers()
        return self.runner.run(run, cancel=cancel, on_event=answers), answers

    def _facts(
        self,
        environment: EnvironmentDesired,
        group: GroupDesired,
        hosts: Sequence[Host],
        root: Path,
        probe: FactProbe,
        cancel: threading.Event | None,
    ) -> list[ObservedVersion]:
        names = {app: ansible_observe.fact_name(app, probe.name) for app in group.apps}
        result, answers = self._run(
            environment, group, hosts, root, cancel, mode="fact", fact_path=probe.fact_path,
            fact_names=sorted(set(names.values())), timeout=10.0,
        )  # fmt: skip
        if result.outcome is RunOutcome.CANCELED:
            return []
        now = self.clock()
        out = []
        for host in hosts:
            answer = answers.by_host.get(host.name)
            for app in group.apps:
                record = self._unanswered(environment, host, app, result, answer, now)
                if record is None:
                    assert answer is not None
                    record = _from_fact(environment, host, app, names[app], probe.key, answer, now)
                out.append(record)
        return out

    def _command(
        self,
        environment: EnvironmentDesired,
        group: GroupDesired,
        hosts: Sequence[Host],
        root: Path,
        probe: CommandProbe,
        cancel: threading.Event | None,
    ) -> list[ObservedVersion]:
        out = []
        for app in group.apps:
            values = {"app": app, "environment": environment.name, "group": group.name}
            # per-host values ({name}, {host}) differ by host: one run per distinct argv
            by_argv: dict[tuple[str, ...], list[Host]] = {}
            for host in hosts:
                host_values = {**values, "name": host.name, "host": host.address}
                try:
                    argv = tuple(render_template(a, host_values) for a in probe.argv)
                except MissingPlaceholder as exc:
                    out.append(self._failed(environment, host, app, str(exc)))
                    continue
                by_argv.setdefault(argv, []).append(host)
            for argv, same in by_argv.items():
                result, answers = self._run(
                    environment, group, same, root, cancel,
                    mode="command", argv=list(argv), timeout=probe.timeout,
                )  # fmt: skip
                if result.outcome is RunOutcome.CANCELED:
                    return out
                now = self.clock()
                for host in same:
                    answer = answers.by_host.get(host.name)
                    record = self._unanswered(environment, host, app, result, answer, now)
                    if record is None:
                        assert answer is not None
                        record = self._found(
                            environment, host, app, answer.stdout or "", probe.version_regex,
                            f"{argv[0]} exited {answer.rc}", now,
                        )  # fmt: skip
                    out.append(record)
        return out

    # -- from the controller
    def _http(
        self,
        environment: EnvironmentDesired,
        group: GroupDesired,
        hosts: Sequence[Host],
        probe: HttpProbe,
    ) -> list[ObservedVersion]:
        out = []
        for host in hosts:
            for app in group.apps:
                port = host.ports.get(app)
                values = {
                    "host": host.address, "name": host.name, "app": app,
                    "port": None if port is None else str(port),
                    "environment": environment.name, "group": group.name,
                    "_missing_port": f"host {host.name} has no port for app {app}",
                }  # fmt: skip
                try:
                    url = render_template(probe.url, values)
                except MissingPlaceholder as exc:
                    out.append(self._failed(environment, host, app, str(exc)))
                    continue
                if self.versions is None:
                    out.append(self._failed(environment, host, app, "no HTTP prober"))
                    continue
                answered, body, detail = self.versions.read(url, timeout=probe.timeout)
                now = self.clock()
                if not answered:
                    out.append(
                        ObservedVersion(
                            environment.name,
                            host.name,
                            app,
                            None,
                            ObservationStatus.UNREACHABLE,
                            detail,
                            now,
                        )
                    )
                    continue
                out.append(
                    self._found(environment, host, app, body, probe.version_regex, detail, now)
                )
        return out

    # -- records
    @staticmethod
    def _unanswered(
        environment: EnvironmentDesired,
        host: Host,
        app: str,
        result: RunResult,
        answer: ansible_observe.Answer | None,
        now: float,
    ) -> ObservedVersion | None:
        """The observation of a host that gave no usable answer, or None."""
        outcome = result.hosts.get(host.name)
        if outcome is not None and outcome.status is HostStatus.UNREACHABLE:
            status, detail = ObservationStatus.UNREACHABLE, outcome.message
        elif answer is not None and answer.failure:
            status, detail = ObservationStatus.FAILED, answer.failure
        elif answer is None:
            status = ObservationStatus.FAILED
            detail = (outcome.message if outcome else "") or result.message or "no answer"
        else:
            return None
        return ObservedVersion(environment.name, host.name, app, None, status, detail[:300], now)

    @staticmethod
    def _found(
        environment: EnvironmentDesired,
        host: Host,
        app: str,
        text: str,
        regex: str,
        detail: str,
        now: float,
    ) -> ObservedVersion:
        version = version_in(text, regex)
        status = ObservationStatus.OK if version else ObservationStatus.MISSING
        shown = "" if version else f"{detail}; no version matching {regex!r}"
        return ObservedVersion(environment.name, host.name, app, version, status, shown, now)

    def _failed(
        self, environment: EnvironmentDesired, host: Host, app: str, detail: str
    ) -> ObservedVersion:
        return ObservedVersion(
            environment.name, host.name, app, None, ObservationStatus.FAILED, detail, self.clock()
        )
