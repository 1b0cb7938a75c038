"""The ansible-pull/cron reference: the full shipped playbook on every host, every cycle.

A ``LocalFleet`` (``ansible_connection=local``, one app per host, like ``idle_cycle``) gets the
shipped ``playbooks/deploy-app.yml`` once (the deploy, untimed), then the measured runs apply the
same versions again: nothing changes, which is what a cron'd ansible-pull costs on a fleet in
sync. Runs use plain ``ansible-playbook`` (what ansible-pull runs) with the reconciler's own
settings (forks 20, pipelining), with ``--limit`` on the first 1, ``small`` and ``large`` hosts
(a 1-host run is what ansible-pull costs each host).

The cost model is in CPU-seconds (ansible-playbook and its workers, user + system), because
that is what the fleet pays and because it stays put when other work shares this 2-core machine,
where wall times of a parallel, CPU-bound run do not. A line ``C(n) = a + b * n`` through the
CPU medians at ``small`` and ``large`` hosts (a: fixed cost per run, b: cost per host) gives the
full run for 100 / 1,000 / 10,000 hosts: those figures are extrapolated and marked so. The ratio
divides the idle cycle's CPU (measured by ``idle_cycle``, or here if it did not run before) by
them. Wall times are reported as measured, with their own fit for reference.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench import idle_cycle
from bench.registry import DERIVED, EXTRAPOLATED, Context, Row, register
from reconciler import content
from reconciler.testing.fleet import LocalFleet, free_port, write_inventory

APP, VERSION = "shop", "2.4.1"
FORKS = 20
CORES = os.cpu_count() or 1
TARGETS = (100, 1_000, 10_000)
_RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)")


def ansible_playbook() -> str:
    candidate = Path(sys.executable).parent / "ansible-playbook"
    return str(candidate) if candidate.is_file() else shutil.which("ansible-playbook") or "x"


def _cpu_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_playbook(argv: list[str], env: dict[str, str], hosts: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds (ansible-playbook and its workers) of one run; raises on failure."""
    cpu, start = _cpu_children(), time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    wall, cpu = time.perf_counter() - start, _cpu_children() - cpu
    recap = {m[1]: m.groups()[1:] for m in map(_RECAP.match, done.stdout.splitlines()) if m}
    bad = [h for h in hosts if h not in recap or recap[h][2:] != ("0", "0")]
    if done.returncode != 0 or bad:
        raise RuntimeError(
            f"playbook failed (rc {done.returncode}) on {bad[:5]}: "
            f"{done.stdout[-1500:]}{done.stderr[-500:]}"
        )
    return wall, cpu


def measure(ctx: Context, sizes: tuple[int, ...], reps: int) -> dict[str, list[float]]:
    """Deploy ``max(sizes)`` hosts once, then time ``reps`` unchanged runs on each size."""
    large = max(sizes)
    fleet = LocalFleet(ctx.workdir / "fleet").create()
    fleet.build(APP, VERSION)
    hosts = [f"web-{i:03d}" for i in range(1, large + 1)]
    inventory = write_inventory(
        ctx.workdir / "inventory.yml", {"web": hosts}, {h: {APP: free_port()} for h in hosts}
    )
    extravars = ctx.workdir / "extravars.json"
    extravars.write_text(
        json.dumps(
            {
                "reconciler_apps": {APP: VERSION},
                "reconciler_environment": "prod",
                "reconciler_group": "web",
                "reconciler_commit": "0" * 40,
                "reconciler_rollout_id": "bench",
            }
        )
    )
    env = {
        **os.environ,
        **fleet.environ(),
        "ANSIBLE_ROLES_PATH": str(content.roles_dir()),
        "ANSIBLE_FORKS": str(FORKS),
        "ANSIBLE_PIPELINING": "True",
        "ANSIBLE_HOST_KEY_CHECKING": "False",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_NOCOLOR": "1",
    }
    playbook = str(content.playbooks_dir() / "deploy-app.yml")

    def argv(limit: list[str]) -> list[str]:
        return [
            ansible_playbook(),
            "-i",
            str(inventory),
            "-e",
            f"@{extravars}",
            "--limit",
            ",".join(limit),
            playbook,
        ]

    samples: dict[str, list[float]] = {"deploy": [], "deploy_cpu": []}
    try:
        wall, cpu = run_playbook(argv(hosts), env, hosts)
        samples["deploy"].append(wall)
        samples["deploy_cpu"].append(cpu)
        for _ in range(reps):  # alternate the sizes so a busy spell hits both
            for size in sizes:
                wall, cpu = run_playbook(argv(hosts[:size]), env, hosts[:size])
                samples.setdefault(f"wall.{size}", []).append(wall)
                samples.setdefault(f"cpu.{size}", []).append(cpu)
    finally:
        fleet.stop()
    return samples


