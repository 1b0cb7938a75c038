"""Revert commits after a rollback, against a real bare remote with real pushes and races."""

from __future__ import annotations

import shutil
import subprocess

import git
import pytest

from reconciler.desired.edits import group_versions
from reconciler.desired.messages import RevertRequest, operator_rollback_message, revert_message
from reconciler.edges.git import changes
from reconciler.edges.git.writer import WriteBack
from reconciler.support.backoff import Backoff
from tests.gitrepo import GitRemote

ENV_FILE = "environments/production.yaml"
BASE = """\
# Production.
environment: production
inventory: inventories/production.yml
groups:
  web:
    apps:
      shop: "1.0.0"   # storefront
  worker:
    after: [web]
    apps:
      shop-worker: "1.0.0"
"""
WEB_BUMPED = BASE.replace('shop: "1.0.0"', 'shop: "2.0.0"')
BOTH_BUMPED = WEB_BUMPED.replace('shop-worker: "1.0.0"', 'shop-worker: "2.0.0"')
REASON = "gate http http://user:s3cret@127.0.0.1:8080/healthz failed on web-03: status 500"


@pytest.fixture(autouse=True)
def no_user_git_config(monkeypatch, tmp_path):
    """The daemon's commits must not depend on anyone's ~/.gitconfig."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", "/dev/null")
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for name in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "EMAIL"):
        monkeypatch.delenv(name, raising=False)


def _source(remote: GitRemote, tmp_path, **kwargs) -> WriteBack:
    """The writer as the daemon builds it, without waits between push attempts."""
    return WriteBack(
        remote.url,
        "main",
        tmp_path / "cache",
        author_name="Reconciler Bot",
        author_email="bot@reconciler.invalid",
        **{"retry": Backoff(0, 0), **kwargs},
    )


def _request(offending: str, **overrides) -> RevertRequest:
    fields = {
        "environment": "production",
        "group": "web",
        "env_file": ENV_FILE,
        "offending_sha": offending,
        "failed_versions": {"shop": "2.0.0"},
        "restore_versions": {"shop": "1.0.0"},
        "reason": REASON,
        "rollout_id": "r-42",
    }
    return RevertRequest(**{**fields, **overrides})


def _git(remote: GitRemote, *args: str) -> str:
    return GitRemote.git(remote.bare, *args)


def _remote_file(remote: GitRemote, rev: str = "main") -> str:
    return _git(remote, "show", f"{rev}:{ENV_FILE}") + "\n"


def _other_push(remote: GitRemote, files: dict[str, str | None], message: str) -> str:
    """Another engineer pushes from their own clone (the GitRemote work tree)."""
    GitRemote.git(remote.work, "pull", "--quiet", "--ff-only", "origin", "main")
    for name, text in files.items():
        if text is None:
            GitRemote.git(remote.work, "rm", "--quiet", name)
        else:
            remote.write({name: text})
    return remote.commit(message)


@pytest.fixture
def bumped(git_remote):
    """Base commit, then an offending commit that bumps only web's shop to 2.0.0."""
    git_remote.commit("base", {ENV_FILE: BASE, "README.md": "hi\n"})
    return git_remote.commit("Bump shop to 2.0.0", {ENV_FILE: WEB_BUMPED})


def test_true_revert_of_a_commit_that_only_changed_this_group(git_remote, bumped, tmp_path):
    source = _source(git_remote, tmp_path)
    result = source.revert_rollout(_request(bumped))
    assert (result.status, result.kind, result.attempts) == ("pushed", "revert", 1)
    assert result.sha == git_remote.remote_head()
    assert _git(git_remote, "rev-parse", "main^") == bumped
    assert _git(git_remote, "rev-parse", "main^{tree}") == _git(
        git_remote, "rev-parse", f"{bumped}^^{{tree}}"
    )
    message = _git(git_remote, "log", "-1", "--format=%B", "main")
    assert message.startswith("Revert production/web to shop 1.0.0 (rollout r-42 failed)")
    assert f"This reverts commit {bumped}." in message
    trailers = _git(git_remote, "log", "-1", "--format=%(trailers:only,unfold)", "main")
    assert f"Reverts: {bumped}" in trailers and "Reconciler-Rollout: r-42" in trailers
    assert "s3cret" not in message and "status 500" in message
    ident = _git(git_remote, "log", "-1", "--format=%an <%ae>|%cn <%ce>", "main")
    assert (
        ident == "Reconciler Bot <bot@reconciler.invalid>|Reconciler Bot <bot@reconciler.invalid>"
    )
    assert bumped[:12] in result.detail and "pushed" in result.detail


