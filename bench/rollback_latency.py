"""Measure gate failure -> revert commit on the remote, and the canary blast radius.

Runs the real thing in-process: a bare Git remote, a local fleet of 4 hosts, the shipped role,
real health gates. A bad version (its /healthz answers 500) is committed; the benchmark records
when the failing gate result arrives and when the revert commit appears on the remote (polled
every 20 ms), then prints the figures. Usage: ``.venv/bin/python bench/rollback_latency.py [N]``
(N repetitions, default 3; prints each run and the median). Registered in the suite as
``rollback_latency`` (not part of ``--quick``: one run takes about a minute).
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from bench.common import git
from bench.registry import Context, Row, register
from reconciler.edges.gates import GateResult
from reconciler.plan.canary import Step
from reconciler.rollout.ports import SilentReporter
from reconciler.service import wiring
from reconciler.settings import Settings
from reconciler.states import GateCheckpoint, Phase
from reconciler.support import logs
from reconciler.testing.fleet import LocalFleet, free_port, write_inventory

ENV = """\
environment: prod
inventory: inventories/prod.yml
defaults:
  timeout: 120s
  rollout: {{canary: [25, 100], max_failed_hosts: 0}}
  health:
    - http:
        url: "http://{{host}}:{{port}}/healthz"
        expect_body: "{{version}}"
        interval: 0.2s
        timeout: 2s
groups:
  web:
    apps: {{shop: "{version}"}}
"""


class GateClock(SilentReporter):
    """Notes when the first failing gate result of a deploy step arrives."""

    def __init__(self) -> None:
        self.failed_at: float | None = None

    def gates_finished(
        self,
        environment: str,
        group: str,
        phase: Phase,
        step: Step,
        checkpoint: GateCheckpoint,
        results: Sequence[GateResult],
    ) -> None:
        failed = not all(r.passed for r in results)
        if phase is Phase.DEPLOY and failed and self.failed_at is None:
            self.failed_at = time.monotonic()


HOSTS = [f"web-{i}" for i in range(1, 5)]


def seed(base: Path, env: str = ENV) -> tuple[LocalFleet, Path, Path]:
    """A local fleet of 4 web hosts with shop 1.0.0 (healthy) and 1.1.0 (unhealthy) built,
    a bare remote whose main puts prod on 1.0.0 (``env``: the environment file, ``{version}``
    left open) and its work tree: ``(fleet, bare, work)``."""
    fleet = LocalFleet(base / "fleet").create()
    os.environ.update(fleet.environ())
    bare, work = base / "remote.git", base / "work"
    git(base, "init", "-q", "--bare", "--initial-branch=main", str(bare))
    git(base, "init", "-q", "--initial-branch=main", str(work))
    write_inventory(
        work / "inventories" / "prod.yml", {"web": HOSTS}, {h: {"shop": free_port()} for h in HOSTS}
    )
    fleet.build("shop", "1.0.0")
    fleet.build("shop", "1.1.0", "unhealthy")
    (work / "environments").mkdir()
    (work / "environments" / "prod.yaml").write_text(env.format(version="1.0.0"))
    git(work, "add", "-A")
    git(work, "commit", "-qm", "initial")
    git(work, "push", "-q", str(bare), "HEAD:main")
    return fleet, bare, work


def once(base: Path) -> tuple[float, int]:
    fleet, bare, work = seed(base)
    settings = Settings(state_dir=base / "state", source={"url": str(bare)})
    reconciler = wiring.build(settings)
    try:
        first = reconciler.reconcile_once()
        if [e.result for e in first.environments] != ["applied"]:
            raise RuntimeError(f"the initial deploy did not apply: {first.environments}")
        (work / "environments" / "prod.yaml").write_text(ENV.format(version="1.1.0"))
        git(work, "commit", "-qam", "bad bump")
        git(work, "push", "-q", str(bare), "HEAD:main")
        bad = git(bare, "rev-parse", "main")
        clock = GateClock()
        reconciler.adapters = dataclasses.replace(reconciler.adapters, reporter=clock)
        seen: list[float] = []

        def watch() -> None:
            while not seen:
                if git(bare, "rev-parse", "main") != bad:
                    seen.append(time.monotonic())
                time.sleep(0.02)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        reconciler.reconcile_once()
        watcher.join(timeout=60)
        radius = sum((fleet.app_root(h, "shop") / "releases" / "1.1.0").exists() for h in HOSTS)
        assert clock.failed_at is not None and seen, "no gate failure or no revert commit"
        return seen[0] - clock.failed_at, radius
    finally:
        reconciler.store.close()
        fleet.stop()


def measure(runs: int, verbose: bool = False) -> list[tuple[float, int]]:
    """``runs`` times: (gate failure -> revert on the remote in seconds, blast radius)."""
    results = []
    for n in range(runs):
        with tempfile.TemporaryDirectory(prefix="bench-rollback-") as tmp:
            latency, radius = once(Path(tmp))
        results.append((latency, radius))
        if verbose:
            print(
                f"run {n + 1}: gate failure -> revert on remote {latency:.2f}s; "
                f"hosts that ever ran the bad version: {radius} of 4 (first step: 1)"
            )
    return results


@register(
    "rollback_latency", "gate failure -> revert commit on the remote; blast radius", in_quick=False
)
def run(ctx: Context) -> list[Row]:
    results = measure(ctx.reps(3, 1))
    return [
        Row.of(
            "rollback.latency",
            "gate failure -> revert commit on the remote, 4 hosts",
            [r[0] for r in results],
            note="includes the rollback playbook and its gates",
        ),
        Row.of(
            "rollback.radius",
            "hosts that ever ran the bad version (of 4; first step 1)",
            [float(r[1]) for r in results],
            "hosts",
        ),
    ]


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    logs.configure("warning", "console")
    latencies = [latency for latency, _ in measure(runs, verbose=True)]
    print(
        f"median {statistics.median(latencies):.2f}s over {runs} runs "
        f"(includes the rollback playbook and the rollback's gates)"
    )


if __name__ == "__main__":
    main()
