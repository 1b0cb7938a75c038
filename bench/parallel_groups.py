"""Independent groups in parallel: 4 groups of 5 hosts vs 1 group of 20, one version bump.

A ``LocalFleet`` (``ansible_connection=local``) of 20 hosts (quick: 8) runs the shipped
``deploy-app.yml`` for app ``shop``, each host gated on its ``/healthz`` (HTTP, expecting the
version; interval 0.2 s), canary ``[100]``, so every group is one playbook run plus its gates
(and, in the second case, a bake of 10 s and the gates again). Three layouts of the same hosts,
each with its own bare remote and in-process reconciler (``wiring.build``):

* ``one``: group ``web`` of all 20 hosts (``execution.parallel_groups: 4``, unused);
* ``four``: groups ``g1``..``g4`` of 5 hosts, no ``after``, ``parallel_groups: 4``;
* ``four_seq``: the same 4 groups with ``parallel_groups: 1`` (one group after the other).

Each repetition commits a new version for each layout (untimed) and times its
``reconcile_once()`` (fetch, validate, plan, the rollouts, the store); the order of the
layouts rotates between repetitions, and every run deploys a version no run deployed before
(so every host unpacks, switches and restarts). The playbook runs use forks 20, capped by the
reconciler at the hosts of a step (20 for ``one``, 5 per group otherwise).

Bake 0 measures the playbooks alone: on a 2-core controller with local-connection hosts they
are CPU-bound, so running groups at once cannot win much. Bake 10 s adds the waiting a real
rollout has (bake, gates, slow restarts), which is what parallel groups overlap.
"""

from __future__ import annotations

import itertools
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common import DesiredRepo, cpu_seconds
from bench.registry import DERIVED, Context, Row, register
from reconciler.rollout.reconciler import Reconciler
from reconciler.service import wiring
from reconciler.settings import Settings
from reconciler.testing.fleet import LocalFleet, free_port, served_version, write_inventory

APP, ENVIRONMENT = "shop", "prod"
BAKES = (0, 10)  # seconds; quick: (0, 2)
LAYOUTS = ("one", "four", "four_seq")
LABELS = {
    "one": "1 group of {n} hosts",
    "four": "4 groups of {k} hosts, parallel_groups 4",
    "four_seq": "4 groups of {k} hosts, parallel_groups 1",
}


def env_text(groups: dict[str, list[str]], version: str, bake: int = 0) -> str:
    """prod.yaml: every group runs shop at ``version`` in one step, gated on /healthz."""
    lines = [
        f"environment: {ENVIRONMENT}",
        "inventory: inventories/prod.yml",
        "defaults:",
        "  timeout: 300s",
        f"  rollout: {{canary: [100], bake: {bake}s, max_failed_hosts: 0}}",
        "  health:",
        "    - http:",
        '        url: "http://127.0.0.1:{port}/healthz"',
        '        expect_body: "{version}"',
        "        interval: 0.2s",
        "        timeout: 30s",
        "groups:",
    ]
    lines += [f'  {group}: {{apps: {{{APP}: "{version}"}}}}' for group in groups]
    return "\n".join(lines) + "\n"


@dataclass
class Layout:
    name: str
    groups: dict[str, list[str]]
    repo: DesiredRepo
    reconciler: Reconciler


def layouts(
    base: Path, fleet: LocalFleet, hosts: list[str], ports: dict[str, dict[str, int]]
) -> list[Layout]:
    """The three layouts of ``hosts``, each on its own remote with its own reconciler."""
    quarter = len(hosts) // 4
    four = {f"g{i + 1}": hosts[i * quarter : (i + 1) * quarter] for i in range(4)}
    shapes = {"one": {"web": hosts}, "four": four, "four_seq": four}
    out = []
    for name in LAYOUTS:
        repo = DesiredRepo(base / name / "git")
        write_inventory(repo.work / "inventories" / "prod.yml", shapes[name], ports)
        repo.write("environments/prod.yaml", env_text(shapes[name], "0.0.0"))
        repo.commit_push("inventory")
        settings = Settings(
            state_dir=base / name / "state",
            source={"url": repo.url},
            execution={
                "forks": 20,
                "parallel_groups": 1 if name == "four_seq" else 4,
                "extra_envvars": fleet.environ(),
            },
        )
        out.append(Layout(name, shapes[name], repo, wiring.build(settings)))
    return out


