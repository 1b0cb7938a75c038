"""Rollout over real SSH: reconciler vs raw ``ansible-playbook --limit`` per batch; SSH tuning.

An ``SshFleet`` of 20 hosts (quick: 5; one sshd each on 127.0.1.100+, host key checking on)
runs the shipped ``deploy-app.yml`` for app ``shop``, each host gated on its ``/healthz``
(HTTP, expecting the version; interval 0.2 s; bake 0).

* ``ssh_rollout``: a reconciler rollout in canary steps ``[10, 50, 100]`` (2, 8 and 10 hosts):
  commit + push a version bump (untimed), then ``Reconciler.reconcile_once()`` in-process (built
  with ``wiring.build``), timed whole: fetch, validation, plan, 3 steps through
  ansible-runner, the gates, the store; broken down by wrapping the source stage's ``refresh``
  and the ``runner`` and ``checker`` of its ``adapters``. Against it, the same rollout by hand:
  for each batch of the same hosts in the same cohort order (``canary.cohort``),
  ``ansible-playbook --limit
  <batch>`` with the same inventory, playbook, roles, extra vars (``-e @file``, unsafe-tagged as
  the reconciler writes them) and envvars (pipelining, ControlPersist, forks, host key
  checking), then the same gates through ``HealthChecker.evaluate``. Repetitions alternate
  which goes first; every run deploys a version no run deployed before, and starts without ssh
  control masters (``drop_connections``), so each is a full deploy on fresh connections.
  After the warm-up deploy, before the rollouts, whole-fleet observations
  (``Reconciler.refresh`` + ``Reconciler.observe``, what ``reconciler observe --env prod``
  runs without a daemon: one ad-hoc run of ``reconciler-observe.yml`` reading the local
  facts) alternate with an unchanged full run of the playbook on every host (the
  ansible-pull/cron reference over SSH); both on fresh SSH connections, CPU of the process
  and its children.
* ``ssh_rollout_100``: the same at 100 hosts (127.0.1.100-199; ``BENCH_SSH_HOSTS`` for another
  size up to 155, ``BENCH_SSH_REPS`` for the repetitions a side, default 3, quick 2).
* ``ssh_tuning``: the raw rollout with pipelining off/on x ControlPersist off/on
  (``SshFleet.ansible_envvars``: ``ANSIBLE_PIPELINING``, ``ANSIBLE_SSH_ARGS``), interleaved, on
  8 hosts (quick: 5; ``BENCH_SSH_TUNING_HOSTS=20`` for the size of ``ssh_rollout``, ~15 min).
"""

from __future__ import annotations

import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.ansible_pull import ansible_playbook, run_playbook
from bench.common import DesiredRepo, Stopwatch, cpu_seconds, git
from bench.registry import DERIVED, Context, Row, register
from reconciler import content
from reconciler.desired.model import GroupDesired
from reconciler.edges.ansible import PlaybookRun
from reconciler.edges.ansible.extravars import dump_unsafe_yaml
from reconciler.edges.gates import GateTarget
from reconciler.edges.gates.checker import HealthChecker
from reconciler.plan import canary
from reconciler.rollout.reconciler import Reconciler
from reconciler.service import wiring
from reconciler.settings import Settings
from reconciler.testing.fleet import served_version
from reconciler.testing.ssh_fleet import SshFleet, find_sshd

APP, ENVIRONMENT, GROUP = "shop", "prod", "web"
CANARY = (10, 50, 100)
FORKS = 20
FIRST_ADDRESS = 100  # 127.0.1.100+ (tests/ssh use 10-69 per pytest-xdist worker, up to 189)
ENV_FILE = "environments/prod.yaml"
PLAYBOOK = content.playbooks_dir() / "deploy-app.yml"
TUNINGS = ((True, True), (False, True), (True, False), (False, False))  # (pipelining, persist)
# 4 settings x 3 runs of the 20-host rollout take ~15 min here; 8 hosts keep it near 5 min.
TUNING_HOSTS = 8
# ssh_rollout_100: 127.0.1.100-199, below tests/ssh/tuning's 200+ (SshFleet allows up to .254).
LARGE_HOSTS = 100