def test_true_revert_lands_on_a_later_unrelated_commit(git_remote, bumped, tmp_path):
    later = git_remote.commit("docs", {"README.md": "more\n"})
    result = _source(git_remote, tmp_path).revert_rollout(_request(bumped))
    assert (result.status, result.kind) == ("pushed", "revert")
    assert _git(git_remote, "rev-parse", "main^") == later
    assert _remote_file(git_remote) == BASE
    assert _git(git_remote, "show", "main:README.md") == "more"


def test_multi_change_commit_gets_a_targeted_commit(git_remote, tmp_path):
    git_remote.commit("base", {ENV_FILE: BASE})
    offending = git_remote.commit("Bump web and worker", {ENV_FILE: BOTH_BUMPED})
    result = _source(git_remote, tmp_path).revert_rollout(_request(offending))
    assert (result.status, result.kind) == ("pushed", "targeted")
    text = _remote_file(git_remote)
    assert text == BOTH_BUMPED.replace('shop: "2.0.0"', 'shop: "1.0.0"')
    assert group_versions(text, "worker") == {"shop-worker": "2.0.0"}
    message = _git(git_remote, "log", "-1", "--format=%B", "main")
    for needle in ("production/web", "environment production", "shop: 2.0.0 -> 1.0.0"):
        assert needle in message
    assert "web-03: status 500" in message and "rollout r-42" in message
    assert "This reverts commit" not in message
    trailers = _git(git_remote, "log", "-1", "--format=%(trailers:only,unfold)", "main")
    assert f"Reverts: {offending}" in trailers and "Reconciler-Rollout: r-42" in trailers


def test_commit_that_also_edits_another_file_gets_a_targeted_commit(git_remote, tmp_path):
    git_remote.commit("base", {ENV_FILE: BASE, "README.md": "hi\n"})
    offending = git_remote.commit("Bump + docs", {ENV_FILE: WEB_BUMPED, "README.md": "bump\n"})
    result = _source(git_remote, tmp_path).revert_rollout(_request(offending))
    assert (result.status, result.kind) == ("pushed", "targeted")
    assert _remote_file(git_remote) == BASE
    assert _git(git_remote, "show", "main:README.md") == "bump"


def test_true_revert_conflict_falls_back_to_targeted(git_remote, bumped, tmp_path):
    # A later commit edits the line next to the version: `git revert` conflicts.
    later = WEB_BUMPED.replace("# storefront", "# storefront, now with search")
    git_remote.commit("comment", {ENV_FILE: later})
    result = _source(git_remote, tmp_path).revert_rollout(_request(bumped))
    assert (result.status, result.kind) == ("pushed", "targeted")
    assert _remote_file(git_remote) == later.replace('shop: "2.0.0"', 'shop: "1.0.0"')


def test_push_race_is_retried_on_the_new_tip(git_remote, bumped, tmp_path):
    source = _source(git_remote, tmp_path, retry=Backoff(0.01, 5.0, jitter=0.5))
    pushed: list[str] = []

    def someone_pushes(attempt: int) -> None:
        if attempt == 1:
            pushed.append(_other_push(git_remote, {"README.md": "race\n"}, "unrelated"))

    source._before_push = someone_pushes
    result = source.revert_rollout(_request(bumped))
    assert (result.status, result.kind, result.attempts) == ("pushed", "revert", 2)
    log = _git(git_remote, "log", "--format=%H %s", "main").splitlines()
    assert log[0].startswith(f"{result.sha} Revert production/web")
    assert log[1] == f"{pushed[0]} unrelated"
    assert log[2].startswith(bumped)
    assert _remote_file(git_remote) == BASE
    assert _git(git_remote, "show", "main:README.md") == "race"


