"""The Git source against real repositories: clone, fetch, exact-commit snapshots, errors."""

from __future__ import annotations

import shutil

import pytest

from reconciler.edges.git.reader import GitSource, SourceError, UnsafeTreeError, redact


def test_clone_then_fetch_follows_the_branch(git_remote, tmp_path):
    first = git_remote.commit("first", {"a.txt": "1"})
    source = GitSource(git_remote.url, "main", tmp_path / "cache")
    info = source.fetch()
    assert info.sha == first
    assert (info.author, info.author_email, info.subject) == (
        "Test Developer",
        "dev@example.invalid",
        "first",
    )
    second = git_remote.commit("second\n\nbody", {"a.txt": "2"})
    info = source.fetch()
    assert info.sha == second and info.message == "second\n\nbody"


def test_snapshot_is_the_exact_commit_not_a_work_tree(git_remote, tmp_path):
    first = git_remote.commit("first", {"env/x.yaml": "v1"})
    second = git_remote.commit("second", {"env/x.yaml": "v2"})
    source = GitSource(git_remote.url, "main", tmp_path / "cache")
    source.fetch()
    assert (source.snapshot(first) / "env/x.yaml").read_text() == "v1"
    assert (source.snapshot(second) / "env/x.yaml").read_text() == "v2"
    git_remote.write({"env/x.yaml": "dirty, uncommitted"})
    assert (source.snapshot(second) / "env/x.yaml").read_text() == "v2"


def test_changed_paths(git_remote, tmp_path):
    git_remote.commit("first", {"a": "1", "b": "1"})
    sha = git_remote.commit("second", {"b": "2", "c/d": "3"})
    source = GitSource(git_remote.url, "main", tmp_path / "cache")
    source.fetch()
    assert source.changed_paths(sha) == ("b", "c/d")


def test_missing_remote_is_a_source_error_and_recovers(git_remote, tmp_path):
    sha = git_remote.commit("first", {"a": "1"})
    source = GitSource(git_remote.url, "main", tmp_path / "cache")
    source.fetch()
    moved = tmp_path / "moved.git"
    shutil.move(git_remote.bare, moved)
    with pytest.raises(SourceError, match="cannot fetch"):
        source.fetch()
    shutil.move(moved, git_remote.bare)
    assert source.fetch().sha == sha


def test_clone_of_missing_branch_fails_cleanly(git_remote, tmp_path):
    git_remote.commit("first", {"a": "1"})
    source = GitSource(git_remote.url, "release", tmp_path / "cache")
    with pytest.raises(SourceError, match="cannot clone"):
        source.fetch()
    assert not (tmp_path / "cache" / "checkout").exists()


def test_symlink_outside_the_repo_is_refused_in_snapshots(git_remote, tmp_path):
    (git_remote.work / "inv").mkdir()
    (git_remote.work / "inv" / "evil").symlink_to("/etc/passwd")
    sha = git_remote.commit("link", {"a": "1"})
    source = GitSource(git_remote.url, "main", tmp_path / "cache")
    source.fetch()
    with pytest.raises(UnsafeTreeError, match="must stay inside"):
        source.snapshot(sha)
    assert not (source.snapshots_dir / sha).exists()


def test_prune_keeps_recent_and_pinned(git_remote, tmp_path):
    source = GitSource(git_remote.url, "main", tmp_path / "cache", keep_snapshots=2)
    shas = [git_remote.commit(f"c{i}", {"a": str(i)}) for i in range(4)]
    source.fetch()
    for sha in shas:
        source.snapshot(sha)
    source.prune_snapshots(keep={shas[0]})
    left = {p.name for p in source.snapshots_dir.iterdir()}
    assert shas[0] in left and shas[3] in left and shas[1] not in left


def test_credentials_are_redacted():
    assert redact("https://user:s3cret@git.example/x.git") == "https://***@git.example/x.git"
    assert "s3cret" not in str(SourceError(redact("https://tok:s3cret@h/r")))
