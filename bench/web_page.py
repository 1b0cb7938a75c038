"""The web page's fleet view at 1,000 hosts: server-side render time and page size.

1,000 hosts in 5 groups of 200, each group with 2 apps (2,000 host x app cells), 10% of the
hosts drifted on one app (recorded at an older version), resolved for real
(``wiring.load_repository``) with the recorded state in a SQLite store (``wiring.open_store``).

Timed: what ``GET /`` does in the daemon without the HTTP hop: the two read-model builds it asks
of the daemon (``status.build`` and ``status.environment_views(with_hosts=True)``) and
``web.render_fleet``; and the render alone. Size: the HTML in KiB. Targets (issue 15): under
200 ms and 300 KB; printed, never asserted.
"""

from __future__ import annotations

import random
import statistics
import time

from bench.common import DesiredRepo, split_hosts
from bench.registry import Context, Row, register
from reconciler.edges.git import CommitInfo
from reconciler.record import DeployedVersion
from reconciler.report import status, web
from reconciler.service import wiring
from reconciler.settings import Settings
from reconciler.source.refresh import DesiredSnapshot

HOSTS, APPS, DRIFT_SHARE = 1_000, 2, 0.10
GROUPS = ("web", "api", "worker", "cache", "batch")


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
        lines += [f'      {group}-app{a}: "{index}.{a}.0"' for a in range(1, APPS + 1)]
    return "\n".join(lines) + "\n"


@register("web_page", "the web page's fleet view of 1,000 hosts: render time and size")
def run(ctx: Context) -> list[Row]:
    repo = DesiredRepo(ctx.workdir / "repo")
    repo.inventory(split_hosts(HOSTS, GROUPS))
    repo.write("environments/prod.yaml", environment_yaml())
    sha = repo.commit_push(f"{HOSTS} hosts")
    loaded = wiring.load_repository(repo.work)
    if loaded.state is None:
        raise RuntimeError(f"invalid desired state: {loaded.problems[:3]}")
    environment = loaded.state.environments["prod"]

    settings = Settings(state_dir=ctx.workdir / "state", source={"url": repo.url})
    store = wiring.open_store(settings)
    chooser = random.Random(42)
    now = time.time()
    records = []
    for group in environment.groups.values():
        for host in group.host_names:
            drifted = chooser.random() < DRIFT_SHARE
            for n, (app, version) in enumerate(group.apps.items()):
                recorded = "0.0.1" if drifted and n == 0 else version
                records.append(DeployedVersion("prod", host, app, recorded, "", sha, None, now))
    store.record_deployed(records)
    snapshot = DesiredSnapshot(
        commit=CommitInfo(sha, "bench", "bench@localhost", f"{HOSTS} hosts", now),
        root=repo.work,
        state=loaded.state,
    )

    def page() -> str:
        view = status.build(store, snapshot, url=repo.url, branch="main", now=now)
        hosts = status.environment_views(store, snapshot, with_hosts=True, now=now)
        return web.render_fleet(view, hosts, [])

    view = status.build(store, snapshot, url=repo.url, branch="main", now=now)
    hosts = status.environment_views(store, snapshot, with_hosts=True, now=now)
    html = page()
    reps = ctx.reps(7, 3)
    whole, render = [], []
    for _ in range(reps):
        start = time.perf_counter()
        page()
        whole.append(time.perf_counter() - start)
        start = time.perf_counter()
        web.render_fleet(view, hosts, [])
        render.append(time.perf_counter() - start)
    kib = len(html.encode()) / 1024
    cells = html.count("<td class=")
    return [
        Row.of(
            "web.fleet.1000",
            f"GET / work: read models + render, {HOSTS:,} hosts x {APPS} apps",
            whole,
            note=f"target < 200 ms; median {statistics.median(whole) * 1000:.0f} ms",
        ),
        Row.of("web.fleet.render.1000", "render_fleet alone", render, detail=True),
        Row(
            "web.fleet.size.1000",
            f"fleet page size, {cells:,} host x app cells",
            kib,
            "KiB",
            note="target < 300 KB (292 KiB)",
        ),
    ]
