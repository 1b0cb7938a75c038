"""The Git source against real repositories: clone, fetch, exact-commit snapshots, errors."""

from __future__ import annotations

import fcntl
import multiprocessing
import shutil
import time
from pathlib import Path

import pytest

from reconciler.edges.git import SourceError, UnsafeTreeError, reader
from reconciler.edges.git.reader import GitSource
from reconciler.errors import PermanentError, TemporaryError
from reconciler.support.redaction import redact


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


def test_unsafe_tree_and_source_errors_are_told_apart_by_class():
    assert issubclass(UnsafeTreeError, PermanentError)
    assert issubclass(SourceError, TemporaryError)
    assert not issubclass(UnsafeTreeError, SourceError)
    assert not issubclass(SourceError, UnsafeTreeError)


def test_credentials_are_redacted(tmp_path):
    assert redact("https://user:s3cret@git.example/x.git") == "https://***@git.example/x.git"
    # The error the reader raises itself: the URL's credentials were taken out before git ran.
    source = GitSource("https://tok:s3cret@127.0.0.1:9/r.git", "main", tmp_path / "cache")
    with pytest.raises(SourceError, match="cannot clone") as caught:
        source.fetch()
    assert "s3cret" not in str(caught.value) and "https://127.0.0.1:9/r.git" in str(caught.value)
    # A secret that cannot be taken out of the URL is refused before anything runs.
    with pytest.raises(ValueError, match="cannot be separated") as refused:
        GitSource("https://127.0.0.1:9/r.git?private_token=s3cret", "main", tmp_path / "c2")
    assert "s3cret" not in str(refused.value) and "***" in str(refused.value)


def _fetch_in_a_process(url: str, cache: str, barrier, results, rounds: int) -> None:
    """One ``reconciler diff``-like process: fetch a few times and snapshot the tip."""
    try:
        source = GitSource(url, "main", Path(cache))
        barrier.wait(timeout=60)
        shas = [source.fetch().sha for _ in range(rounds)]
        snapshot = source.snapshot(shas[-1])
        results.put(("ok", shas, (snapshot / "a.txt").read_text()))
    except Exception as exc:
        results.put(("error", repr(exc), ""))


def _fetch_concurrently(url: str, cache: Path, processes: int = 4, rounds: int = 3) -> list:
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(processes)
    results = context.Queue()
    workers = [
        context.Process(
            target=_fetch_in_a_process, args=(url, str(cache), barrier, results, rounds)
        )
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
        assert worker.exitcode == 0
    return outcomes


def test_concurrent_processes_sharing_one_cache_all_succeed(git_remote, tmp_path):
    """Several processes (the daemon, ``reconciler diff``...) clone and fetch one cache at once.

    Without the cache's flock they fail on git's own locks (``cannot lock ref``) or race on the
    clone's rename; with it they queue, and every one of them sees the new tip.
    """
    first = git_remote.commit("first", {"a.txt": "1"})
    cache = tmp_path / "cache"
    outcomes = _fetch_concurrently(git_remote.url, cache)  # concurrent first clones
    assert outcomes == [("ok", [first] * 3, "1")] * 4
    second = git_remote.commit("second", {"a.txt": "2"})
    outcomes = _fetch_concurrently(git_remote.url, cache)  # concurrent fetches of a new tip
    assert outcomes == [("ok", [second] * 3, "2")] * 4
    assert GitSource(git_remote.url, "main", cache).last_fetched().sha == second


def test_waiting_for_another_process_counts_against_the_fetch_time(
    git_remote, tmp_path, monkeypatch
):
    """The daemon's main loop fetches: a cache locked by a stuck process costs it at most one
    fetch's time (the systemd watchdog allows that much), then a ``SourceError``."""
    monkeypatch.setattr(reader, "FETCH_TIMEOUT_S", 1.0)
    sha = git_remote.commit("first", {"a.txt": "1"})
    source = GitSource(git_remote.url, "main", tmp_path / "cache")
    source.fetch()
    with (tmp_path / "cache" / "reader.lock").open("a") as other:
        fcntl.flock(other, fcntl.LOCK_EX)  # another process, stuck in its fetch
        started = time.monotonic()
        with pytest.raises(SourceError, match="stayed locked by another process for 1 s"):
            source.fetch()
        assert 1.0 <= time.monotonic() - started < 1.0 + 10.0  # a promptness bound
        with pytest.raises(SourceError, match="stayed locked"):
            source.snapshot(sha)
    assert source.fetch().sha == sha
    assert (source.snapshot(sha) / "a.txt").read_text() == "1"