def test_race_that_already_restored_the_versions_is_a_noop(git_remote, bumped, tmp_path):
    source = _source(git_remote, tmp_path)
    other: list[str] = []
    source._before_push = lambda attempt: other.append(
        _other_push(git_remote, {ENV_FILE: BASE}, "manual revert")
    )
    result = source.revert_rollout(_request(bumped))
    assert (result.status, result.sha, result.attempts) == ("noop", None, 2)
    assert git_remote.remote_head() == other[0]
    assert "already at shop 1.0.0" in result.detail


def test_app_moved_to_a_third_version_is_left_alone(git_remote, bumped, tmp_path):
    moved = git_remote.commit("fix", {ENV_FILE: BASE.replace('shop: "1.0.0"', 'shop: "2.0.1"')})
    result = _source(git_remote, tmp_path).revert_rollout(_request(bumped))
    assert (result.status, result.kind) == ("noop", "targeted")
    assert git_remote.remote_head() == moved
    assert "shop 2.0.1" in result.detail


def test_env_file_deleted_meanwhile_is_a_conflict_and_git_is_left_alone(
    git_remote, bumped, tmp_path
):
    source = _source(git_remote, tmp_path)
    other: list[str] = []

    def delete(attempt: int) -> None:
        if attempt == 1:
            other.append(_other_push(git_remote, {ENV_FILE: None}, "drop production"))

    source._before_push = delete
    result = source.revert_rollout(_request(bumped))
    assert (result.status, result.sha, result.attempts) == ("conflict", None, 2)
    assert git_remote.remote_head() == other[0]
    assert ENV_FILE in result.detail and "Git left alone" in result.detail


def test_endless_race_gives_up_as_a_conflict(git_remote, bumped, tmp_path):
    source = _source(git_remote, tmp_path, max_attempts=3)
    source._before_push = lambda attempt: _other_push(
        git_remote, {"README.md": f"race {attempt}\n"}, f"race {attempt}"
    )
    result = source.revert_rollout(_request(bumped))
    assert (result.status, result.attempts) == ("conflict", 3)
    assert "still rejected after 3 attempts" in result.detail
    assert _git(git_remote, "log", "-1", "--format=%s", "main") == "race 3"


def test_push_disabled_touches_nothing(git_remote, bumped, tmp_path):
    source = _source(git_remote, tmp_path, push_enabled=False)
    result = source.revert_rollout(_request(bumped))
    assert (result.status, result.sha, result.attempts) == ("disabled", None, 0)
    assert "pending a human" in result.detail
    assert git_remote.remote_head() == bumped
    assert not (tmp_path / "cache").exists()


def test_remote_gone_is_an_error_not_an_exception(git_remote, bumped, tmp_path):
    source = _source(git_remote, tmp_path)
    moved = tmp_path / "moved.git"
    shutil.move(git_remote.bare, moved)
    result = source.revert_rollout(_request(bumped))  # before the writer's first clone
    assert (result.status, result.sha) == ("error", None)
    assert "cannot clone" in result.detail and str(git_remote.bare) in result.detail
    assert not (tmp_path / "cache" / "writer").exists()
    shutil.move(moved, git_remote.bare)
    noop = source.commit_group_versions(
        env_file=ENV_FILE, group="web", versions={"shop": "2.0.0"}, message="unused"
    )
    assert noop.status == "noop"  # the writer has its clone now
    shutil.rmtree(git_remote.bare)
    result = source.revert_rollout(_request(bumped))
    assert (result.status, result.sha) == ("error", None)
    assert "cannot fetch" in result.detail and str(git_remote.bare) in result.detail


def test_remote_refusing_the_push_is_an_error(git_remote, bumped, tmp_path):
    hook = git_remote.bare / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'protected branch' >&2\nexit 1\n")
    hook.chmod(0o755)
    result = _source(git_remote, tmp_path).revert_rollout(_request(bumped))
    assert (result.status, result.attempts) == ("error", 1)
    assert "protected branch" in result.detail and "cannot push" in result.detail
    assert git_remote.remote_head() == bumped


def test_credentials_never_reach_the_detail(git_remote, bumped, tmp_path):
    source = WriteBack("https://bob:t0ken@127.0.0.1:9/x.git", "main", tmp_path / "cache")
    result = source.revert_rollout(_request(bumped))
    assert result.status == "error"
    assert "t0ken" not in result.detail and "https://127.0.0.1:9/x.git" in result.detail


