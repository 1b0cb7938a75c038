"""Issue 12 on real hosts (local tier): what the hosts really run, out-of-band drift, self-heal.

One walk through a history on two local hosts (web-01, web-02), each phase the precondition of
the next, so the Ansible runs are shared: ``sync --once`` deploys shop 1.1.0; by hand, web-01's
``current`` is switched to an old release (1.0.0, unpacked there as an old image would have it)
and web-02's local fact is moved away; ``reconciler observe`` (no daemon) and ``diff`` report
them; then a daemon with a short ``observation.interval`` sees the next switch on its own,
reports it and changes nothing; with ``self_heal`` it redeploys web-01 through the gates, and a
second switch within the flap period is reported ``flapping`` and left alone.
"""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path
from typing import Any

import pytest

from reconciler.testing.fleet import LocalFleet, served_version
from tests.daemon.conftest import RunningDaemon, wait_for
from tests.daemon.test_metrics import samples, value
from tests.daemon.test_truth import cli
from tests.end_to_end.conftest import Setup, _setup

OLD, NEW = "1.0.0", "1.1.0"
SWITCHED, FACTLESS = "web-01", "web-02"
SHOP = {"environment": "prod", "group": "web", "app": "shop"}


@pytest.fixture
def setup(tmp_path: Path, fleet: LocalFleet) -> Setup:
    """Two web hosts (the workers of the inventory are in no group of the environment)."""
    return _setup(tmp_path, fleet, 2)


def prod_yaml(version: str, self_heal: str = "") -> str:
    """Group web runs shop at ``version`` in one step, gated on each host's /healthz."""
    return (
        "environment: prod\n"
        "inventory: inventories/prod.yml\n"
        "defaults:\n"
        "  timeout: 120s\n"
        "  rollout: {canary: [100], max_failed_hosts: 0}\n"
        "  health:\n"
        '    - http: {url: "http://{host}:{port}/healthz", expect_body: "{version}",'
        " interval: 0.5s, timeout: 4s}\n"
        f"{self_heal}"
        "groups:\n"
        "  web:\n"
        f'    apps: {{shop: "{version}"}}\n'
    )


def switch_current(setup: Setup, host: str, version: str) -> None:
    """What an operator does by hand: point ``current`` at another release (atomically)."""
    root = setup.fleet.app_root(host, "shop")
    assert (root / "releases" / version).is_dir()
    tmp = root / "current.by-hand"
    os.symlink(root / "releases" / version, tmp)
    os.replace(tmp, root / "current")


def drift(result: Any) -> dict[str, dict[str, Any]]:
    """Host -> its row of ``diff -o json`` / ``observe -o json`` (hosts not in sync only)."""
    return {row["host"]: row for row in json.loads(result.stdout)["drift"]}


def hosts(daemon: RunningDaemon) -> dict[str, dict[str, Any]]:
    """Host -> its shop row of the API's environment view."""
    view = daemon.get("/api/v1/environments/prod").json()
    return {row["host"]: row for row in view["hosts"] if row["app"] == "shop"}


def self_heals(daemon: RunningDaemon) -> list[dict[str, Any]]:
    return [r for r in daemon.rollouts() if r["trigger"] == "self_heal"]


