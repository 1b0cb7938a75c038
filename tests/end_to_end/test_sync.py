"""Issue 2 end to end: commit -> sync --once -> hosts really run it -> store and diff agree."""

from __future__ import annotations

import json

from reconciler.record.sqlite import SqliteStateStore
from reconciler.settings import Settings
from reconciler.testing.fleet import served_version, write_inventory

V1 = {"web": {"shop": "1.0.0"}, "worker": {"jobs": "3.0.0"}}
V2 = {"web": {"shop": "1.1.0"}, "worker": {"jobs": "3.0.0"}}


def store_versions(setup) -> dict[tuple[str, str], str]:
    store = SqliteStateStore(Settings.load(setup.config).database_path)
    try:
        return {(d.host, d.app): d.version for d in store.deployed("prod")}
    finally:
        store.close()


def run_dirs(setup) -> int:
    runs = Settings.load(setup.config).runs_dir
    return len(list(runs.iterdir())) if runs.exists() else 0


def test_bump_converges_every_host_and_second_sync_is_a_no_op(setup):
    setup.commit_versions(V1, "initial")
    first = setup.cli("sync", "--once", check=True)
    assert "prod/web deploy step 1/1 (100%)" in first.stdout
    for host in setup.groups["web"]:
        assert served_version(setup.port(host)) == "1.0.0"
    for host in setup.groups["worker"]:
        assert served_version(setup.port(host)) == "3.0.0"

    bump = setup.commit_versions(V2, "bump shop to 1.1.0")
    assert setup.cli("diff").returncode == 1
    plan = setup.cli("plan", check=True).stdout
    assert "web: 4/4 host(s) -> shop=1.1.0" in plan and "worker: in sync" in plan
    setup.cli("sync", "--once", check=True)
    for host in setup.groups["web"]:
        assert served_version(setup.port(host)) == "1.1.0"
        assert setup.fleet.current_release(host, "shop") == "1.1.0"
        assert setup.fleet.fact(host, "shop")["version"] == "1.1.0"

    recorded = store_versions(setup)
    assert {recorded[(h, "shop")] for h in setup.groups["web"]} == {"1.1.0"}
    assert {recorded[(h, "jobs")] for h in setup.groups["worker"]} == {"3.0.0"}
    diff = setup.cli("diff")
    assert diff.returncode == 0 and "in sync" in diff.stdout

    before = run_dirs(setup)
    again = setup.cli("sync", "--once", check=True)
    assert run_dirs(setup) == before, "an in-sync environment must not run a playbook"
    assert "in_sync" in again.stdout
    status = setup.cli("status", check=True).stdout
    assert bump[:12] in status and "in_sync" in status
    history = setup.cli("history", check=True).stdout
    assert "succeeded" in history and "shop=1.1.0" in history


def test_failed_and_unreachable_hosts_are_not_recorded(setup, tmp_path):
    broken = tmp_path / "broken-artifacts"
    broken.mkdir()
    from reconciler.testing import testapp

    testapp.build_artifact(broken, "shop", "1.0.0", "crash")
    # web-02 gets a crashing artifact; web-03 is reached over SSH on a closed port
    write_inventory(
        setup.remote.work / "inventories" / "prod.yml",
        setup.groups,
        setup.ports,
        host_vars={
            "web-02": {"deploy_app_artifact_dir": str(broken)},
            "web-03": {"ansible_connection": "ssh", "ansible_port": 1},
        },
    )
    setup.commit_versions(V1, "initial", canary="[100]")
    result = setup.cli("sync", "--once")
    assert result.returncode == 1
    assert "web-02" in result.stdout and "web-03" in result.stdout
    recorded = store_versions(setup)
    assert (("web-02", "shop") not in recorded) and (("web-03", "shop") not in recorded)
    assert recorded[("web-01", "shop")] == "1.0.0" and recorded[("web-04", "shop")] == "1.0.0"
    assert served_version(setup.port("web-01")) == "1.0.0"
    assert served_version(setup.port("web-02")) is None
    # the worker group comes after web: it waits instead of deploying on a broken base
    assert ("worker-01", "jobs") not in recorded
    assert "worker=waiting" in result.stdout
    history = setup.cli("history").stdout
    assert "failed" in history


def test_invalid_commit_is_rejected_and_last_valid_stays_in_force(setup, tmp_path):
    probe = tmp_path / "pwned"  # created only if the version were ever templated
    good = setup.commit_versions(V1, "initial")
    setup.cli("sync", "--once", check=True)
    bad = setup.remote.commit(
        "evil",
        {
            "environments/prod.yaml": (setup.remote.work / "environments/prod.yaml")
            .read_text()
            .replace('"1.0.0"', f"\"{{{{ lookup('pipe', 'touch {probe}') }}}}\"")
        },
    )
    result = setup.cli("sync", "--once")
    assert result.returncode == 1
    assert f"rejected {bad[:12]}: environments/prod.yaml:" in result.stderr
    assert served_version(setup.port("web-01")) == "1.0.0"
    status = setup.cli("status").stdout
    assert f"rejected commit {bad[:12]}" in status and good[:12] in status
    store = SqliteStateStore(Settings.load(setup.config).database_path)
    try:
        problems = json.loads(store.get_meta("source.problems"))
    finally:
        store.close()
    assert problems[0].startswith("environments/prod.yaml:")
    assert not probe.exists(), "the rejected version was templated: its lookup ran"
