"""``reconciler validate`` on each hostile repository: exit 1 with its ``file:line`` problem,
run under an address-space limit (``RLIMIT_AS``): the assertion is that it succeeds within the
limit, not that it is fast. Before the limits existed the alias bomb alone took gigabytes."""

from __future__ import annotations

import os
import resource
import subprocess
from pathlib import Path

import pytest

from reconciler.testing.fleet import write_inventory
from tests.end_to_end.conftest import RECONCILER
from tests.gitrepo import GitRemote
from tests.hostile.builder import (
    CASES,
    ENV_FILE,
    LIMITS_ENV,
    NESTED_GIT,
    VALID,
    Case,
    commit_case,
    write_repository,
)

MEMORY_LIMIT = 512 * 2**20  # bytes of address space for the whole `reconciler validate`
GROUPS = {"web": ["web-01", "web-02"], "worker": ["worker-01"]}


def inventory(path: Path) -> None:
    write_inventory(path, GROUPS, {})


def _bounded() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def validate(repo: Path) -> tuple[int, str, int]:
    """Exit code, output (stdout and stderr) and peak RSS (KiB) of a bounded `validate`."""
    process = subprocess.Popen(
        [RECONCILER, "validate", str(repo)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, **LIMITS_ENV, "COLUMNS": "2000"},
        preexec_fn=_bounded,
    )
    assert process.stdout is not None
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return process.returncode, output.decode("utf-8", "replace"), usage.ru_maxrss


def test_the_valid_repository_passes_under_the_same_limit(tmp_path):
    code, output, _ = validate(write_repository(tmp_path, Case("valid", {}, "", 0, ""), inventory))
    assert code == 0, output
    assert "ok: 1 environment(s), 2 group(s), 3 host(s)" in output


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_validate_rejects_it_with_file_line_within_bounded_memory(tmp_path, case):
    code, output, peak_kib = validate(write_repository(tmp_path, case, inventory))
    assert code == 1, output[-3000:]
    lines = [line for line in output.splitlines() if line.startswith(case.where)]
    assert lines, f"no {case.where} problem in:\n{output[-3000:]}"
    assert any(case.fragment in line for line in lines), lines
    assert "Traceback" not in output
    assert "nothing would be deployed" in output
    for text in case.absent:
        assert text not in output
    assert all(len(line) < 800 for line in output.splitlines()), "problems are length-capped"
    assert peak_kib * 1024 < MEMORY_LIMIT


def test_a_nested_git_path_never_reaches_a_work_tree(tmp_path):
    """`validate` reads work trees; git itself refuses to check out ``x/.git/config`` (so CI
    fails before `validate` runs). The daemon reads commits: tests/hostile/test_daemon.py."""
    remote = GitRemote(tmp_path / "git")
    inventory(remote.work / "inventories" / "prod.yml")
    valid = remote.commit("valid", {ENV_FILE: VALID})
    sha = commit_case(remote, valid, NESTED_GIT)
    clone = subprocess.run(
        ["git", "clone", "--quiet", remote.url, str(tmp_path / "clone")],
        capture_output=True,
        text=True,
    )
    assert clone.returncode != 0 and "invalid path 'x/.git/config'" in clone.stderr
    assert GitRemote.git(remote.bare, "ls-tree", "-r", "--name-only", sha).count("x/.git/config")
    assert not (tmp_path / "clone" / "x" / ".git" / "config").exists()
