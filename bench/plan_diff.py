"""Plan and diff at scale: 10,000 hosts x 20 apps, ~10% of the hosts drifted.

The desired state is resolved for real (``wiring.load_repository``: validation with Ansible's
inventory parse) from a repository of 5 groups x 2,000 hosts, each group declaring the same 20
apps. The recorded state has every (host, app) pair, except that 10% of the hosts (seeded
choice) drift on 2 apps each: one recorded at an older version, one never recorded (2,000 drift
rows).

Timed: ``canary.plan_environment`` and ``canary.drift`` (pure, in-process), the store read
``recorded_versions`` (what a reconcile reads first) of the 199,000 recorded rows from the
SQLite store of ``wiring.open_store``, and the CLI: ``reconciler diff`` in a new process
(start-up, fetch, validation, store read, drift, a 2,000-row table) against a real bare remote,
next to ``reconciler --help`` (start-up alone). Memory: tracemalloc peak of each
in-process call (a separate call, tracemalloc slows it), max RSS of the CLI process. The CLI
rows are left out of ``--quick`` (each ``diff`` re-parses the 10,000-host inventory).
"""

from __future__ import annotations

import os
import random
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from bench.common import DesiredRepo, split_hosts
from bench.registry import SINGLE, Context, Row, register
from reconciler.plan import canary
from reconciler.record import DeployedVersion
from reconciler.service import wiring
from reconciler.settings import Settings

HOSTS, APPS, DRIFT_SHARE = 10_000, 20, 0.10
GROUPS = ("web", "api", "worker", "cache", "batch")
CLI = str(Path(sys.executable).parent / "reconciler")


def environment_yaml() -> str:
    lines = [
        "environment: prod",
        "inventory: inventories/prod.yml",
        "defaults:",
        "  rollout: {canary: [1, 10, 50, 100], max_failed_hosts: 0}",
        "groups:",
    ]
    for index, group in enumerate(GROUPS, start=1):
        lines += [f"  {group}:", "    apps:"]
        lines += [f'      app{a:02d}: "{index}.{a}.0"' for a in range(1, APPS + 1)]
    return "\n".join(lines) + "\n"


def recorded_state(environment: Any, seed: int = 42) -> tuple[dict[tuple[str, str], str], int]:
    """Every desired pair, with ~10% of the hosts drifted on 2 apps; the expected drift rows."""
    recorded = {
        (host, app): version
        for group in environment.groups.values()
        for host in group.host_names
        for app, version in group.apps.items()
    }
    rng = random.Random(seed)
    hosts = sorted({host for host, _ in recorded})
    drifted = rng.sample(hosts, int(len(hosts) * DRIFT_SHARE))
    apps = [f"app{a:02d}" for a in range(1, APPS + 1)]
    for host in drifted:
        stale, missing = rng.sample(apps, 2)
        recorded[(host, stale)] = "0.9.0"
        del recorded[(host, missing)]
    return recorded, 2 * len(drifted)


def timed(func: Callable[[], Any], reps: int) -> list[float]:
    samples = []
    for _ in range(reps):
        start = time.perf_counter()
        func()
        samples.append(time.perf_counter() - start)
    return samples