def test_introducing_commit_finds_the_bump(git_remote, bumped):
    later = git_remote.commit("docs", {"README.md": "more\n"})
    worker = git_remote.commit("worker", {ENV_FILE: BOTH_BUMPED})
    with git.Repo(git_remote.work) as repo:

        def introducing(group: str, failed: dict[str, str], commit: str) -> str:
            return changes.introducing_commit(repo, ENV_FILE, group, failed, commit)

        assert introducing("web", {"shop": "2.0.0"}, worker) == bumped
        assert introducing("web", {"shop": "2.0.0"}, later) == bumped
        assert introducing("worker", {"shop-worker": "2.0.0"}, worker) == worker
        assert introducing("web", {"shop": "9"}, worker) == worker
        assert introducing("web", {"shop": "2.0.0"}, "0" * 40) == "0" * 40  # unknown: as is


def test_revert_walks_back_from_the_commit_in_force_to_the_bump(git_remote, bumped, tmp_path):
    """The rollout passes the commit in force; the writer reverts the commit that set the
    failed versions (a true revert, since that commit changed only web's versions)."""
    git_remote.commit("docs", {"README.md": "more\n"})
    in_force = git_remote.commit("worker", {ENV_FILE: BOTH_BUMPED})
    result = _source(git_remote, tmp_path).revert_rollout(_request(in_force))
    assert (result.status, result.kind) == ("pushed", "revert")
    assert bumped[:12] in result.detail
    trailers = _git(git_remote, "log", "-1", "--format=%(trailers:only,unfold)", "main")
    assert f"Reverts: {bumped}" in trailers
    assert _remote_file(git_remote) == BOTH_BUMPED.replace('shop: "2.0.0"', 'shop: "1.0.0"')


def test_operator_rollback_commit_then_noop(git_remote, bumped, tmp_path):
    source = _source(git_remote, tmp_path)
    message = operator_rollback_message(
        "production", "web", {"shop": "2.0.0"}, {"shop": "1.0.0"}, "alice"
    )
    kwargs = {"env_file": ENV_FILE, "group": "web", "versions": {"shop": "1.0.0"}}
    result = source.commit_group_versions(**kwargs, message=message)
    assert (result.status, result.kind, result.attempts) == ("pushed", "edit", 1)
    assert result.sha == git_remote.remote_head()
    assert _remote_file(git_remote) == BASE
    body = _git(git_remote, "log", "-1", "--format=%B", "main")
    assert body.startswith("Roll back production/web to shop 1.0.0")
    assert "Requested-By: alice" in body and "shop: 2.0.0 -> 1.0.0" in body
    again = source.commit_group_versions(**kwargs, message=message)
    assert (again.status, again.sha) == ("noop", None)
    assert git_remote.remote_head() == result.sha
    missing = source.commit_group_versions(
        env_file=ENV_FILE, group="db", versions={"pg": "16"}, message=message
    )
    assert missing.status == "conflict" and "group 'db'" in missing.detail


def test_revert_message_format():
    req = _request("a" * 40, restore_versions={"shop": "1.0.0", "cart": "3.1"})
    req = RevertRequest(**{**req.__dict__, "failed_versions": {"shop": "2.0.0", "cart": "4"}})
    message = revert_message(req, "targeted")
    lines = message.splitlines()
    assert lines[0] == "Revert production/web to cart 3.1, shop 1.0.0 (rollout r-42 failed)"
    assert lines[-2:] == [f"Reverts: {'a' * 40}", "Reconciler-Rollout: r-42"]
    assert "  cart: 4 -> 3.1" in lines and "  shop: 2.0.0 -> 1.0.0" in lines
    assert "***@127.0.0.1" in message and "s3cret" not in message
    parsed = subprocess.run(
        ["git", "interpret-trailers", "--parse"],
        input=message,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert parsed == f"Reverts: {'a' * 40}\nReconciler-Rollout: r-42\n"
    assert "This reverts commit" in revert_message(req, "revert")
    with pytest.raises(ValueError):
        revert_message(req, "other")  # type: ignore[arg-type]
