"""The CLI for people and for scripts: nothing cut off in an 80-column terminal, ``-o json`` is
the read model, ``-o wide`` adds columns. Real Git, the real store, the real CLI (no fleet:
nothing is deployed, so every host drifts)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from ruamel.yaml import YAML

from reconciler.record import RolloutRecord, StepRecord
from reconciler.record.sqlite import SqliteStateStore
from reconciler.testing.fleet import write_inventory
from tests.end_to_end.conftest import RECONCILER
from tests.gitrepo import GitRemote

ENV = "production-eu-west-1"
GROUP = "web_frontend_blue_green_canary"
HOSTS = [f"web-frontend-{i:04d}.eu-west-1.compute.example.internal" for i in range(1, 4)]


@pytest.fixture
def repo(tmp_path):
    remote = GitRemote(tmp_path / "git")
    write_inventory(remote.work / "inventories" / "prod.yml", {GROUP: HOSTS}, {})
    remote.commit(
        "initial",
        {
            f"environments/{ENV}.yaml": (
                f"environment: {ENV}\ninventory: inventories/prod.yml\n"
                "defaults:\n  rollout: {canary: [34, 100]}\n"
                f"groups:\n  {GROUP}:\n"
                '    apps: {storefront-checkout: "2.5.0-rc.1+build.20261125"}\n'
            )
        },
    )
    config = tmp_path / "reconciler.yaml"
    YAML().dump(
        {"state_dir": str(tmp_path / "state"), "source": {"url": remote.url, "branch": "main"}},
        config,
    )
    return config


def cli(config, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [RECONCILER, "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "80"},
    )


def assert_fits_and_whole(output: str, *names: str) -> None:
    for line in output.splitlines():
        assert len(line) <= 80, f"wider than 80 columns: {line!r}"
    for name in names:
        assert name in output, f"{name!r} is cut off or missing:\n{output}"


def test_diff_and_plan_in_80_columns_and_as_json(repo):
    diff = cli(repo, "diff")
    assert diff.returncode == 1, diff.stderr
    assert_fits_and_whole(diff.stdout, f"{ENV}/{GROUP}", *HOSTS, "2.5.0-rc.1+build.20261125")
    rows = json.loads(cli(repo, "diff", "-o", "json").stdout)["drift"]
    assert {(r["host"], r["recorded"], r["desired"]) for r in rows} == {
        (h, None, "2.5.0-rc.1+build.20261125") for h in HOSTS
    }
    plan = cli(repo, "plan")
    assert plan.returncode == 0, plan.stderr
    assert_fits_and_whole(plan.stdout, ENV, GROUP, *HOSTS)
    [environment] = json.loads(cli(repo, "plan", "-o", "json").stdout)["environments"]
    [group] = environment["groups"]
    assert [(s["percent"], s["cohort_size"], len(s["hosts"])) for s in group["steps"]] == [
        (34, 2, 2),
        (100, 3, 1),
    ]


def test_status_and_history_in_80_columns_and_as_json(repo, tmp_path):
    assert cli(repo, "diff").returncode == 1  # fetches the source into the cache
    store = SqliteStateStore(tmp_path / "state" / "state.db")
    store.start_rollout(
        RolloutRecord(
            "r1",
            "run1",
            ENV,
            GROUP,
            "c" * 40,
            {"storefront-checkout": "2.5.0"},
            "running",
            "",
            1.0,
            None,
        )
    )
    store.journal_step(
        StepRecord(
            "r1",
            "deploy",
            1,
            34,
            (HOSTS[0],),
            "failed",
            {HOSTS[0]: {"status": "failed", "changed": True, "message": "boom"}},
            [
                {
                    "gate": "http",
                    "host": HOSTS[0],
                    "passed": False,
                    "detail": "GET -> 500",
                    "checkpoint": "after_step",
                }
            ],
            "",
            1.0,
            2.0,
        )
    )
    store.finish_rollout("r1", "rolled_back", f"step 1: gate http failed on {HOSTS[0]}", 3.0)
    store.update_environment(ENV, 3.0, last_result="rolled_back", last_attempted_commit="c" * 40)
    store.close()

    history = cli(repo, "history")
    assert history.returncode == 0, history.stderr
    assert_fits_and_whole(history.stdout, f"{ENV}/{GROUP}", HOSTS[0], "rolled_back")
    assert "1 host(s) in this step" in history.stdout and "gates after step: 0/1" in history.stdout
    [rollout] = json.loads(cli(repo, "history", "-o", "json").stdout)
    assert rollout["state"] == "rolled_back" and rollout["steps"][0]["hosts"] == [HOSTS[0]]
    wide = subprocess.run(
        [RECONCILER, "--config", str(repo), "history", "-o", "wide"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "250"},
    )  # fmt: skip
    assert "cccccccccccc" in wide.stdout, "wide shows the commit column"

    status = cli(repo, "status")
    assert status.returncode == 0, status.stderr
    assert_fits_and_whole(status.stdout, ENV, "rolled_back", "0/3")
    view = json.loads(cli(repo, "status", "-o", "json").stdout)
    [environment] = view["environments"]
    assert environment["name"] == ENV and environment["groups"][0]["drift"] == {
        "storefront-checkout": 3
    }