def peak_mib(func: Callable[[], Any]) -> float:
    """tracemalloc peak of one call, in MiB (allocations made during the call)."""
    tracemalloc.start()
    try:
        func()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def run_cli(argv: list[str], output: Path) -> tuple[float, int, float]:
    """Wall seconds, exit code and max RSS (MiB) of one CLI process."""
    env = {**os.environ, "COLUMNS": "200"}
    with output.open("w") as handle:
        start = time.perf_counter()
        process = subprocess.Popen(argv, stdout=handle, stderr=handle, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    return wall, process.returncode, usage.ru_maxrss / 1024


@register("plan_diff", "plan/drift of 10,000 hosts x 20 apps (10% drift), and `reconciler diff`")
def run(ctx: Context) -> list[Row]:
    repo = DesiredRepo(ctx.workdir / "repo")
    repo.inventory(split_hosts(HOSTS, GROUPS))
    repo.write("environments/prod.yaml", environment_yaml())
    sha = repo.commit_push(f"{HOSTS} hosts x {APPS} apps")

    start = time.perf_counter()
    loaded = wiring.load_repository(repo.work)
    resolve = time.perf_counter() - start
    if loaded.state is None:
        raise RuntimeError(f"invalid desired state: {loaded.problems[:3]}")
    environment = loaded.state.environments["prod"]
    recorded, expected = recorded_state(environment)
    if len(canary.drift(environment, recorded)) != expected:
        raise RuntimeError("drift rows differ from the drift set up")

    reps = ctx.reps(7, 3)
    rows = [
        Row(
            "plan.resolve",
            f"resolve {HOSTS:,} hosts x {APPS} apps (validate + inventory parse)",
            resolve,
            "s",
            runs=1,
            kind=SINGLE,
            note="set-up; repeated in idle_cycle (cold)",
        ),
    ]
    calls: list[tuple[str, str, Callable[[], Any]]] = [
        (
            "plan",
            "canary.plan_environment",
            lambda: canary.plan_environment(environment, recorded),
        ),
        ("drift", "canary.drift", lambda: canary.drift(environment, recorded)),
    ]

    settings = Settings(state_dir=ctx.workdir / "state", source={"url": repo.url})
    store = wiring.open_store(settings)
    now = time.time()
    store.record_deployed(
        [
            DeployedVersion("prod", host, app, version, "", sha, None, now)
            for (host, app), version in recorded.items()
        ]
    )
    calls.append(
        (
            "recorded",
            f"store read: recorded_versions ({len(recorded):,} rows)",
            lambda: store.recorded_versions("prod"),
        )
    )
    for key, label, call in calls:
        samples = timed(call, reps)
        mib = peak_mib(call)
        rows.append(
            Row.of(
                f"plan.{key}",
                f"{label}, {HOSTS:,} hosts x {APPS} apps",
                samples,
                note=f"tracemalloc peak {mib:,.1f} MiB",
            )
        )
        rows.append(
            Row(f"plan.{key}.memory", f"{label}: tracemalloc peak", mib, "MiB", detail=True)
        )
    store.close()
    if not ctx.quick:
        rows += cli_rows(ctx, settings, expected)
    return rows


def cli_rows(ctx: Context, settings: Settings, expected: int) -> list[Row]:
    """``reconciler diff`` (drift expected: exit 1) and ``reconciler --help`` in new processes."""
    config = ctx.workdir / "reconciler.yaml"
    YAML().dump(
        {"state_dir": str(settings.state_dir), "source": {"url": settings.source.url}}, config
    )
    source = wiring.git_source(settings)
    source.snapshot(source.fetch().sha)  # clone once, as a running installation would have
    out = ctx.workdir / "cli.out"
    walls, rss = [], []
    for _ in range(ctx.reps(3, 1)):
        wall, code, mib = run_cli([CLI, "--config", str(config), "diff"], out)
        text = out.read_text()
        if code != 1 or f"{expected} host/app pair" not in text:
            raise RuntimeError(f"reconciler diff: exit {code}: {text[-800:]}")
        walls.append(wall)
        rss.append(mib)
    startup = [run_cli([CLI, "--help"], out)[0] for _ in range(ctx.reps(3, 2))]
    return [
        Row.of(
            "plan.cli_diff",
            f"`reconciler diff`, {HOSTS:,} hosts x {APPS} apps, {expected:,} drifted",
            walls,
            note=f"new process; max RSS {statistics.median(rss):,.0f} MiB",
        ),
        Row.of("plan.cli_startup", "`reconciler --help` (process start-up and imports)", startup),
    ]