def env_text(version: str, timeout: int = 300) -> str:
    """prod.yaml: group web runs shop at ``version`` in steps [10, 50, 100], gated on /healthz.

    The test apps listen on 127.0.0.1 (the hosts share this machine), so the gate asks there.
    """
    canary = ", ".join(map(str, CANARY))
    return (
        f"environment: {ENVIRONMENT}\n"
        "inventory: inventories/prod.yml\n"
        "defaults:\n"
        f"  timeout: {timeout}s\n"
        f"  rollout: {{canary: [{canary}], bake: 0s, max_failed_hosts: 0}}\n"
        "  health:\n"
        "    - http:\n"
        '        url: "http://127.0.0.1:{port}/healthz"\n'
        '        expect_body: "{version}"\n'
        "        interval: 0.2s\n"
        "        timeout: 30s\n"
        "groups:\n"
        f"  {GROUP}:\n"
        f'    apps: {{{APP}: "{version}"}}\n'
    )


@dataclass
class Rig:
    """The fleet, the desired-state remote, an in-process reconciler and the batches."""

    workdir: Path
    fleet: SshFleet
    repo: DesiredRepo
    reconciler: Reconciler
    group: GroupDesired
    batches: tuple[tuple[str, ...], ...]
    config: Path  # the same settings as a configuration file, for ``reconciler sync --once``
    checker: HealthChecker = field(default_factory=HealthChecker)
    current: str = ""  # the version the hosts run (the last rollout's)
    timeout: int = 300  # of a playbook step; 40-50 hosts' first deploy take > 300 s when busy
    versions: Iterator[str] = field(default_factory=lambda: (f"3.0.{n}" for n in itertools.count()))

    @property
    def inventory(self) -> Path:
        return self.repo.work / "inventories" / "prod.yml"

    def new_version(self) -> str:
        """A version no run deployed before, with its artifact built."""
        version = next(self.versions)
        self.fleet.build(APP, version)
        return version

    def serving(self, version: str) -> None:
        wrong = [h.name for h in self.fleet.hosts if served_version(h.app_port) != version]
        if wrong:
            raise RuntimeError(f"not serving {version}: {wrong}")


@contextmanager
def rig(ctx: Context, hosts: int) -> Iterator[Rig]:
    """Start ``hosts`` sshd hosts and a reconciler on a remote; stop everything on exit."""
    if find_sshd() is None:
        raise RuntimeError("sshd is not installed (apt-get install openssh-server)")
    width = max(2, len(str(hosts)))
    names = [f"web-{i:0{width}d}" for i in range(1, hosts + 1)]
    base = ctx.workdir / "ssh"
    fleet = SshFleet(base / "fleet", hosts, first_address=FIRST_ADDRESS, names=names)
    reconciler: Reconciler | None = None
    with fleet:
        try:
            repo = DesiredRepo(base / "git")
            fleet.write_inventory(repo.work / "inventories" / "prod.yml", {GROUP: names})
            repo.write(ENV_FILE, env_text("0.0.0"))
            repo.commit_push("inventory")
            loaded = wiring.load_repository(repo.work)
            if loaded.state is None:
                raise RuntimeError(f"invalid desired state: {[str(p) for p in loaded.problems]}")
            group = loaded.state.environments[ENVIRONMENT].groups[GROUP]
            cohort = canary.cohort(ENVIRONMENT, GROUP, names)
            counts = (0, *canary.step_counts(CANARY, len(cohort)))
            batches = tuple(cohort[a:b] for a, b in itertools.pairwise(counts) if b > a)
            values = {
                "state_dir": str(base / "state"),
                "source": {"url": repo.url},
                "execution": {"forks": FORKS, "extra_envvars": fleet.ansible_envvars()},
            }
            config = base / "reconciler.json"  # JSON is YAML: what Settings.load reads
            config.write_text(json.dumps(values, indent=2), encoding="utf-8")
            reconciler = wiring.build(Settings.load(config))
            yield Rig(
                base, fleet, repo, reconciler, group, batches, config, timeout=max(300, 15 * hosts)
            )
        finally:
            if reconciler is not None:
                reconciler.store.close()
            fleet.stop()
            left = fleet.leftovers()
            if left:
                print(f"ssh_rollout: left behind: {left}", file=sys.stderr)


