"""Observation: what one look at the whole fleet costs, against a full playbook run.

``observe_local``: a ``LocalFleet`` of 1,000 hosts (quick: 100) in one group running ``shop``,
observed the way ``reconciler observe --env prod`` does without a daemon: ``Reconciler.refresh``
then ``Reconciler.observe`` (built with ``wiring.build``, default ``observe: {fact: ...}`` and
``observation.forks``), i.e. one ad-hoc run of the shipped ``reconciler-observe.yml`` through
ansible-runner, whose ``raw`` task runs the executable fact (installed by the role:
``app-service fact``) on each host. The first host is deployed with the shipped playbook
(untimed); the other hosts are copies of its deploy root (release, ``current`` link, pidfile of
the one running app, the fact file re-pointed at their own app root), so every host reports
the version and "running" as a deployed one does, without 1,000 deploys and 1,000 app
processes. Every observation must find the version on every host (``in_sync``). CPU is this
process and its reaped children (ansible-playbook, its forks, the fact executables): with local
connections that is everything the observation costs. Against the ansible-pull reference: the
CPU per host of an unchanged full run (``pull.cpu_per_host`` when ``ansible_pull`` ran before,
else the figure of docs/performance.md). ``BENCH_OBSERVE_HOSTS`` and ``BENCH_OBSERVE_REPS`` set
the size and the repetitions (3, quick 2: one observation of 1,000 hosts took ~1,000 CPU-s with
``setup``, ~150 CPU-s with ``raw``).

The SSH tier is measured by ``ssh_rollout`` / ``ssh_rollout_100`` (bench/ssh_rollout.py) on
the fleet its rollouts deployed.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

from bench.ansible_pull import ansible_playbook, run_playbook
from bench.common import DesiredRepo, cpu_seconds
from bench.registry import DERIVED, Context, Row, register
from reconciler import content
from reconciler.record import DeployedVersion
from reconciler.service import wiring
from reconciler.settings import Settings
from reconciler.testing.fleet import LocalFleet, free_port, served_version

APP, VERSION, ENVIRONMENT, GROUP = "shop", "2.4.1", "prod", "web"
HOSTS = 1_000
# bench ansible_pull, 2026-11-24 (docs/performance.md): unchanged full run, CPU-s per host
PULL_CPU_PER_HOST = 1.23
ENV_TEXT = (
    f"environment: {ENVIRONMENT}\n"
    "inventory: inventories/prod.yml\n"
    "defaults:\n"
    "  rollout: {canary: [100], bake: 0s}\n"
    "groups:\n"
    f"  {GROUP}:\n"
    f'    apps: {{{APP}: "{VERSION}"}}\n'
)


def _deploy_first(fleet: LocalFleet, inventory: Path, workdir: Path, host: str) -> None:
    """The shipped playbook on ``host`` (untimed set-up): release, app, fact file."""
    extravars = workdir / "extravars.json"
    extravars.write_text(
        json.dumps(
            {
                "reconciler_apps": {APP: VERSION},
                "reconciler_environment": ENVIRONMENT,
                "reconciler_group": GROUP,
                "reconciler_commit": "0" * 40,
                "reconciler_rollout_id": "bench",
            }
        )
    )
    env = {
        **os.environ,
        **fleet.environ(),
        "ANSIBLE_ROLES_PATH": str(content.roles_dir()),
        "ANSIBLE_PIPELINING": "True",
        "ANSIBLE_HOST_KEY_CHECKING": "False",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_NOCOLOR": "1",
    }
    playbook = str(content.playbooks_dir() / "deploy-app.yml")
    argv = [ansible_playbook(), "-i", str(inventory), "-e", f"@{extravars}", "--limit", host]
    run_playbook([*argv, playbook], env, [host])


def _clone_host(fleet: LocalFleet, source: str, host: str) -> None:
    """``host`` as a copy of ``source``'s deploy root, its fact file pointed at its own root."""
    src_root, dst_root = fleet.app_root(source, APP), fleet.app_root(host, APP)
    shutil.copytree(src_root, dst_root, symlinks=True)
    fact = fleet.fact_file(source, APP).read_text(encoding="utf-8")
    if str(src_root) not in fact:
        raise RuntimeError(f"the fact file of {source} does not name its app root: {fact!r}")
    target = fleet.fact_file(host, APP)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(fact.replace(str(src_root), str(dst_root)), encoding="utf-8")
    target.chmod(0o755)


