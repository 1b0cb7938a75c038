"""Replicas on PostgreSQL: failover time, the idle cycle on PostgreSQL vs SQLite, throughput of
3 replicas vs 1.

All three use a throwaway local PostgreSQL (``reconciler.testing.postgres``: loopback,
``fsync=off``, on the same 2 cores) and, for the daemons, real ``reconciler run`` subprocesses
on a ``LocalFleet`` (``ansible_connection=local``), each replica with its own state dir and API
port; syncs are requested with ``POST /api/v1/sync`` on one replica (LISTEN/NOTIFY takes them
to the owners). Lease settings are the defaults (``state.lease_ttl`` 15 s, renewed every 5 s).

* ``failover``: 3 replicas, one environment of 2 hosts, canary ``[50, 100]`` with a bake of
  20 s. Each repetition bumps the version; once the first step succeeded and the canary bakes,
  the owner is killed with SIGKILL; the figure is from the kill to the ``started_at`` of the
  first step another replica journals (the resumed rollout: the interrupted step's hosts
  redeployed), with the lease's takeover time beside it (``leases.acquired_at``). The killed
  replica is started again before the next repetition. Expect about ``lease_ttl`` minus the
  time since the last renewal (0-5 s), plus up to one lease round (5 s) of the successor.
* ``idle_cycle_pg``: ``bench.idle_cycle``'s warm idle cycle at 1,000 hosts, the same code on a
  SQLite and on a PostgreSQL state store (``state.url``), wall and CPU of this process (the
  server's CPU is not in it: it is another process; the figure is a floor, see ``bench.store``).
* ``replicas_throughput``: 12 environments of 2 hosts, canary ``[50, 100]``, bake 10 s, one
  commit bumping all of them; the time from the sync request until every host serves the new
  version and no rollout is unfinished, with 1 replica and with 3 (``parallel_environments``
  4 each, the default), alternating; CPU is that of the daemons and their playbooks (reaped
  children of this process), start and stop included.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from bench import idle_cycle
from bench.common import DesiredRepo, Stopwatch, cpu_seconds, wait_until
from bench.registry import DERIVED, Context, Row, register
from reconciler.edges.ansible import inventory
from reconciler.plan import ownership as rendezvous
from reconciler.record import StateStore
from reconciler.service import wiring
from reconciler.settings import Settings
from reconciler.testing.fleet import LocalFleet, free_port, served_version, write_inventory
from reconciler.testing.postgres import PostgresCluster, server_bin

TOKEN = "bench-api-token"  # noqa: S105 - a throwaway token
APP = "shop"


def env_text(name: str, version: str, bake: int) -> str:
    return (
        f"environment: {name}\n"
        f"inventory: inventories/{name}.yml\n"
        "defaults:\n"
        "  timeout: 300s\n"
        f"  rollout: {{canary: [50, 100], bake: {bake}s, max_failed_hosts: 0}}\n"
        "groups:\n"
        f'  web: {{apps: {{{APP}: "{version}"}}}}\n'
    )


@dataclass
class Replica:
    name: str
    config: Path
    url: str
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Replica:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    str(Path(sys.executable).parent / "reconciler"),
                    "run",
                    "--config",
                    str(self.config),
                ],
                stdout=log,
                stderr=log,
                env={**os.environ},
            )
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(sig)
            self.proc.wait(timeout=120)

    def sync(self) -> None:
        request = urllib.request.Request(  # noqa: S310 - loopback URL we built
            f"{self.url}/api/v1/sync",
            data=json.dumps({"wait": False}).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            if response.status not in (200, 202):
                raise RuntimeError(f"sync answered {response.status}")


class Bed:
    """A fleet, a remote, environments of 2 hosts each, a PostgreSQL database."""

    def __init__(self, base: Path, cluster: PostgresCluster, names: Sequence[str]) -> None:
        self.base = base
        self.names = list(names)
        self.fleet = LocalFleet(base / "fleet").create()
        os.environ.update(self.fleet.environ())
        self.hosts = {n: [f"{n}-web-{i}" for i in (1, 2)] for n in self.names}
        self.ports = {h: {APP: free_port()} for hs in self.hosts.values() for h in hs}
        self.repo = DesiredRepo(base / "git")
        for name in self.names:
            write_inventory(
                self.repo.work / "inventories" / f"{name}.yml",
                {"web": self.hosts[name]},
                self.ports,
            )
        self.db = cluster.create_database(base.name.replace("-", "_"))
        (base / "token").write_text(TOKEN + "\n")
        self.store: StateStore | None = None
        self.built: set[str] = set()

    def replica(self, name: str) -> Replica:
        directory = self.base / name
        directory.mkdir(exist_ok=True)
        port = free_port()
        config = directory / "reconciler.yaml"
        config.write_text(
            json.dumps(
                {
                    "state_dir": str(directory / "state"),
                    "source": {"url": self.repo.url, "poll_interval": "1h", "watch": False},
                    "api": {"port": port, "token_file": str(self.base / "token")},
                    "state": {"url": self.db, "replica": name},
                    "daemon": {"resync_interval": 0, "log_level": "info", "log_format": "json"},
                }
            )
        )
        return Replica(name, config, f"http://127.0.0.1:{port}", directory / "daemon.log")

    def commit(self, version: str, bake: int, names: Sequence[str] | None = None) -> str:
        if version not in self.built:
            self.fleet.build(APP, version)
            self.built.add(version)
        for name in names or self.names:
            self.repo.write(f"environments/{name}.yaml", env_text(name, version, bake))
        return self.repo.commit_push(f"{APP} {version}")

    def served(self, version: str, names: Sequence[str] | None = None) -> bool:
        return all(
            served_version(self.ports[h][APP]) == version
            for n in names or self.names
            for h in self.hosts[n]
        )

    def open(self) -> StateStore:
        if self.store is None:
            self.store = wiring.open_store(
                Settings(state_dir=self.base / "reader", state={"url": self.db}), read_only=True
            )
        return self.store

    def holders(self) -> dict[str, str]:
        found = wiring.lease_holders(self.open())
        assert found is not None
        return {lease.environment: lease.holder for lease in found.leases() if lease.live}

    def idle(self) -> bool:
        return not self.open().unfinished_rollouts()

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
        self.fleet.stop()


def _first_step_after(store: StateStore, environment: str, moment: float) -> float | None:
    starts = [
        step.started_at
        for rollout in store.rollouts(environment, limit=10)
        for step in store.steps(rollout.id)
        if step.started_at > moment
    ]
    return min(starts) if starts else None


def _step_one_baking(store: StateStore, environment: str, commit: str) -> bool:
    for rollout in store.rollouts(environment, limit=5):
        if rollout.commit == commit and rollout.finished_at is None:
            return any(s.index == 1 and s.state == "succeeded" for s in store.steps(rollout.id))
    return False


def _server_cpu(cluster: PostgresCluster | None) -> float:
    """CPU seconds of the PostgreSQL server and its backends so far (another process tree)."""
    process = getattr(cluster, "_process", None)
    if process is None:
        return 0.0
    try:
        root = psutil.Process(process.pid)
        total = 0.0
        for p in [root, *root.children(recursive=True)]:
            times = p.cpu_times()
            total += times.user + times.system
        return total
    except psutil.Error:
        return 0.0


def _cluster() -> PostgresCluster | None:
    found = server_bin()
    return PostgresCluster.start(found) if found is not None else None


@register("failover", "replicas: kill -9 of the owner mid-step -> first resumed step elsewhere")
def failover(ctx: Context) -> list[Row]:
    cluster = _cluster()
    if cluster is None:
        return [Row("failover.skipped", "PostgreSQL not installed", 0, "rows")]
    names = ["replica-a", "replica-b", "replica-c"]
    environment = "prod"
    bed = Bed(ctx.workdir / "failover", cluster, [environment])
    replicas = {n: bed.replica(n) for n in names}
    samples: list[float] = []
    takeovers: list[float] = []
    cpu = cpu_seconds()
    try:
        bed.commit("1.0.0", 0)
        for r in replicas.values():
            r.start()
        wait_until(lambda: bed.served("1.0.0"), 240, "the initial convergence", 0.2)
        wait_until(bed.idle, 60, "idle", 0.2)
        for rep in range(ctx.reps(3, 3)):
            version = f"1.1.{rep}"
            sha = bed.commit(version, 20)
            owner = wait_until(lambda: bed.holders().get(environment), 60, "an owner", 0.2)
            next(r for n, r in replicas.items() if n != owner).sync()  # via a non-owner
            wait_until(
                lambda s=sha: _step_one_baking(bed.open(), environment, s), 180, "step 1", 0.05
            )
            time.sleep(2.0)  # well inside the bake
            owner = bed.holders()[environment]
            killed = time.time()
            replicas[owner].stop(signal.SIGKILL)
            resumed = wait_until(
                lambda k=killed: _first_step_after(bed.open(), environment, k),
                120,
                "the first resumed step",
                0.05,
            )
            samples.append(resumed - killed)
            taken = _acquired_at(bed, environment)
            if taken is not None:
                takeovers.append(taken - killed)
            wait_until(lambda v=version: bed.served(v), 240, "the resumed rollout", 0.2)
            wait_until(bed.idle, 120, "idle", 0.2)
            replicas[owner].start()  # back among the members before the next repetition
            expected = rendezvous.assignment([environment], set(names))
            wait_until(lambda e=expected: bed.holders() == e, 90, "the lease re-balanced", 0.2)
    finally:
        for r in replicas.values():
            r.stop()
        bed.close()
        cluster.stop()
    cpu = cpu_seconds() - cpu
    rows = [
        Row.of(
            "failover.first_step",
            "kill -9 of the owner mid-bake -> first resumed step (lease_ttl 15 s)",
            samples,
            note=f"3 replicas; target < 15 s; CPU of the whole run {cpu:.0f} s",
        )
    ]
    if takeovers:
        rows.append(
            Row.of("failover.lease", "kill -9 -> lease taken over by another replica", takeovers)
        )
    return rows


def _acquired_at(bed: Bed, environment: str) -> float | None:
    """When the live lease of ``environment`` was granted (the database's clock)."""
    found = bed.open()
    connections = getattr(found, "connections", None)
    if connections is None:
        return None
    with connections.connection() as db:
        row = db.execute(
            b"SELECT extract(epoch FROM acquired_at)::float8 FROM leases WHERE environment = %s",
            (environment,),
        ).fetchone()
    return float(row[0]) if row else None


@register("idle_cycle_pg", "idle cycle at 1,000 hosts: PostgreSQL vs SQLite state store")
def idle_pg(ctx: Context) -> list[Row]:
    hosts, reps = 1_000, ctx.reps(20, 5)
    inventory.load(write_inventory(ctx.workdir / "warm-up.yml", {"warmup": ["warmup-1"]}, {}))
    repo = idle_cycle.prepare(ctx.workdir / "idle-pg", hosts)
    watch = Stopwatch()
    cluster = _cluster()
    backends: dict[str, dict[str, object]] = {"sqlite": {}}
    if cluster is not None:
        backends["postgresql"] = {"url": cluster.create_database("idle")}
    samples: dict[str, list[dict[str, float]]] = {}
    server_cpu = 0.0
    try:
        for name, state in backends.items():
            reconciler = idle_cycle.new_reconciler(
                repo, ctx.workdir / f"idle-pg-{name}", hosts, state=state
            )
            try:
                idle_cycle.timed_cycle(reconciler, watch, warm=False)
                before = _server_cpu(cluster) if name == "postgresql" else 0.0
                samples[name] = [
                    idle_cycle.timed_cycle(reconciler, watch, warm=True) for _ in range(reps)
                ]
                if name == "postgresql":
                    server_cpu = (_server_cpu(cluster) - before) / reps
            finally:
                reconciler.store.close()
    finally:
        if cluster is not None:
            cluster.stop()
    rows = []
    for name, runs in samples.items():
        cpu = [s["cpu"] for s in runs]
        store_part = statistics.median(
            s[idle_cycle.RECORDED] + s[idle_cycle.STORE_META] for s in runs
        )
        rows.append(
            Row.of(
                f"idle_pg.{name}",
                f"{hosts:,} hosts, idle cycle (warm), {name} store",
                [s["total"] for s in runs],
                note=f"CPU median {statistics.median(cpu) * 1e3:,.0f} ms; "
                f"store calls {store_part * 1e3:.1f} ms"
                + (f"; server CPU {server_cpu * 1e3:.1f} ms/cycle" if name == "postgresql" else ""),
            )
        )
        rows.append(Row.of(f"idle_pg.{name}.cpu", f"{name}: CPU of the cycle", cpu, detail=True))
    if "postgresql" in samples:
        lite = statistics.median(s["total"] for s in samples["sqlite"])
        pg = statistics.median(s["total"] for s in samples["postgresql"])
        rows.append(
            Row(
                "idle_pg.ratio",
                "idle cycle, PostgreSQL / SQLite (wall, ratio of medians)",
                pg / lite,
                "x",
                runs=reps,
                kind=DERIVED,
                note=f"{(pg - lite) * 1e3:+.1f} ms; local server, fsync off",
            )
        )
    return rows


@register(
    "replicas_throughput",
    "12 environments with bake: 3 replicas vs 1 (wall-time ratio)",
    in_quick=False,
)
def throughput(ctx: Context) -> list[Row]:
    cluster = _cluster()
    if cluster is None:
        return [Row("replicas.skipped", "PostgreSQL not installed", 0, "rows")]
    environments = [f"env-{n:02d}" for n in range(12)]
    bed = Bed(ctx.workdir / "throughput", cluster, environments)
    layouts = {1: ["solo"], 3: ["replica-a", "replica-b", "replica-c"]}
    made = {n: bed.replica(n) for names in layouts.values() for n in names}
    samples: dict[int, list[tuple[float, float]]] = {1: [], 3: []}
    versions = iter(f"2.0.{n}" for n in range(100))
    try:
        bed.commit("1.0.0", 0)
        made["solo"].start()
        wait_until(lambda: bed.served("1.0.0"), 600, "the initial convergence", 0.5)
        wait_until(bed.idle, 120, "idle", 0.5)
        made["solo"].stop()
        for rep in range(ctx.reps(2, 1)):
            order = [1, 3] if rep % 2 == 0 else [3, 1]
            for count in order:
                names = layouts[count]
                cpu = cpu_seconds()
                for n in names:
                    made[n].start()
                expected = rendezvous.assignment(environments, set(names))
                wait_until(lambda e=expected: bed.holders() == e, 300, "the leases spread", 0.5)
                version = next(versions)
                bed.commit(version, 10)
                started = time.perf_counter()
                made[names[0]].sync()
                wait_until(lambda v=version: bed.served(v), 900, "all converged", 0.2)
                wait_until(bed.idle, 300, "no rollout unfinished", 0.1)
                wall = time.perf_counter() - started
                for n in names:
                    made[n].stop()
                samples[count].append((wall, cpu_seconds() - cpu))
    finally:
        for r in made.values():
            r.stop()
        bed.close()
        cluster.stop()
    rows = []
    for count, runs in samples.items():
        rows.append(
            Row.of(
                f"replicas.wall.{count}",
                f"12 environments x 2 hosts, bake 10 s: {count} replica(s)",
                [w for w, _ in runs],
                note=f"CPU median {statistics.median(c for _, c in runs):.0f} s, daemons",
            )
        )
    one = statistics.median(w for w, _ in samples[1])
    three = statistics.median(w for w, _ in samples[3])
    rows.append(
        Row(
            "replicas.ratio",
            "3 replicas / 1 replica (wall, ratio of medians)",
            three / one,
            "x",
            runs=min(len(samples[1]), len(samples[3])),
            kind=DERIVED,
            note=f"{three - one:+.1f} s",
        )
    )
    return rows