@contextmanager
def _attribute(target: object, name: str, value: object) -> Iterator[None]:
    """``target.name = value`` (an instance attribute over the class's method) for the block."""
    setattr(target, name, value)
    try:
        yield
    finally:
        delattr(target, name)


def reconciler_rollout(rig: Rig) -> dict[str, float]:
    """Bump the version in Git (untimed), then time one ``reconcile_once`` that rolls it out."""
    version = rig.new_version()
    rig.repo.write(ENV_FILE, env_text(version, rig.timeout))
    rig.repo.commit_push(f"shop {version}")
    rig.fleet.drop_connections()
    reconciler, watch = rig.reconciler, Stopwatch()
    runner = reconciler.adapters.runner
    targets = [
        (reconciler.source, "refresh", "refresh"),
        (reconciler.adapters.checker, "evaluate", "gates"),
    ]
    # The observer runs its ad-hoc play through the same runner: tell its runs (label
    # ``<env>-<group>-observe``) from the playbook steps.
    playbook, observe = watch.wrap("playbook", runner.run), watch.wrap("observe", runner.run)

    def run(request: PlaybookRun, *args: Any, **kwargs: Any) -> Any:
        timed = observe if request.label.endswith("-observe") else playbook
        return timed(request, *args, **kwargs)

    with watch.instrument(targets) as missing, _attribute(runner, "run", run):
        if missing:
            raise RuntimeError(f"ssh_rollout: cannot time {', '.join(missing)}")
        cpu, start = cpu_seconds(), time.perf_counter()
        result = reconciler.reconcile_once()
        wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    [outcome] = result.environments
    [group] = outcome.groups
    if outcome.result != "applied" or group.state != "succeeded":
        raise RuntimeError(f"reconciler rollout {version}: {group.state}: {group.reason}")
    assert group.rollout_id is not None
    steps = tuple(s.hosts for s in reconciler.store.steps(group.rollout_id))
    if steps != rig.batches:
        raise RuntimeError(f"reconciler steps {steps} differ from the batches {rig.batches}")
    rig.serving(version)
    rig.current = version
    parts = {k: watch.totals[k] for k in ("refresh", "playbook", "gates", "observe")}
    return {"wall": wall, "cpu": cpu, **parts, "other": wall - sum(parts.values())}


def cli_rollout(rig: Rig) -> dict[str, float]:
    """As a user runs it: bump the version in Git (untimed), then ``reconciler sync --once`` as
    a new process (interpreter start, imports, fetch, plan, the steps, gates, store), timed
    from outside; CPU of that process and its children."""
    version = rig.new_version()
    rig.repo.write(ENV_FILE, env_text(version, rig.timeout))
    rig.repo.commit_push(f"shop {version}")
    rig.fleet.drop_connections()
    argv = [str(Path(sys.executable).parent / "reconciler"), "-c", str(rig.config)]
    cpu, start = cpu_seconds(), time.perf_counter()
    done = subprocess.run(
        [*argv, "sync", "--once"], capture_output=True, text=True, timeout=3600, check=False
    )
    wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    if done.returncode != 0:
        output = done.stdout[-1500:] + done.stderr[-800:]
        raise RuntimeError(f"reconciler sync --once {version}: {output}")
    [rollout] = rig.reconciler.store.rollouts(ENVIRONMENT, limit=1)
    steps = tuple(s.hosts for s in rig.reconciler.store.steps(rollout.id))
    if steps != rig.batches or rollout.state != "succeeded":
        raise RuntimeError(f"sync --once {version}: {rollout.state}, steps {steps}")
    rig.serving(version)
    rig.current = version
    return {"wall": wall, "cpu": cpu}