@register(
    "observe_local",
    "one observation of 1,000 local hosts (reconciler observe's path) vs the full-run reference",
)
def observe_local(ctx: Context) -> list[Row]:
    hosts = int(os.environ.get("BENCH_OBSERVE_HOSTS", 100 if ctx.quick else HOSTS))
    reps = int(os.environ.get("BENCH_OBSERVE_REPS", ctx.reps(3, 2)))
    names = [f"web-{i:04d}" for i in range(1, hosts + 1)]
    fleet = LocalFleet(ctx.workdir / "fleet").create()
    fleet.build(APP, VERSION)
    repo = DesiredRepo(ctx.workdir / "git")
    ports = {h: {APP: free_port()} for h in names}
    inventory = repo.inventory({GROUP: names}, ports)
    repo.write("environments/prod.yaml", ENV_TEXT)
    repo.commit_push("fleet")
    settings = Settings(
        state_dir=ctx.workdir / "state",
        source={"url": repo.url},
        execution={"extra_envvars": fleet.environ()},
    )
    reconciler = wiring.build(settings)
    samples: list[dict[str, float]] = []
    try:
        began = time.perf_counter()
        _deploy_first(fleet, inventory, ctx.workdir, names[0])
        if served_version(ports[names[0]][APP]) != VERSION:
            raise RuntimeError(f"{names[0]} does not serve {VERSION}")
        for name in names[1:]:
            _clone_host(fleet, names[0], name)
        setup = time.perf_counter() - began
        now = time.time()
        reconciler.store.record_deployed(
            [DeployedVersion(ENVIRONMENT, h, APP, VERSION, GROUP, None, None, now) for h in names]
        )
        for rep in range(reps):
            print(f"  observe_local: observation {rep + 1}/{reps}", file=sys.stderr, flush=True)
            cpu, start = cpu_seconds(), time.perf_counter()
            snapshot = reconciler.refresh()  # what `reconciler observe` runs, without a daemon
            if snapshot.state is None:
                raise RuntimeError("observe_local: no valid desired state")
            states = reconciler.observe(snapshot.state.environments[ENVIRONMENT], snapshot)
            wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu
            wrong = [(s.host, s.observed, str(s.drift)) for s in states if s.observed != VERSION]
            if len(states) != hosts or len(wrong) == hosts:
                raise RuntimeError(f"observe_local: {len(states)} states; wrong: {wrong[:5]}")
            if wrong:  # reported in the note: a look cut short is no figure
                print(f"  observe_local: {len(wrong)} not seen: {wrong[:5]}", file=sys.stderr)
            print(f"  observe_local: wall {wall:.1f} s, CPU {cpu:.1f} s", file=sys.stderr)
            samples.append({"wall": wall, "cpu": cpu, "missed": len(wrong)})
    finally:
        reconciler.store.close()
        fleet.stop()
    cpu = sorted(s["cpu"] for s in samples)[len(samples) // 2]
    per_host = cpu / hosts
    pulled = ctx.row("pull.cpu_per_host")
    reference = pulled.value if pulled is not None else PULL_CPU_PER_HOST
    source = "ansible_pull of this run" if pulled is not None else "docs/performance.md"
    ratio = per_host / reference
    label = f"observation of {hosts:,} local hosts (refresh + Reconciler.observe)"
    return [
        Row(
            "observe.local.setup",
            f"set-up: deploy 1 host, copy it to {hosts - 1:,}",
            setup,
            "s",
            kind="single run",
        ),
        Row.of(
            f"observe.local.{hosts}",
            f"{label}: wall",
            [s["wall"] for s in samples],
            note=f"one group, forks {settings.observation.forks}; CPU median {cpu:.1f} s; "
            f"hosts not seen: {max(s['missed'] for s in samples)}",
        ),
        Row.of(
            f"observe.local.{hosts}.cpu",
            f"{label}: CPU",
            [s["cpu"] for s in samples],
            note="process + ansible-playbook, its forks and the fact executables",
        ),
        Row(
            "observe.local.cpu_per_host",
            "observation, local connection: CPU per host",
            per_host,
            "s",
            runs=len(samples),
            kind=DERIVED,
            note=f"CPU median / {hosts:,} hosts",
        ),
        Row(
            "observe.local.ratio",
            "observation / full run (CPU per host)",
            ratio,
            "x",
            runs=len(samples),
            kind=DERIVED,
            note=f"full run {reference:.2f} CPU-s per host ({source}); target < 1/20 = 0.05; "
            f"{'met' if ratio < 0.05 else 'missed'}; 1 : {1 / ratio:.0f}",
        ),
    ]
