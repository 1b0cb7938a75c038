"""Issue 3 end to end: canary steps, health gates, rollback, revert commits, quarantine."""

from __future__ import annotations

from ruamel.yaml import YAML

from reconciler.record.sqlite import SqliteStateStore
from reconciler.settings import Settings
from reconciler.testing.fleet import served_version
from tests.end_to_end.conftest import environment_yaml

GATES = """\
  health:
    - http:
        url: "http://{host}:{port}/healthz"
        expect_body: "{version}"
        interval: 0.5s
        timeout: 4s
"""


def env_text(web: str, jobs: str = "3.0.0", canary: str = "[10, 50, 100]") -> str:
    text = environment_yaml({"web": {"shop": web}, "worker": {"jobs": jobs}}, canary)
    return text.replace("groups:\n", GATES + "groups:\n", 1)


def commit(setup, message: str, web: str, jobs: str = "3.0.0", canary: str = "[10, 50, 100]"):
    return setup.remote.commit(message, {"environments/prod.yaml": env_text(web, jobs, canary)})


def store(setup) -> SqliteStateStore:
    return SqliteStateStore(Settings.load(setup.config).database_path)


def run_dirs(setup) -> int:
    runs = Settings.load(setup.config).runs_dir
    return len(list(runs.iterdir())) if runs.exists() else 0


def remote_file(setup, sha: str = "main") -> str:
    return setup.remote.git(setup.remote.bare, "show", f"{sha}:environments/prod.yaml")


def hosts_with_release(setup, app: str, version: str) -> list[str]:
    return sorted(
        h
        for hosts in setup.groups.values()
        for h in hosts
        if (setup.fleet.app_root(h, app) / "releases" / version).exists()
    )


def test_good_bump_goes_through_1_5_10_hosts(big_setup):
    setup = big_setup
    commit(setup, "initial", "1.0.0", canary="[100]")
    setup.cli("sync", "--once", check=True)
    commit(setup, "bump shop", "1.1.0")
    out = setup.cli("sync", "--once", check=True).stdout
    assert "deploy step 1/3 (10%): deploying to 1 host(s)" in out
    assert "deploy step 2/3 (50%): deploying to 4 host(s)" in out
    assert "deploy step 3/3 (100%): deploying to 5 host(s)" in out
    assert out.count("prod/web   health gates after the step (step 1): 1/1 passed") == 1
    for host in setup.groups["web"]:
        assert served_version(setup.port(host)) == "1.1.0"
    db = store(setup)
    [rollout] = [r for r in db.rollouts("prod") if r.apps == {"shop": "1.1.0"}]
    assert rollout.state == "succeeded"
    steps = [s for s in db.steps(rollout.id) if s.phase == "deploy"]
    assert [len(s.hosts) for s in steps] == [1, 4, 5]
    assert all(s.state == "succeeded" and s.gate_results for s in steps)
    assert {g["passed"] for s in steps for g in s.gate_results} == {True}


def test_bad_version_stays_on_the_canary_and_is_reverted_in_git(big_setup):
    setup = big_setup
    setup.fleet.build("shop", "1.2.0", "unhealthy")
    commit(setup, "initial", "1.0.0", canary="[100]")
    setup.cli("sync", "--once", check=True)
    bad = commit(setup, "bump shop to a bad build", "1.2.0")
    before_remote = setup.remote.remote_head()
    assert before_remote == bad

    result = setup.cli("sync", "--once")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "rolling back" in result.stdout
    # blast radius: the first step (10% of 10 hosts = 1 host) and nobody else
    assert len(hosts_with_release(setup, "shop", "1.2.0")) == 1
    for host in setup.groups["web"]:
        assert served_version(setup.port(host)) == "1.0.0", host

    head = setup.remote.remote_head()
    assert head != bad
    message = setup.remote.git(setup.remote.bare, "log", "-1", "--format=%B", head)
    author = setup.remote.git(setup.remote.bare, "log", "-1", "--format=%an <%ae>", head)
    assert f"Reverts: {bad}" in message and "prod" in message and "web" in message
    assert author == "reconciler <reconciler@localhost>"
    assert 'shop: "1.0.0"' in remote_file(setup)

    db = store(setup)
    [rollout] = [r for r in db.rollouts("prod") if r.apps == {"shop": "1.2.0"}]
    assert rollout.state == "rolled_back"
    assert "gate http failed" in rollout.reason and "500" in rollout.reason
    phases = [(s.phase, len(s.hosts), s.state) for s in db.steps(rollout.id)]
    assert phases == [("deploy", 1, "succeeded"), ("rollback", 1, "succeeded")]

    # the daemon's own revert reconciles to a no-op, and nothing is retried
    before = run_dirs(setup)
    again = setup.cli("sync", "--once", check=True)
    assert "in_sync" in again.stdout and run_dirs(setup) == before