def _extravars(rig: Rig, version: str, rollout_id: str) -> Path:
    """The extra vars file of a raw run, unsafe-tagged as the reconciler writes them."""
    commit = git(rig.repo.bare, "rev-parse", "main")
    path = rig.workdir / f"extravars-{rollout_id}.yml"
    path.write_text(
        dump_unsafe_yaml(
            {
                "reconciler_apps": {APP: version},
                "reconciler_environment": ENVIRONMENT,
                "reconciler_group": GROUP,
                "reconciler_commit": commit,
                "reconciler_rollout_id": rollout_id,
            }
        ),
        encoding="utf-8",
    )
    return path


def _raw_env(rig: Rig, envvars: Mapping[str, str]) -> dict[str, str]:
    local_temp = rig.workdir / "raw-tmp"
    local_temp.mkdir(exist_ok=True)
    return {
        **os.environ,
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_ROLES_PATH": str(content.roles_dir()),
        "ANSIBLE_PIPELINING": "True",
        **envvars,
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "ANSIBLE_LOCAL_TEMP": str(local_temp),
    }


def _playbook_argv(rig: Rig, extravars: Path, hosts: Sequence[str]) -> list[str]:
    return [
        ansible_playbook(),
        "-i",
        str(rig.inventory),
        "-e",
        f"@{extravars}",
        "--limit",
        ",".join(hosts),
        str(PLAYBOOK),
    ]


def raw_rollout(rig: Rig, envvars: Mapping[str, str]) -> dict[str, float]:
    """The same batches by hand: ``ansible-playbook --limit`` then the same gates, per batch."""
    version = rig.new_version()
    extravars = _extravars(rig, version, f"raw{version.replace('.', '')}".ljust(16, "0"))
    base_env = _raw_env(rig, envvars)
    hosts = {h.name: h for h in rig.group.hosts}
    rig.fleet.drop_connections()
    playbook = gates = 0.0
    cpu, start = cpu_seconds(), time.perf_counter()
    for batch in rig.batches:
        env = {**base_env, "ANSIBLE_FORKS": str(min(FORKS, len(batch)))}
        playbook += run_playbook(_playbook_argv(rig, extravars, batch), env, list(batch))[0]
        began = time.perf_counter()
        results = rig.checker.evaluate(
            rig.group.health,
            [GateTarget(hosts[h], APP, version) for h in batch],
            environment=ENVIRONMENT,
            group=GROUP,
        )
        gates += time.perf_counter() - began
        failed = [r for r in results if not r.passed]
        if failed:
            raise RuntimeError(f"raw rollout {version}: gate failed: {failed[0]}")
    wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    rig.serving(version)
    rig.current = version
    return {"wall": wall, "cpu": cpu, "playbook": playbook, "gates": gates}


def observe_fleet(rig: Rig) -> dict[str, float]:
    """One observation of the whole fleet as ``reconciler observe --env prod`` makes it without
    a daemon (``Reconciler.refresh`` then ``Reconciler.observe``), on fresh SSH connections;
    every host must report the version it runs."""
    rig.fleet.drop_connections()
    reconciler = rig.reconciler
    cpu, start = cpu_seconds(), time.perf_counter()
    snapshot = reconciler.refresh()
    if snapshot.state is None:
        raise RuntimeError("observe: no valid desired state")
    states = reconciler.observe(snapshot.state.environments[ENVIRONMENT], snapshot)
    wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    wrong = [(s.host, s.observed, str(s.drift)) for s in states if s.observed != rig.current]
    if len(states) != len(rig.fleet.hosts) or len(wrong) == len(states):
        raise RuntimeError(f"observe: {len(states)} states, not {rig.current}: {wrong[:5]}")
    if wrong:  # reported in the rows' note: a figure of a look cut short is no figure
        print(f"  observe: {len(wrong)} hosts not seen: {wrong[:5]}", file=sys.stderr, flush=True)
    return {"wall": wall, "cpu": cpu, "missed": len(wrong)}


def full_run(rig: Rig, envvars: Mapping[str, str]) -> dict[str, float]:
    """The ansible-pull/cron reference on this fleet: the shipped playbook on every host at
    the version they run (nothing changes), one ``ansible-playbook``, forks as the rollout."""
    extravars = _extravars(rig, rig.current, "fullrun".ljust(16, "0"))
    env = {**_raw_env(rig, envvars), "ANSIBLE_FORKS": str(FORKS)}
    names = [h.name for h in rig.fleet.hosts]
    rig.fleet.drop_connections()
    cpu, start = cpu_seconds(), time.perf_counter()
    run_playbook(_playbook_argv(rig, extravars, names), env, names)
    wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    rig.serving(rig.current)
    return {"wall": wall, "cpu": cpu}


