"""The source stage on real Git: a commit the Git edge refuses (a nested ``.git``, too many
bytes) is a rejection of that commit, replacing the previous one, never an outage; a hostile
tip leaves the last valid commit in force."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from reconciler.record import StoreUnavailable
from reconciler.service import wiring
from reconciler.settings import Settings
from reconciler.source import facts
from reconciler.source.refresh import DesiredSource
from tests.gitrepo import GitRemote
from tests.hostile.builder import CASES, ENV_FILE, LIMITS, NESTED_GIT, VALID, commit_case
from tests.hostile.test_validate import inventory


class Meta:
    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    def get_meta(self, key: str) -> str | None:
        return self.values.get(key)

    def set_meta(self, key: str, value: str) -> None:
        self.values[key] = value


def _source(tmp_path: Path, meta: Meta) -> tuple[GitRemote, str, DesiredSource, Meta]:
    """A remote with one valid commit, and the daemon's source stage, refreshed once on it."""
    remote = GitRemote(tmp_path / "git")
    inventory(remote.work / "inventories" / "prod.yml")
    valid = remote.commit("valid", {ENV_FILE: VALID})
    settings = Settings(state_dir=tmp_path / "state", source={"url": remote.url}, limits=LIMITS)
    stage = wiring.desired_source(settings, meta, record=True)  # type: ignore[arg-type]
    assert stage.refresh().commit.sha == valid
    return remote, valid, stage, meta


@pytest.fixture
def source(tmp_path: Path) -> tuple[GitRemote, str, DesiredSource, Meta]:
    return _source(tmp_path, Meta())


def _rejected(stage: DesiredSource, meta: Meta, sha: str) -> Any:
    snapshot = stage.refresh()
    assert snapshot.source_error == "", "a hostile commit is not an outage"
    assert snapshot.tip.sha == sha and snapshot.tip_rejected
    known = facts.read(meta)
    assert known.rejected_commit == sha and known.error == "" and known.up
    return snapshot


def test_a_nested_git_path_is_a_problem_of_its_commit_replacing_the_previous_one(source):
    remote, valid, stage, meta = source
    typo = next(c for c in CASES if c.name.startswith("typo"))
    first = commit_case(remote, valid, typo)
    _rejected(stage, meta, first)
    assert any(typo.fragment in p for p in json.loads(meta.values[facts.PROBLEMS]))

    sha = commit_case(remote, valid, NESTED_GIT)
    snapshot = _rejected(stage, meta, sha)
    assert snapshot.commit.sha == valid and snapshot.state is not None, "last valid in force"
    (problem,) = (str(p) for p in snapshot.problems)
    assert problem == (
        f"x/.git/config:1: commit {sha[:12]} is unsafe: 'x/.git/config' has a path component "
        "'.git' (a repository inside the repository is never used)"
    )
    assert json.loads(meta.values[facts.PROBLEMS]) == [problem], "the previous rejection is gone"
    snapshots = stage.reader.snapshots_dir  # type: ignore[attr-defined]
    assert not (snapshots / sha).exists(), "nothing of it was written"


def test_a_commit_over_the_repository_limit_is_refused_before_it_is_extracted(source):
    remote, valid, stage, meta = source
    case = next(c for c in CASES if c.name == "repository size")
    sha = commit_case(remote, valid, case)
    snapshot = _rejected(stage, meta, sha)
    (problem,) = (str(p) for p in snapshot.problems)
    assert problem.startswith(f".:1: commit {sha[:12]} is too large: its files add up to ")
    assert "(limits.max_repository_bytes); the largest: files/blob.bin (1200000 bytes)" in problem
    assert not (stage.reader.snapshots_dir / sha).exists()  # type: ignore[attr-defined]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_every_hostile_tip_is_rejected_with_file_line_and_the_valid_commit_kept(source, case):
    remote, valid, stage, meta = source
    sha = commit_case(remote, valid, case)
    snapshot = _rejected(stage, meta, sha)
    assert snapshot.commit.sha == valid and snapshot.state is not None
    assert any(str(p).startswith(case.where) and case.fragment in str(p) for p in snapshot.problems)
    remote.write({ENV_FILE: VALID.replace("1.0.0", "1.0.1")})
    for name in case.files:
        if name != ENV_FILE:
            remote.git(remote.work, "rm", "-q", name)
    fixed = remote.commit("a later valid commit")
    later = stage.refresh()
    assert later.commit.sha == fixed and not later.problems
    assert facts.read(meta).rejected_commit is None


class FlakyMeta(Meta):
    """The store's meta table, unavailable while ``down`` (as a PostgreSQL outage is)."""

    down = False

    def get_meta(self, key: str) -> str | None:
        if self.down:
            raise StoreUnavailable("state store unavailable: connection refused")
        return super().get_meta(key)

    def set_meta(self, key: str, value: str) -> None:
        if self.down:
            raise StoreUnavailable("state store unavailable: connection refused")
        super().set_meta(key, value)


def test_a_store_outage_keeps_the_snapshot_and_is_no_source_error(tmp_path: Path):
    """The daemon backs off fetching on a source error; a store outage must not read as one."""
    meta = FlakyMeta()
    remote, valid, stage, _ = _source(tmp_path, meta)

    meta.down = True
    remote.commit("a later valid commit", {ENV_FILE: VALID.replace("1.0.0", "1.0.1")})
    with capture_logs() as logs:
        during = stage.refresh()
    assert during.store_error == "state store unavailable: connection refused"
    assert during.source_error == "", "a store outage is not the source's failure"
    assert during.commit.sha == valid and during.state is not None, "the snapshot is kept"
    events = [entry["event"] for entry in logs]
    assert "refresh_store_unavailable" in events and "refresh_failed" not in events

    meta.down = False
    after = stage.refresh()
    assert after.store_error == "" and after.commit.sha != valid