def test_read_only_source_rolls_back_and_quarantines_the_commit(setup):
    config = YAML().load(setup.config.read_text())
    config["source"]["push"] = False
    YAML().dump(config, setup.config)
    setup.fleet.build("shop", "1.2.0", "unhealthy")
    commit(setup, "initial", "1.0.0", canary="[100]")
    setup.cli("sync", "--once", check=True)
    bad = commit(setup, "bad bump", "1.2.0")
    assert setup.cli("sync", "--once").returncode == 1
    assert setup.remote.remote_head() == bad, "read-only: Git is left alone"
    before = run_dirs(setup)
    again = setup.cli("sync", "--once")
    assert again.returncode == 1 and "quarantined" in again.stdout
    assert run_dirs(setup) == before, "a quarantined commit is never retried"
    status = setup.cli("status").stdout
    assert "pending" in status and "quarantined" in status
    # a new commit with a different version starts a new attempt
    commit(setup, "fixed build", "1.1.0")
    setup.cli("sync", "--once", check=True)
    assert served_version(setup.port("web-01")) == "1.1.0"


def test_multi_group_commit_gets_a_targeted_revert(setup):
    setup.fleet.build("shop", "1.2.0", "unhealthy")
    commit(setup, "initial", "1.0.0", canary="[100]")
    setup.cli("sync", "--once", check=True)
    bad = commit(setup, "bump web and worker", "1.2.0", jobs="3.1.0")
    assert setup.cli("sync", "--once").returncode == 1
    text = remote_file(setup)
    assert 'shop: "1.0.0"' in text and 'jobs: "3.1.0"' in text
    message = setup.remote.git(setup.remote.bare, "log", "-1", "--format=%B", "main")
    assert f"Reverts: {bad}" in message and "This reverts commit" not in message
    # the next reconcile rolls the worker forward; web stays on the good version
    setup.cli("sync", "--once", check=True)
    for host in setup.groups["worker"]:
        assert served_version(setup.port(host)) == "3.1.0"
    assert served_version(setup.port("web-01")) == "1.0.0"


def test_operator_revert_and_rollback_command(setup):
    commit(setup, "initial", "1.0.0", canary="[100]")
    setup.cli("sync", "--once", check=True)
    bump = commit(setup, "bump", "1.1.0", canary="[100]")
    setup.cli("sync", "--once", check=True)
    # a human reverts the bump: the hosts converge back through the same gated path
    setup.remote.git(setup.remote.work, "revert", "--no-edit", bump)
    setup.remote.push()
    out = setup.cli("sync", "--once", check=True).stdout
    assert "health gates" in out
    assert {served_version(setup.port(h)) for h in setup.groups["web"]} == {"1.0.0"}
    # `reconciler rollback` writes that commit for the operator
    commit(setup, "bump again", "1.1.0", canary="[100]")
    setup.cli("sync", "--once", check=True)
    result = setup.cli("rollback", "--env", "prod", "--group", "web", "--to", "1.0.0")
    assert result.returncode == 0, result.stdout + result.stderr
    assert 'shop: "1.0.0"' in remote_file(setup)
    subject = setup.remote.git(setup.remote.bare, "log", "-1", "--format=%s", "main")
    assert "prod/web" in subject and "1.0.0" in subject
    setup.cli("sync", "--once", check=True)
    assert {served_version(setup.port(h)) for h in setup.groups["web"]} == {"1.0.0"}