def _median(samples: Sequence[Mapping[str, float]], key: str) -> float:
    return statistics.median(s[key] for s in samples)


def _rollout_rows(
    prefix: str,
    hosts: int,
    batches: str,
    ours: Sequence[Mapping[str, float]],
    raw: Sequence[Mapping[str, float]],
) -> list[Row]:
    label = f"{hosts} hosts over SSH, [10, 50, 100]"
    reps = min(len(ours), len(raw))
    ours_pb, raw_pb = _median(ours, "playbook"), _median(raw, "playbook")
    ours_cpu, raw_cpu = _median(ours, "cpu"), _median(raw, "cpu")
    rows = [
        Row.of(
            f"{prefix}.reconciler",
            f"{label}: reconciler (reconcile_once)",
            [s["wall"] for s in ours],
            note=f"batches {batches}; CPU median {ours_cpu:.1f} s",
        ),
        Row.of(
            f"{prefix}.raw",
            f"{label}: raw ansible-playbook --limit per batch + same gates",
            [s["wall"] for s in raw],
            note=f"CPU median {raw_cpu:.1f} s",
        ),
        _versus(f"{prefix}.ratio", "reconciler / raw (wall, ratio of medians)", ours, raw),
        Row(
            f"{prefix}.playbook_ratio",
            "playbook steps only: ansible-runner / plain ansible-playbook",
            ours_pb / raw_pb,
            "x",
            runs=reps,
            kind=DERIVED,
            note=f"{ours_pb:.2f} s vs {raw_pb:.2f} s (sum of the 3 steps, medians)",
        ),
    ]
    for key, what in (
        ("refresh", "fetch + validate + snapshot (refresh)"),
        ("playbook", "playbook steps (PlaybookRunner.run)"),
        ("gates", "health gates"),
        ("observe", "observations (Observer.observe: after each step, and when due)"),
        ("other", "other: plan, store, journal"),
    ):
        rows.append(
            Row.of(
                f"{prefix}.reconciler.{key}",
                f"reconciler: {what}",
                [s[key] for s in ours],
                detail=True,
            )
        )
    for key, what in (("playbook", "ansible-playbook runs"), ("gates", "health gates")):
        rows.append(
            Row.of(f"{prefix}.raw.{key}", f"raw: {what}", [s[key] for s in raw], detail=True)
        )
    for name, runs in (("reconciler", ours), ("raw", raw)):
        rows.append(
            Row.of(
                f"{prefix}.{name}.cpu",
                f"{name}: CPU (process + children)",
                [s["cpu"] for s in runs],
                detail=True,
            )
        )
    return rows


