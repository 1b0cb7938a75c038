"""Poll mode and watch mode each pick up a commit without any webhook."""

from __future__ import annotations

from tests.daemon.conftest import wait_for

BUMP = {"web": {"shop": "1.1.0"}, "worker": {"jobs": "3.1.0"}}


def test_poll_mode_picks_up_a_commit(setup, make_daemon):
    setup.commit_versions({"web": {"shop": "1.0.0"}, "worker": {"jobs": "3.0.0"}}, "initial")
    daemon = make_daemon(source={"poll_interval": "1s", "poll_jitter": 0.5, "watch": False})
    daemon.start()
    daemon.wait_converged("1.0.0", "the initial convergence")
    sha = setup.commit_versions(BUMP, "bump both")
    wait_for(lambda: daemon.converged("1.1.0", "3.1.0"), 120, "the poll to deploy the bump")
    assert daemon.status()["source"]["valid_commit"] == sha
    assert not [e for e in daemon.events() if e.get("event") == "watching"]


def test_watch_mode_picks_up_a_commit_on_a_local_repository(setup, make_daemon):
    setup.commit_versions({"web": {"shop": "1.0.0"}, "worker": {"jobs": "3.0.0"}}, "initial")
    daemon = make_daemon(source={"poll_interval": "1h", "watch": True})
    daemon.start()
    daemon.wait_converged("1.0.0", "the initial convergence")
    assert [e for e in daemon.events() if e.get("event") == "watching"]
    sha = setup.commit_versions(BUMP, "bump both")
    wait_for(lambda: daemon.converged("1.1.0", "3.1.0"), 120, "the watcher to deploy the bump")
    assert daemon.status()["source"]["valid_commit"] == sha