def idle_cpu(ctx: Context) -> dict[int, tuple[float, float]]:
    """(CPU, wall) medians of the warm idle cycle per size, from ``idle_cycle`` or measured."""
    medians: dict[int, tuple[float, float]] = {}
    for hosts in TARGETS:
        cpu, wall = ctx.row(f"idle.warm.{hosts}.cpu"), ctx.row(f"idle.warm.{hosts}")
        if cpu is None or wall is None:
            warm = idle_cycle.measure(ctx, hosts, 1, ctx.reps(10, 3))["warm"]
            medians[hosts] = (
                statistics.median(s["cpu"] for s in warm),
                statistics.median(s["total"] for s in warm),
            )
        else:
            medians[hosts] = (cpu.value, wall.value)
    return medians


def _line(points: dict[int, float]) -> tuple[float, float]:
    """(intercept, slope) of the line through two (n, value) points."""
    (n1, v1), (n2, v2) = sorted(points.items())
    slope = (v2 - v1) / (n2 - n1)
    return v1 - n1 * slope, slope


@register("ansible_pull", "reference: full shipped playbook on every host (ansible-pull style)")
def run(ctx: Context) -> list[Row]:
    sizes = (1, 8) if ctx.quick else (1, 10, 50)
    small, large = sizes[-2:]
    samples = measure(ctx, sizes, ctx.reps(3, 2))
    deploy_cpu = samples["deploy_cpu"][0]
    rows = [
        Row.of(
            "pull.deploy",
            f"first deploy of {large} hosts (changes; set-up)",
            samples["deploy"],
            note=f"CPU {deploy_cpu:.1f} s, {deploy_cpu / large:.2f} s/host",
        ),
    ]
    wall_med, cpu_med = {}, {}
    for size in sizes:
        wall, cpu = samples[f"wall.{size}"], samples[f"cpu.{size}"]
        wall_med[size], cpu_med[size] = statistics.median(wall), statistics.median(cpu)
        what = f"full run, {size} host{'s' if size > 1 else ''} in sync"
        rows.append(
            Row.of(
                f"pull.run.{size}", f"{what}: wall", wall, note=f"forks {FORKS}; 2-core controller"
            )
        )
        rows.append(
            Row.of(
                f"pull.cpu.{size}",
                f"{what}: CPU",
                cpu,
                note="ansible-playbook + workers, user+sys"
                + ("; = one host's ansible-pull run" if size == 1 else ""),
            )
        )
    fixed, per_host = _line({n: cpu_med[n] for n in (small, large)})
    wall_fixed, wall_per_host = _line({n: wall_med[n] for n in (small, large)})
    fit = f"line through the {small}- and {large}-host CPU medians"
    rows += [
        Row(
            "pull.cpu_per_host", "full run: CPU per host (b)", per_host, "s", kind=DERIVED, note=fit
        ),
        Row(
            "pull.cpu_fixed", "full run: fixed CPU per run (a)", fixed, "s", kind=DERIVED, note=fit
        ),
        Row(
            "pull.wall_per_host",
            "full run: wall per host (wall fit)",
            wall_per_host,
            "s",
            kind=DERIVED,
            note=f"fixed {wall_fixed:.1f} s; sensitive to other load",
            detail=True,
        ),
    ]
    pull = cpu_med[1]
    for hosts, (cpu, wall) in idle_cpu(ctx).items():
        full = fixed + per_host * hosts
        rows.append(
            Row(
                f"pull.full.{hosts}",
                f"full run, {hosts:,} hosts: CPU",
                full,
                "s",
                kind=EXTRAPOLATED,
                note=f"a + b*n, about {full / CORES:,.0f} s wall on {CORES} cores; "
                f"ansible-pull on every host: {hosts * pull:,.0f} CPU-s",
            )
        )
        rows.append(
            Row(
                f"pull.ratio.{hosts}",
                f"idle cycle / full run, {hosts:,} hosts (CPU)",
                100 * cpu / full,
                "%",
                kind=EXTRAPOLATED,
                note=f"idle cycle {cpu * 1e3:,.0f} ms CPU, {wall * 1e3:,.0f} ms wall (measured); "
                f"the full run costs {full / cpu:,.0f}x",
            )
        )
    return rows