def _observation_rows(
    prefix: str,
    hosts: int,
    observed: Sequence[Mapping[str, float]],
    full: Sequence[Mapping[str, float]],
) -> list[Row]:
    """Whole-fleet observation vs an unchanged full playbook run, both over SSH."""
    obs_cpu, full_cpu = _median(observed, "cpu"), _median(full, "cpu")
    obs_wall, full_wall = _median(observed, "wall"), _median(full, "wall")
    ratio = obs_cpu / full_cpu
    return [
        Row.of(
            f"{prefix}.observe",
            f"observation of {hosts} SSH hosts (refresh + Reconciler.observe): wall",
            [s["wall"] for s in observed],
            note=f"fresh SSH connections; CPU median {obs_cpu:.2f} s; "
            f"hosts not seen: {max(s['missed'] for s in observed):.0f}",
        ),
        Row.of(
            f"{prefix}.observe.cpu",
            f"observation of {hosts} SSH hosts: CPU",
            [s["cpu"] for s in observed],
            note="process + ansible-runner's ansible-playbook and its ssh workers",
        ),
        Row(
            f"{prefix}.observe.cpu_per_host",
            "observation over SSH: CPU per host",
            obs_cpu / hosts,
            "s",
            runs=len(observed),
            kind=DERIVED,
            note=f"CPU median / {hosts} hosts",
        ),
        Row.of(
            f"{prefix}.full_run",
            f"full playbook run, {hosts} SSH hosts in sync (ansible-playbook, forks {FORKS}): wall",
            [s["wall"] for s in full],
            note=f"CPU median {full_cpu:.1f} s, {full_cpu / hosts:.2f} s per host",
        ),
        Row.of(
            f"{prefix}.full_run.cpu",
            f"full playbook run, {hosts} SSH hosts in sync: CPU",
            [s["cpu"] for s in full],
        ),
        Row(
            f"{prefix}.observe.ratio",
            "observation / full run (CPU, ratio of medians)",
            ratio,
            "x",
            runs=min(len(observed), len(full)),
            kind=DERIVED,
            note=f"target < 1/20 = 0.05; {'met' if ratio < 0.05 else 'missed'}; "
            f"1 : {1 / ratio:.0f}; wall {obs_wall / full_wall:.3f}x",
        ),
    ]


def _progress(prefix: str, which: str, sample: Mapping[str, float]) -> None:
    """Each run's figures as it ends (a long benchmark stopped early keeps them in its log)."""
    figures = ", ".join(f"{k} {v:.2f}" for k, v in sample.items())
    print(f"  {prefix} {which}: {figures}", file=sys.stderr, flush=True)


def _cli_rows(
    prefix: str,
    hosts: int,
    batches: str,
    cli: Sequence[Mapping[str, float]],
    raw: Sequence[Mapping[str, float]],
) -> list[Row]:
    label = f"{hosts} hosts over SSH, [10, 50, 100]"
    return [
        Row.of(
            f"{prefix}.cli",
            f"{label}: reconciler sync --once (a new process)",
            [s["wall"] for s in cli],
            note=f"batches {batches}; CPU median {_median(cli, 'cpu'):.1f} s",
        ),
        _versus(
            f"{prefix}.cli_ratio",
            "reconciler sync --once / raw (wall, ratio of medians, end to end)",
            cli,
            raw,
        ),
    ]


def _versus(
    name: str, what: str, ours: Sequence[Mapping[str, float]], raw: Sequence[Mapping[str, float]]
) -> Row:
    """The ratio of the wall medians of ``ours`` and ``raw``, against the 1.05 target."""
    ours_wall, raw_wall = _median(ours, "wall"), _median(raw, "wall")
    ratio = ours_wall / raw_wall
    return Row(
        name,
        what,
        ratio,
        "x",
        runs=min(len(ours), len(raw)),
        kind=DERIVED,
        note=f"target <= 1.05; {'met' if ratio <= 1.05 else 'missed'}; "
        f"+{ours_wall - raw_wall:.2f} s; CPU {_median(ours, 'cpu') / _median(raw, 'cpu'):.2f}x",
    )


def _ssh_rollout(
    ctx: Context, hosts: int, reps: int, prefix: str, observe_reps: int, inprocess_reps: int = 1
) -> list[Row]:
    cli: list[dict[str, float]] = []
    ours: list[dict[str, float]] = []
    raw: list[dict[str, float]] = []
    observed: list[dict[str, float]] = []
    full: list[dict[str, float]] = []
    with rig(ctx, hosts) as r:
        envvars = r.fleet.ansible_envvars()
        reconciler_rollout(r)  # warm-up: helper on every host, imports, store (untimed)
        # the observations first: at 100 hosts a run of the rollouts takes long on a busy machine
        for rep in range(observe_reps):  # alternate
            order = ("observe", "full") if rep % 2 == 0 else ("full", "observe")
            for which in order:
                if which == "observe":
                    observed.append(observe_fleet(r))
                else:
                    full.append(full_run(r, envvars))
                _progress(prefix, which, (observed if which == "observe" else full)[-1])
        sides = {"ours": ours, "cli": cli, "raw": raw}
        for rep in range(reps):  # alternate which goes first
            order = ["cli", "raw"] if rep % 2 == 0 else ["raw", "cli"]
            if rep < inprocess_reps:  # the in-process rollout, for its breakdown
                order.insert(rep % 3, "ours")
            for which in order:
                if which == "ours":
                    ours.append(reconciler_rollout(r))
                elif which == "cli":
                    cli.append(cli_rollout(r))
                else:
                    raw.append(raw_rollout(r, envvars))
                _progress(prefix, which, sides[which][-1])
            print(f"  {prefix}: run {rep + 1}/{reps} a side done", file=sys.stderr, flush=True)
        batches = "/".join(str(len(b)) for b in r.batches)
    rows = _cli_rows(prefix, hosts, batches, cli, raw)
    if ours:
        rows += _rollout_rows(prefix, hosts, batches, ours, raw)
    if observed:
        rows += _observation_rows(prefix, hosts, observed, full)
    return rows


