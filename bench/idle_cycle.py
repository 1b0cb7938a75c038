"""Idle reconcile cycle: ``Reconciler.reconcile_once()`` when desired == recorded.

Per fleet size (100 / 1,000 / 10,000 hosts in 4 groups, one app per group), a real bare remote
holds the desired state and a real SQLite store holds every host's deployed version (written with
``record_deployed``), so the plan is empty and no playbook runs.

* cold: the first cycle of a new ``Reconciler`` (``wiring.build``) on a new state dir (clone,
  snapshot, validate with the real inventory parse, plan), repeated on fresh state dirs with the
  in-process inventory cache (``edges.ansible.inventory``) cleared, as in a new process;
* warm: the following cycles (the source stage validates a commit once: ``DesiredSource._loaded``
  caches it; a warm cycle that validates again is an error, not a figure).

Ansible's modules are imported before the first timed cycle (a one-off per process).

Each cycle is broken down by wrapping the calls it makes (exclusive time, so the inventory parse
is not counted again inside validation): the Git reader of the source stage
(``DesiredSource.reader``: fetch, snapshot, commit info, prune), ``desired.loading.load_repository``
(validation, called by ``wiring.load_repository``), ``edges.ansible.inventory.load``, the store's
``recorded_versions`` and its meta/status calls (the source stage writes its facts through the same
store), and ``plan.canary.plan_environment``; "other" is what no wrapper covered.
"""

from __future__ import annotations

import statistics
import sys
import time
from contextlib import AbstractContextManager
from pathlib import Path

from bench.common import DesiredRepo, Stopwatch, cpu_seconds, split_hosts
from bench.registry import DERIVED, Context, Row, register
from reconciler.desired import loading
from reconciler.edges.ansible import inventory
from reconciler.plan import canary
from reconciler.record import DeployedVersion
from reconciler.rollout.reconciler import Reconciler
from reconciler.service import wiring
from reconciler.settings import Settings
from reconciler.source.refresh import DesiredSource
from reconciler.testing.fleet import write_inventory

SIZES = (100, 1_000, 10_000)
APPS = {
    "web": ("shop", "2.4.1"),
    "api": ("shop-api", "2.4.1"),
    "cache": ("cache", "7.2.4"),
    "worker": ("shop-worker", "1.8.0"),
}
ENVIRONMENT = """\
environment: prod
inventory: inventories/prod.yml
defaults:
  timeout: 10m
  rollout: {canary: [1, 10, 50, 100], bake: 30s, max_failed_hosts: "1%"}
  health:
    - http: {url: "http://{host}:{port}/healthz", expect_body: "{version}", timeout: 60s}
groups:
  web: {apps: {shop: "2.4.1"}, rollout: {canary: [1, 25, 100]}}
  api: {apps: {shop-api: "2.4.1"}}
  cache: {apps: {cache: "7.2.4"}}
  worker:
    after: [web, api]
    apps: {shop-worker: "1.8.0"}
    health:
      - tcp: {host: "{host}", port: "{port}", timeout: 20s}
"""

FETCH = "git fetch (clone when cold)"
SNAPSHOT = "git snapshot + commit info"
VALIDATE = "validation (YAML, schema, checks)"
INVENTORY = "inventory parse (Ansible)"
RECORDED = "store read: recorded versions"
STORE_META = "store: meta/status writes+reads"
PLAN = "plan (canary.plan_environment)"
OTHER = "other (uninstrumented)"
LABELS = (FETCH, SNAPSHOT, VALIDATE, INVENTORY, RECORDED, STORE_META, PLAN, OTHER)
SHORT = {
    FETCH: "fetch",
    SNAPSHOT: "snapshot",
    VALIDATE: "validate",
    INVENTORY: "inventory",
    RECORDED: "recorded",
    STORE_META: "store_meta",
    PLAN: "plan",
    OTHER: "other",
}