def test_out_of_band_is_reported_healed_once_and_flapping_left_alone(setup, make_daemon):
    # -- deploy 1.1.0; web-01 also has an old release, 1.0.0
    setup.remote.commit("shop 1.1.0", {"environments/prod.yaml": prod_yaml(NEW)})
    setup.cli("sync", "--once", check=True)
    releases = setup.fleet.app_root(SWITCHED, "shop") / "releases"
    with tarfile.open(setup.fleet.build("shop", OLD)) as artifact:
        artifact.extractall(releases / OLD, filter="data")

    # -- by hand: web-01 on the old release, web-02 without its local fact
    switch_current(setup, SWITCHED, OLD)
    fact = setup.fleet.fact_file(FACTLESS, "shop")
    fact.rename(fact.with_name("moved-away"))
    observed = setup.cli("observe", "-o", "json")
    assert observed.returncode == 1, observed.stdout + observed.stderr
    rows = drift(observed)
    assert rows[SWITCHED]["class"] == "out_of_band"
    assert rows[SWITCHED]["observed"] == OLD and rows[SWITCHED]["recorded"] == NEW
    assert rows[FACTLESS]["class"] == "unknown", "a host that says nothing is not in sync"
    assert rows[FACTLESS]["observed"] is None and rows[FACTLESS]["recorded"] == NEW
    diff = setup.cli("diff")
    assert diff.returncode == 1, diff.stdout + diff.stderr
    assert f"out_of_band: runs {OLD}, recorded and desired {NEW}" in diff.stdout
    assert f"unknown: missing, recorded {NEW}" in diff.stdout
    assert setup.fleet.current_release(SWITCHED, "shop") == OLD  # looking changed nothing
    assert not fact.exists()

    # -- put both right; a daemon observing every few seconds sees them in sync
    fact.with_name("moved-away").rename(fact)
    switch_current(setup, SWITCHED, NEW)
    daemon = make_daemon(observation={"interval": "4s", "jitter": 0}).start()
    wait_for(
        lambda: all(h["drift"] == "in_sync" for h in hosts(daemon).values()),
        120,
        "both hosts observed in sync",
    )
    rollouts = len(daemon.rollouts())

    # -- switched again: the next observation (nothing else triggers one) reports it
    switch_current(setup, SWITCHED, OLD)
    seen = wait_for(
        lambda: (h := hosts(daemon)[SWITCHED])["drift"] == "out_of_band" and h,
        120,
        "the periodic observation to see web-01 out of band",
    )
    assert seen["observed"] == OLD and seen["deployed"] == NEW and seen["in_sync"]
    answer = daemon.post("/api/v1/sync", {"wait": True, "timeout": 120}).json()
    assert answer["finished"]["prod"] is not None
    metrics = samples(daemon.get("/metrics").text)
    assert value(metrics, "reconciler_out_of_band_hosts", **SHOP) == 1
    assert value(metrics, "reconciler_unknown_hosts", environment="prod", group="web") == 0
    assert value(metrics, "reconciler_drift_hosts", **SHOP) == 0  # desired = recorded
    assert value(metrics, "reconciler_drift_since_timestamp_seconds", **SHOP)
    diff = cli(daemon, "diff", "-o", "json")
    assert diff.returncode == 1 and drift(diff)[SWITCHED]["class"] == "out_of_band"
    # report only: a reconcile later, nothing was redeployed
    assert setup.fleet.current_release(SWITCHED, "shop") == OLD
    assert len(daemon.rollouts()) == rollouts

    # -- self_heal on: web-01 is redeployed through the gates, history says why
    heal = "  self_heal: {enabled: true, flap_period: 1h}\n"
    setup.remote.commit("self-heal", {"environments/prod.yaml": prod_yaml(NEW, heal)})
    answer = daemon.post("/api/v1/sync", {"wait": True, "timeout": 300}).json()
    assert answer["finished"]["prod"]["result"] == "applied", answer
    [healed] = self_heals(daemon)
    assert healed["state"] == "succeeded" and healed["apps"] == {"shop": NEW}, healed
    [step] = daemon.get(f"/api/v1/rollouts/{healed['id']}").json()["steps"]
    assert step["hosts"] == [SWITCHED]
    assert [g["host"] for g in step["gate_results"] if g["passed"]] == [SWITCHED]
    assert setup.fleet.current_release(SWITCHED, "shop") == NEW
    assert served_version(setup.port(SWITCHED)) == NEW
    assert "trigger self_heal" in cli(daemon, "history").stdout

    # -- switched again within the flap period: flapping, reported, not healed twice
    switch_current(setup, SWITCHED, OLD)
    wait_for(
        lambda: hosts(daemon)[SWITCHED]["flapping"],
        120,
        "the periodic observation to see web-01 flapping",
    )
    daemon.post("/api/v1/sync", {"wait": True, "timeout": 120})
    assert len(self_heals(daemon)) == 1
    assert setup.fleet.current_release(SWITCHED, "shop") == OLD
    row = drift(cli(daemon, "diff", "-o", "json"))[SWITCHED]
    assert row["class"] == "out_of_band" and row["flapping"]
