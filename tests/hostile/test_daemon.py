"""One running daemon against the hostile commits in sequence, then restarted on a poisoned tip.

For each commit: the status shows it rejected with its ``file:line`` problem (and only its own),
``reconciler_source_tip_valid 0``, one ``commit_rejected`` event, the last valid commit stays in
force and is still reconciled, the fleet keeps its versions, and the daemon's peak memory stays
bounded (``VmHWM``: the alias bomb used to take gigabytes). A restart on a poisoned tip becomes
ready and reports it; a later valid commit is picked up and deployed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.daemon.conftest import RunningDaemon, wait_for
from tests.hostile.builder import CASES, LIMITS, NESTED_GIT, V1, Case, commit_case

V2 = {"web": {"shop": "1.1.0"}, "worker": {"jobs": "3.0.0"}}
PEAK_RSS_LIMIT = 600 * 2**20  # the daemon process (its playbook runs are other processes)
TIP_INVALID = "reconciler_source_tip_valid 0.0"


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def rejections(daemon: RunningDaemon, sha: str) -> list[dict[str, Any]]:
    events = daemon.events()
    return [e for e in events if e.get("event") == "commit_rejected" and e["commit"] == sha]


def assert_rejected(
    daemon: RunningDaemon, case: Case, sha: str, valid: str, previous: Case | None = None
) -> None:
    source = daemon.status()["source"]
    assert source["valid_commit"] == valid, "the last valid commit stays in force"
    assert source["rejected_commit"] == sha and source["up"] and not source["error"]
    problems = source["problems"]
    assert any(p.startswith(case.where) and case.fragment in p for p in problems), problems
    assert all(p.startswith(f"{case.file}:") for p in problems), problems
    if previous is not None:  # the previous rejection is not shown any more
        assert not any(previous.fragment in p for p in problems), problems
    for problem in problems:
        assert len(problem) < 800 and "\x1b" not in problem and "\x07" not in problem
        assert not any(text in problem for text in case.absent)
    metrics = daemon.get("/metrics").text
    assert TIP_INVALID in metrics and "reconciler_source_up 1.0" in metrics
    assert daemon.get("/healthz").status_code == 200


def test_hostile_commits_are_rejected_and_a_restart_on_one_starts_and_reports_it(
    setup, make_daemon, tmp_path
):
    valid = setup.commit_versions(V1, "initial")
    daemon = make_daemon(limits=LIMITS).start()
    daemon.wait_converged("1.0.0", "the initial convergence")
    probe = tmp_path / "probe"

    previous: Case | None = None
    for case in [*CASES, NESTED_GIT]:
        sha = commit_case(setup.remote, valid, case, probe=probe)
        response = daemon.post("/api/v1/sync", {"wait": True, "timeout": 120})
        assert response.status_code == 202, response.text
        finished = response.json()["finished"]["prod"]
        assert finished and finished["result"] == "in_sync", "the valid commit still reconciles"
        assert_rejected(daemon, case, sha, valid, previous)
        previous = case
        (event,) = rejections(daemon, sha)
        assert any(p.startswith(case.where) for p in event["problems"]), event
        assert set(daemon.served().values()) == {"1.0.0", "3.0.0"}
        assert peak_rss(daemon.proc.pid) < PEAK_RSS_LIMIT, f"{case.name}: memory"
    assert not probe.exists(), "nothing ran inside the nested .git"

    # A restart on the poisoned tip (the nested .git, then the alias bomb) starts and reports it.
    for case in (NESTED_GIT, CASES[0]):
        sha = (
            setup.remote.remote_head()
            if case is NESTED_GIT
            else commit_case(setup.remote, valid, case)
        )
        assert daemon.stop() == 0
        daemon.start()  # waits for /readyz 200
        assert_rejected(daemon, case, sha, valid)
        assert daemon.status()["daemon"]["ready"]
        assert peak_rss(daemon.proc.pid) < PEAK_RSS_LIMIT
    assert "Traceback" not in daemon.log_tail(10**7)

    # A later valid commit is picked up and deployed.
    later = setup.commit_versions(V2, "a valid bump after the hostile ones")
    daemon.github_push()
    wait_for(lambda: daemon.converged("1.1.0"), 120, "the later valid commit to deploy")
    source = daemon.status()["source"]
    assert source["valid_commit"] == later and not source["problems"]
    assert "reconciler_source_tip_valid 1.0" in daemon.get("/metrics").text