def source_stage(reconciler: Reconciler) -> DesiredSource:
    """The reconciler's source stage (``wiring.build`` makes a ``DesiredSource``)."""
    if not isinstance(reconciler.source, DesiredSource):
        raise TypeError(f"not built by wiring: source is {type(reconciler.source).__name__}")
    return reconciler.source


def _targets(reconciler: Reconciler) -> list[tuple[object, str, str]]:
    reader, store = source_stage(reconciler).reader, reconciler.store
    return [
        (reader, "fetch", FETCH),
        *((reader, m, SNAPSHOT) for m in ("snapshot", "commit_info", "prune_snapshots")),
        (loading, "load_repository", VALIDATE),
        (inventory, "load", INVENTORY),
        (store, "recorded_versions", RECORDED),
        *(
            (store, m, STORE_META)
            for m in (
                "set_meta",
                "get_meta",
                "environment_status",
                "update_environment",
                "quarantines",
            )
        ),
        (canary, "plan_environment", PLAN),
    ]


def instrumented(reconciler: Reconciler, watch: Stopwatch) -> AbstractContextManager[list[str]]:
    """Wrap the calls of ``_targets`` for the duration; yields the names it could not find."""
    return watch.instrument(_targets(reconciler))


def prepare(base: Path, hosts: int) -> DesiredRepo:
    """A bare remote whose tip declares ``hosts`` hosts in 4 groups."""
    repo = DesiredRepo(base)
    groups = split_hosts(hosts, list(APPS))
    ports = {h: {APPS[g][0]: 8000 + i} for i, g in enumerate(groups) for h in groups[g]}
    repo.inventory(groups, ports)
    repo.write("environments/prod.yaml", ENVIRONMENT)
    repo.commit_push(f"{hosts} hosts")
    return repo


def new_reconciler(
    repo: DesiredRepo, state_dir: Path, hosts: int, state: dict[str, object] | None = None
) -> Reconciler:
    """A ``Reconciler`` on a new state dir whose store already records every desired version
    (``state``: the ``state`` settings, e.g. a PostgreSQL ``url``; default SQLite)."""
    reconciler = wiring.build(
        Settings(state_dir=state_dir, source={"url": repo.url}, state=state or {})
    )
    now = time.time()
    reconciler.store.record_deployed(
        [
            DeployedVersion("prod", host, app, version, group, None, None, now)
            for group, names in split_hosts(hosts, list(APPS)).items()
            for app, version in [APPS[group]]
            for host in names
        ]
    )
    return reconciler


def timed_cycle(reconciler: Reconciler, watch: Stopwatch, *, warm: bool) -> dict[str, float]:
    """One instrumented ``reconcile_once``: wall total, CPU, and the wall time per label."""
    watch.reset()
    with instrumented(reconciler, watch) as missing:
        if missing:  # renamed in reconciler/: their time shows up as "other"
            print(f"idle_cycle: cannot time {', '.join(missing)}", file=sys.stderr)
        cpu, start = cpu_seconds(), time.perf_counter()
        result = reconciler.reconcile_once()
        total, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    outcomes = [e.result for e in result.environments]
    if result.snapshot.tip_rejected or outcomes != ["in_sync"]:
        raise RuntimeError(
            f"not an idle cycle: {outcomes} {[str(p) for p in result.snapshot.problems]}"
        )
    if warm and watch.counts.get(VALIDATE):
        raise RuntimeError("not a warm cycle: the commit was validated again (cache missed)")
    parts = {label: watch.totals.get(label, 0.0) for label in LABELS if label != OTHER}
    parts[OTHER] = max(0.0, total - sum(parts.values()))
    return {"total": total, "cpu": cpu, **parts}


