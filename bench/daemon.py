"""Daemon figures: webhook -> first playbook step, and RSS after many idle cycles.

* ``webhook``: a real ``reconciler run`` subprocess on a free port, a bare remote, a local fleet
  of 4 hosts. Each repetition pushes a version bump, sends a signed GitHub push webhook and
  polls the state store (``wiring.open_store(read_only=True)``, opened once the daemon has
  converged the fleet) for the first journalled step of that commit; the latency
  is ``step.started_at - sent``. The hosts then converge before the next repetition.
* ``daemon_rss``: an in-process ``Daemon`` (no HTTP server) driving idle cycles through its own
  source loop (``_cycle``: fetch, validate, dispatch, reconcile in the environment pool) plus a
  metrics scrape each cycle, on a desired state of 100 hosts in sync. RSS (psutil) is read after
  100 cycles and after 10,000 (quick: 1,000), in a fresh child process.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from bench.common import DesiredRepo, wait_until
from bench.registry import DERIVED, Context, Row, register
from reconciler.record import StateStore
from reconciler.service import wiring
from reconciler.settings import Settings
from reconciler.testing.fleet import LocalFleet, free_port, served_version, write_inventory

SECRET = "bench-webhook-secret"  # noqa: S105 - a throwaway test secret
ENV = """\
environment: prod
inventory: inventories/prod.yml
defaults:
  timeout: 120s
  rollout: {{canary: [25, 100], max_failed_hosts: 0}}
groups:
  web:
    apps: {{shop: "{version}"}}
"""


def _post_webhook(url: str) -> None:
    body = json.dumps({"ref": "refs/heads/main", "after": "0" * 40}).encode()
    signature = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    request = urllib.request.Request(  # noqa: S310 - loopback URL we built
        f"{url}/api/v1/webhooks/github",
        data=body,
        headers={
            "Content-Type": "application/json",
            "X-GitHub-Event": "push",
            "X-Hub-Signature-256": f"sha256={signature}",
        },
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        if response.status != 202:
            raise RuntimeError(f"webhook answered {response.status}")


def _first_step(store: StateStore, commit: str) -> float | None:
    for rollout in store.rollouts("prod", limit=20):
        if rollout.commit == commit:
            steps = store.steps(rollout.id)
            if steps:
                return min(s.started_at for s in steps)
    return None


@register("webhook", "webhook -> first playbook step journalled, real daemon subprocess")
def webhook(ctx: Context) -> list[Row]:
    base = ctx.workdir / "webhook"
    fleet = LocalFleet(base / "fleet").create()
    os.environ.update(fleet.environ())
    hosts = [f"web-{i:02d}" for i in range(1, 5)]
    ports = {h: {"shop": free_port()} for h in hosts}
    versions = ["1.0.0", "1.1.0"]
    for version in versions:
        fleet.build("shop", version)
    repo = DesiredRepo(base / "git")
    write_inventory(repo.work / "inventories" / "prod.yml", {"web": hosts}, ports)
    repo.write("environments/prod.yaml", ENV.format(version=versions[0]))
    repo.commit_push("initial")
    (base / "secret").write_text(SECRET)
    port = free_port()
    config = base / "reconciler.yaml"
    config.write_text(
        json.dumps(
            {
                "state_dir": str(base / "state"),
                "source": {"url": repo.url, "poll_interval": "1h", "watch": False},
                "api": {"port": port},
                "webhooks": {"github_secret_file": str(base / "secret")},
                "daemon": {"resync_interval": 0, "log_level": "warning"},
            }
        )
    )
    url = f"http://127.0.0.1:{port}"
    log = (base / "daemon.log").open("wb")
    daemon = subprocess.Popen(
        [str(Path(sys.executable).parent / "reconciler"), "run", "--config", str(config)],
        stdout=log,
        stderr=log,
        env={**os.environ},
    )
    samples: list[float] = []
    store: StateStore | None = None
    try:

        def served(version: str) -> bool:
            return all(served_version(ports[h]["shop"]) == version for h in hosts)

        wait_until(lambda: served(versions[0]), 180, "the initial convergence", 0.2)
        # Read-only, as `reconciler status` reads it: the daemon has created it by now.
        store = wiring.open_store(Settings.load(config), read_only=True)
        for rep in range(ctx.reps(5, 3)):
            version = versions[(rep + 1) % 2]
            repo.write("environments/prod.yaml", ENV.format(version=version))
            sha = repo.commit_push(f"bump {rep}")
            sent = time.time()
            _post_webhook(url)
            started = wait_until(lambda s=sha: _first_step(store, s), 60, "the first step")
            samples.append(started - sent)
            wait_until(lambda v=version: served(v), 180, "convergence", 0.1)
            time.sleep(1.0)  # let the rollout finish its bookkeeping
    finally:
        if store is not None:
            store.close()
        daemon.terminate()
        daemon.wait(timeout=120)
        log.close()
        fleet.stop()
    return [
        Row.of(
            "webhook.first_step",
            "webhook -> first playbook step (4 hosts, local)",
            samples,
            note="signed GitHub push; journal timestamp of step 1",
        )
    ]


_RSS_CHILD = """
import gc, json, sys, time
from pathlib import Path
import psutil
from bench.idle_cycle import new_reconciler, prepare
from reconciler.support import logs
from reconciler.service.daemon import Daemon

logs.configure("error", "json")
base, hosts, total = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
repo = prepare(base / "git", hosts)
reconciler = new_reconciler(repo, base / "state", hosts)
daemon = Daemon(reconciler.settings, reconciler)
proc = psutil.Process()
out, times = {}, []
for cycle in range(1, total + 1):
    started = time.perf_counter()
    daemon._cycle(None, True)
    while daemon.running():
        time.sleep(0.0005)
    daemon.metrics.exposition()
    times.append(time.perf_counter() - started)
    if cycle in (100, total):
        gc.collect()
        out[str(cycle)] = proc.memory_info().rss / 2**20
daemon._pool.shutdown()
times.sort()
out["cycle_median_s"] = times[len(times) // 2]
print(json.dumps(out))
"""


@register("daemon_rss", "daemon RSS after 100 vs 10,000 idle cycles (100 hosts)", in_quick=True)
def daemon_rss(ctx: Context) -> list[Row]:
    total = 1000 if ctx.quick else 10_000
    hosts = 100
    base = ctx.workdir / "daemon_rss"
    base.mkdir(parents=True, exist_ok=True)
    root = Path(__file__).resolve().parent.parent
    child = subprocess.run(
        [sys.executable, "-c", _RSS_CHILD, str(base), str(hosts), str(total)],
        capture_output=True,
        text=True,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        check=True,
        timeout=3600,
    )
    data = json.loads(child.stdout.strip().splitlines()[-1])
    early, late = data["100"], data[str(total)]
    return [
        Row("daemon.rss.100", "daemon RSS after 100 idle cycles", early, "MiB"),
        Row(f"daemon.rss.{total}", f"daemon RSS after {total:,} idle cycles", late, "MiB"),
        Row(
            "daemon.rss.growth",
            f"RSS growth from cycle 100 to {total:,}",
            late - early,
            "MiB",
            kind=DERIVED,
        ),
        Row(
            "daemon.cycle",
            f"daemon idle cycle ({hosts} hosts: fetch, validate, plan, scrape)",
            data["cycle_median_s"],
            "s",
            runs=total,
            note="median over all cycles",
        ),
    ]