@register(
    "ssh_rollout",
    "20-host SSH rollout [10, 50, 100]: reconciler vs raw ansible-playbook --limit per batch",
)
def ssh_rollout(ctx: Context) -> list[Row]:
    hosts, reps = (5, 2) if ctx.quick else (20, 5)
    return _ssh_rollout(ctx, hosts, reps, "ssh.rollout", observe_reps=ctx.reps(3, 2))


@register(
    "ssh_rollout_100",
    "100-host SSH rollout [10, 50, 100] as ssh_rollout, and whole-fleet observation vs a full "
    "run (BENCH_SSH_HOSTS, BENCH_SSH_REPS)",
    in_quick=False,
)
def ssh_rollout_100(ctx: Context) -> list[Row]:
    hosts = int(os.environ.get("BENCH_SSH_HOSTS", LARGE_HOSTS))
    reps = int(os.environ.get("BENCH_SSH_REPS", ctx.reps(3, 2)))
    observe_reps = int(os.environ.get("BENCH_SSH_OBSERVE_REPS", ctx.reps(3, 2)))
    inprocess = int(os.environ.get("BENCH_SSH_INPROCESS_REPS", 1))
    return _ssh_rollout(
        ctx, hosts, reps, f"ssh{hosts}.rollout", observe_reps=observe_reps, inprocess_reps=inprocess
    )


def _flags(pipelining: bool, persist: bool) -> str:
    on = {True: "on", False: "off"}
    return f"pipelining {on[pipelining]}, ControlPersist {on[persist]}"


@register(
    "ssh_tuning",
    "raw SSH rollout [10, 50, 100] with pipelining / ControlPersist off and on (8 hosts)",
    in_quick=False,
)
def ssh_tuning(ctx: Context) -> list[Row]:
    hosts = int(os.environ.get("BENCH_SSH_TUNING_HOSTS", 5 if ctx.quick else TUNING_HOSTS))
    reps = ctx.reps(3, 1)
    samples: dict[tuple[bool, bool], list[dict[str, float]]] = {t: [] for t in TUNINGS}
    with rig(ctx, hosts) as r:
        raw_rollout(r, r.fleet.ansible_envvars())  # warm-up: the helper on every host (untimed)
        for rep in range(reps):  # rotate the order so a busy spell does not hit one setting
            shift = rep % len(TUNINGS)
            for pipelining, persist in TUNINGS[shift:] + TUNINGS[:shift]:
                envvars = r.fleet.ansible_envvars(pipelining=pipelining, control_persist=persist)
                samples[pipelining, persist].append(raw_rollout(r, envvars))
    best = _median(samples[True, True], "wall")
    rows = []
    for tuning, runs in samples.items():
        wall = _median(runs, "wall")
        slug = "_".join(("pipe" if tuning[0] else "nopipe", "cp" if tuning[1] else "nocp"))
        rows.append(
            Row.of(
                f"ssh.tuning.{slug}",
                f"{hosts} hosts, raw rollout: {_flags(*tuning)}",
                [s["wall"] for s in runs],
                note=f"{wall / best:.2f}x of both on; playbooks {_median(runs, 'playbook'):.1f} s,"
                f" CPU {_median(runs, 'cpu'):.1f} s",
            )
        )
    return rows