def measure(ctx: Context, hosts: int, cold_reps: int, warm_reps: int) -> dict[str, list[dict]]:
    """Cold and warm cycle samples for one fleet size."""
    base = ctx.workdir / f"idle-{hosts}"
    repo = prepare(base, hosts)
    watch = Stopwatch()
    cold: list[dict[str, float]] = []
    reconciler = None
    for rep in range(max(1, cold_reps)):
        if reconciler is not None:
            reconciler.store.close()
        reconciler = new_reconciler(repo, base / f"state-{rep}", hosts)
        inventory.clear_cache()  # cold means a new process: nothing parsed yet
        cold.append(timed_cycle(reconciler, watch, warm=False))
    assert reconciler is not None
    warm = [timed_cycle(reconciler, watch, warm=True) for _ in range(warm_reps)]
    reconciler.store.close()
    return {"cold": cold if cold_reps else [], "warm": warm}


def _breakdown_rows(prefix: str, label: str, samples: list[dict[str, float]]) -> list[Row]:
    medians = {k: statistics.median(s[k] for s in samples) for k in LABELS}
    total = statistics.median(s["total"] for s in samples)
    ranked = sorted(LABELS, key=lambda k: medians[k], reverse=True)
    top = ", ".join(f"{SHORT[k]} {100 * medians[k] / total:.0f}%" for k in ranked[:3])
    rows = [
        Row(
            f"{prefix}.dominant",
            f"{label}: share of '{ranked[0]}'",
            100 * medians[ranked[0]] / total,
            "%",
            runs=len(samples),
            kind=DERIVED,
            note=f"top 3: {top}",
        )
    ]
    rows += [
        Row.of(
            f"{prefix}.{SHORT[k]}",
            f"{label}: {k}",
            [s[k] for s in samples],
            note=f"{100 * medians[k] / total:.1f}% of the median cycle",
            detail=True,
        )
        for k in LABELS
    ]
    return rows


def rows_for(hosts: int, samples: dict[str, list[dict]]) -> list[Row]:
    rows: list[Row] = []
    for phase, what in (("cold", "cold first cycle"), ("warm", "idle cycle (warm)")):
        if not samples[phase]:
            continue
        label = f"{hosts:,} hosts, {what}"
        cpu = [s["cpu"] for s in samples[phase]]
        rows.append(
            Row.of(
                f"idle.{phase}.{hosts}",
                label,
                [s["total"] for s in samples[phase]],
                note=f"CPU median {statistics.median(cpu) * 1e3:,.0f} ms",
            )
        )
        rows.append(
            Row.of(
                f"idle.{phase}.{hosts}.cpu", f"{label}: CPU (with git children)", cpu, detail=True
            )
        )
        rows += _breakdown_rows(f"idle.{phase}.{hosts}", label, samples[phase])
    return rows


@register("idle_cycle", "reconcile_once() with nothing to do, 100 / 1,000 / 10,000 hosts")
def run(ctx: Context) -> list[Row]:
    reps = {
        100: (ctx.reps(5, 2), ctx.reps(20, 5)),
        1_000: (ctx.reps(5, 2), ctx.reps(20, 5)),
        10_000: (ctx.reps(3, 1), ctx.reps(10, 3)),
    }
    # Import Ansible's inventory code first: a one-off per process, not a cost of a cycle.
    inventory.load(write_inventory(ctx.workdir / "warm-up.yml", {"warmup": ["warmup-1"]}, {}))
    rows: list[Row] = []
    for hosts in SIZES:
        rows += rows_for(hosts, measure(ctx, hosts, *reps[hosts]))
    by_key = {r.key: r for r in rows}
    for phase in ("warm", "cold"):
        small, large = by_key[f"idle.{phase}.{SIZES[0]}"], by_key[f"idle.{phase}.{SIZES[-1]}"]
        rows.append(
            Row(
                f"idle.{phase}.scaling",
                f"{phase} cycle, 10,000 vs 100 hosts",
                large.value / small.value,
                "x",
                kind=DERIVED,
                note="100x the hosts; ratio of medians",
            )
        )
    return rows