def deploy(
    layout: Layout, fleet: LocalFleet, version: str, bake: int
) -> tuple[float, float, float]:
    """Commit ``version`` (untimed), roll it out; (wall, CPU, sum of the groups' rollouts)."""
    fleet.build(APP, version)
    layout.repo.write("environments/prod.yaml", env_text(layout.groups, version, bake))
    layout.repo.commit_push(f"shop {version}")
    cpu, start = cpu_seconds(), time.perf_counter()
    result = layout.reconciler.reconcile_once()
    wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    [outcome] = result.environments
    bad = [f"{g.group}: {g.state} {g.reason}" for g in outcome.groups if g.state != "succeeded"]
    if outcome.result != "applied" or bad:
        raise RuntimeError(f"{layout.name} {version}: {outcome.result}: {bad}")
    store = layout.reconciler.store
    ids = {g.rollout_id for g in outcome.groups}
    spans = [
        (r.finished_at or r.started_at) - r.started_at
        for r in store.rollouts(ENVIRONMENT, limit=50)
        if r.id in ids
    ]
    return wall, cpu, sum(spans)


def rows_for(
    samples: dict[str, list[tuple[float, float, float]]], count: int, bake: int
) -> list[Row]:
    """Medians per layout and the two ratios, for one bake."""
    reps = min(len(runs) for runs in samples.values())
    medians = {name: statistics.median(s[0] for s in runs) for name, runs in samples.items()}
    prefix, suffix = ("groups", "") if bake == 0 else (f"groups.bake{bake}", f", bake {bake} s")
    rows = []
    for name, runs in samples.items():
        cpu = statistics.median(s[1] for s in runs)
        overlap = statistics.median(s[2] / s[0] for s in runs)
        rows.append(
            Row.of(
                f"{prefix}.{name}",
                LABELS[name].format(n=count, k=count // 4) + suffix,
                [s[0] for s in runs],
                note=f"CPU median {cpu:.1f} s; group rollouts overlap {overlap:.2f}x",
            )
        )
    rows += [
        Row(
            f"{prefix}.ratio",
            f"4 groups in parallel / 1 group (wall, ratio of medians){suffix}",
            medians["four"] / medians["one"],
            "x",
            runs=reps,
            kind=DERIVED,
            note=f"{medians['four'] - medians['one']:+.2f} s",
        ),
        Row(
            f"{prefix}.speedup",
            f"4 groups: parallel_groups 1 / parallel_groups 4 (wall){suffix}",
            medians["four_seq"] / medians["four"],
            "x",
            runs=reps,
            kind=DERIVED,
            note="speed-up of running the independent groups at once",
        ),
    ]
    return rows


@register("parallel_groups", "4 independent groups of 5 hosts vs 1 group of 20 (local fleet)")
def run(ctx: Context) -> list[Row]:
    count, reps = (8, 2) if ctx.quick else (20, 3)
    bakes = (0, 2) if ctx.quick else BAKES
    fleet = LocalFleet(ctx.workdir / "fleet").create()
    hosts = [f"web-{i:02d}" for i in range(1, count + 1)]
    ports = {h: {APP: free_port()} for h in hosts}
    versions = (f"4.0.{n}" for n in itertools.count())
    rows: list[Row] = []
    setups: list[Layout] = []
    last = ""
    try:
        setups = layouts(ctx.workdir, fleet, hosts, ports)
        deploy(setups[0], fleet, next(versions), 0)  # warm-up: helper on every host (untimed)
        for bake in bakes:
            samples: dict[str, list[tuple[float, float, float]]] = {n: [] for n in LAYOUTS}
            for rep in range(reps):  # rotate the order so a busy spell does not hit one layout
                shift = rep % len(setups)
                for layout in setups[shift:] + setups[:shift]:
                    last = next(versions)
                    samples[layout.name].append(deploy(layout, fleet, last, bake))
            rows += rows_for(samples, count, bake)
        wrong = [h for h in hosts if served_version(ports[h][APP]) != last]
        if wrong:
            raise RuntimeError(f"hosts not serving {last}: {wrong}")
    finally:
        for layout in setups:
            layout.reconciler.store.close()
        fleet.stop()
    return rows
