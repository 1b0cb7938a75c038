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
* ``ssh_tuning``: the raw rollout with pipelining off/on x ControlPersist off/on
  (``SshFleet.ansible_envvars``: ``ANSIBLE_PIPELINING``, ``ANSIBLE_SSH_ARGS``), interleaved, on
  8 hosts (quick: 5; ``BENCH_SSH_TUNING_HOSTS=20`` for the size of ``ssh_rollout``, ~15 min).
"""

from __future__ import annotations

import itertools
import os
import statistics
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from bench.ansible_pull import ansible_playbook, run_playbook
from bench.common import DesiredRepo, Stopwatch, cpu_seconds, git
from bench.registry import DERIVED, Context, Row, register
from reconciler import content
from reconciler.desired.model import GroupDesired
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
FIRST_ADDRESS = 100  # 127.0.1.100+: apart from tests/ssh (10, 40) and tests/ssh/tuning (200)
ENV_FILE = "environments/prod.yaml"
PLAYBOOK = content.playbooks_dir() / "deploy-app.yml"
TUNINGS = ((True, True), (False, True), (True, False), (False, False))  # (pipelining, persist)
# 4 settings x 3 runs of the 20-host rollout take ~15 min here; 8 hosts keep it near 5 min.
TUNING_HOSTS = 8


def env_text(version: str) -> str:
    """prod.yaml: group web runs shop at ``version`` in steps [10, 50, 100], gated on /healthz.

    The test apps listen on 127.0.0.1 (the hosts share this machine), so the gate asks there.
    """
    canary = ", ".join(map(str, CANARY))
    return (
        f"environment: {ENVIRONMENT}\n"
        "inventory: inventories/prod.yml\n"
        "defaults:\n"
        "  timeout: 300s\n"
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
    checker: HealthChecker = field(default_factory=HealthChecker)
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
    names = [f"web-{i:02d}" for i in range(1, hosts + 1)]
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
            settings = Settings(
                state_dir=base / "state",
                source={"url": repo.url},
                execution={"forks": FORKS, "extra_envvars": fleet.ansible_envvars()},
            )
            reconciler = wiring.build(settings)
            yield Rig(base, fleet, repo, reconciler, group, batches)
        finally:
            if reconciler is not None:
                reconciler.store.close()
            fleet.stop()
            left = fleet.leftovers()
            if left:
                print(f"ssh_rollout: left behind: {left}", file=sys.stderr)


def reconciler_rollout(rig: Rig) -> dict[str, float]:
    """Bump the version in Git (untimed), then time one ``reconcile_once`` that rolls it out."""
    version = rig.new_version()
    rig.repo.write(ENV_FILE, env_text(version))
    rig.repo.commit_push(f"shop {version}")
    rig.fleet.drop_connections()
    reconciler, watch = rig.reconciler, Stopwatch()
    targets = [
        (reconciler.source, "refresh", "refresh"),
        (reconciler.adapters.runner, "run", "playbook"),
        (reconciler.adapters.checker, "evaluate", "gates"),
    ]
    with watch.instrument(targets) as missing:
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
    parts = {k: watch.totals[k] for k in ("refresh", "playbook", "gates")}
    return {"wall": wall, "cpu": cpu, **parts, "other": wall - sum(parts.values())}


def raw_rollout(rig: Rig, envvars: Mapping[str, str]) -> dict[str, float]:
    """The same batches by hand: ``ansible-playbook --limit`` then the same gates, per batch."""
    version = rig.new_version()
    commit = git(rig.repo.bare, "rev-parse", "main")
    extravars = rig.workdir / f"extravars-{version}.yml"
    extravars.write_text(
        dump_unsafe_yaml(
            {
                "reconciler_apps": {APP: version},
                "reconciler_environment": ENVIRONMENT,
                "reconciler_group": GROUP,
                "reconciler_commit": commit,
                "reconciler_rollout_id": f"raw{version.replace('.', '')}".ljust(16, "0"),
            }
        ),
        encoding="utf-8",
    )
    local_temp = rig.workdir / "raw-tmp"
    local_temp.mkdir(exist_ok=True)
    base_env = {
        **os.environ,
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_ROLES_PATH": str(content.roles_dir()),
        "ANSIBLE_PIPELINING": "True",
        **envvars,
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "ANSIBLE_LOCAL_TEMP": str(local_temp),
    }
    hosts = {h.name: h for h in rig.group.hosts}
    rig.fleet.drop_connections()
    playbook = gates = 0.0
    cpu, start = cpu_seconds(), time.perf_counter()
    for batch in rig.batches:
        argv = [
            ansible_playbook(),
            "-i",
            str(rig.inventory),
            "-e",
            f"@{extravars}",
            "--limit",
            ",".join(batch),
            str(PLAYBOOK),
        ]
        env = {**base_env, "ANSIBLE_FORKS": str(min(FORKS, len(batch)))}
        playbook += run_playbook(argv, env, list(batch))[0]
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
    return {"wall": wall, "cpu": cpu, "playbook": playbook, "gates": gates}


def _median(samples: Sequence[Mapping[str, float]], key: str) -> float:
    return statistics.median(s[key] for s in samples)


@register(
    "ssh_rollout",
    "20-host SSH rollout [10, 50, 100]: reconciler vs raw ansible-playbook --limit per batch",
)
def ssh_rollout(ctx: Context) -> list[Row]:
    hosts, reps = (5, 2) if ctx.quick else (20, 5)
    label = f"{hosts} hosts over SSH, [10, 50, 100]"
    ours: list[dict[str, float]] = []
    raw: list[dict[str, float]] = []
    with rig(ctx, hosts) as r:
        envvars = r.fleet.ansible_envvars()
        reconciler_rollout(r)  # warm-up: helper on every host, imports, store (untimed)
        for rep in range(reps):  # alternate which goes first
            order = ("ours", "raw") if rep % 2 == 0 else ("raw", "ours")
            for which in order:
                if which == "ours":
                    ours.append(reconciler_rollout(r))
                else:
                    raw.append(raw_rollout(r, envvars))
        batches = "/".join(str(len(b)) for b in r.batches)
    ours_wall, raw_wall = _median(ours, "wall"), _median(raw, "wall")
    ratio = ours_wall / raw_wall
    ours_pb, raw_pb = _median(ours, "playbook"), _median(raw, "playbook")
    rows = [
        Row.of(
            "ssh.rollout.reconciler",
            f"{label}: reconciler (reconcile_once)",
            [s["wall"] for s in ours],
            note=f"batches {batches}; CPU median {_median(ours, 'cpu'):.1f} s",
        ),
        Row.of(
            "ssh.rollout.raw",
            f"{label}: raw ansible-playbook --limit per batch + same gates",
            [s["wall"] for s in raw],
            note=f"CPU median {_median(raw, 'cpu'):.1f} s",
        ),
        Row(
            "ssh.rollout.ratio",
            "reconciler / raw (wall, ratio of medians)",
            ratio,
            "x",
            runs=reps,
            kind=DERIVED,
            note=f"target <= 1.05; {'met' if ratio <= 1.05 else 'missed'}; "
            f"+{ours_wall - raw_wall:.2f} s",
        ),
        Row(
            "ssh.rollout.playbook_ratio",
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
        ("other", "other: plan, store, journal"),
    ):
        rows.append(
            Row.of(
                f"ssh.rollout.reconciler.{key}",
                f"reconciler: {what}",
                [s[key] for s in ours],
                detail=True,
            )
        )
    for key, what in (("playbook", "ansible-playbook runs"), ("gates", "health gates")):
        rows.append(
            Row.of(f"ssh.rollout.raw.{key}", f"raw: {what}", [s[key] for s in raw], detail=True)
        )
    for name, runs in (("reconciler", ours), ("raw", raw)):
        rows.append(
            Row.of(
                f"ssh.rollout.{name}.cpu",
                f"{name}: CPU (process + children)",
                [s["cpu"] for s in runs],
                detail=True,
            )
        )
    return rows


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
