"""Git credentials are never written to disk by us, never in argv or git's environment.

The remote is real: ``git http-backend`` behind a loopback HTTP server that requires basic auth
(``tests.git_source.http_git``), fetched by the reader and pushed to by the writer. Every git
process reconciler starts is watched (argv and environment), and the whole cache is searched
for the secret afterwards. A user-level ``credential.helper=store`` is configured, as on a
careless workstation, to prove that git is never given the chance to store the secret.
"""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler.edges.git import SourceError, commands
from reconciler.edges.git.auth import GitAuth, split_credentials
from reconciler.edges.git.reader import GitSource
from reconciler.edges.git.writer import WriteBack
from reconciler.settings import Settings
from reconciler.states import PushStatus
from reconciler.support.backoff import Backoff
from reconciler.support.redaction import redact
from tests.git_source.http_git import GitHttpServer, serving
from tests.git_source.test_revert import BASE, ENV_FILE
from tests.gitrepo import GitRemote

SECRET = "pa ss/w@rd:s3cr3t%"  # every character that breaks naive URL handling
USER = "deploy"


@pytest.fixture(autouse=True)
def careless_user(monkeypatch, tmp_path) -> Path:
    """A HOME whose git config would store every credential it is given."""
    home = tmp_path / "home"
    home.mkdir()
    (home / ".gitconfig").write_text("[credential]\n\thelper = store\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("GIT_CONFIG_GLOBAL", raising=False)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    return home


@pytest.fixture
def launched(monkeypatch) -> list[dict[str, Any]]:
    """argv and environment of every git process the edge starts."""
    seen: list[dict[str, Any]] = []
    real = subprocess.Popen

    def spy(argv, *args, **kwargs):
        seen.append({"argv": list(argv), "env": dict(kwargs.get("env") or os.environ)})
        return real(argv, *args, **kwargs)

    monkeypatch.setattr(commands.subprocess, "Popen", spy)
    return seen


@pytest.fixture
def server(git_remote: GitRemote) -> Iterator[GitHttpServer]:
    git_remote.commit("first", {ENV_FILE: BASE})
    with serving(git_remote.bare.parent, USER, SECRET) as running:
        yield running


def _secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "secrets" / "git-password"
    path.parent.mkdir()
    path.write_text(SECRET + "\n")
    return path


def _assert_nowhere(secret: str, cache: Path, home: Path, launched: list[dict[str, Any]]) -> None:
    assert launched, "no git process was watched"
    for process in launched:
        assert not any(secret in arg for arg in process["argv"]), process["argv"]
        assert not any(secret in value for value in process["env"].values())
    for root in (cache, home):
        for path in root.rglob("*"):
            if path.is_file() and not path.is_symlink():
                assert secret.encode() not in path.read_bytes(), f"the secret is in {path}"
    assert not (home / ".git-credentials").exists(), "the user's credential store got it"


def _origin(checkout: Path) -> str:
    return GitRemote.git(checkout, "config", "--get", "remote.origin.url")


def test_password_file_fetch_and_push_over_real_http(
    server, git_remote, tmp_path, launched, careless_user
):
    url = f"{server.url}/remote.git"
    auth = GitAuth(url, username=USER, password_file=_secret_file(tmp_path))
    cache = tmp_path / "cache"
    assert GitSource(url, "main", cache, auth=auth).fetch().sha == git_remote.remote_head()
    writer = WriteBack(url, "main", cache, auth=auth, retry=Backoff(0, 0))
    pushed = writer.commit_group_versions(
        env_file=ENV_FILE, group="web", versions={"shop": "1.1.0"}, message="bump shop"
    )
    assert pushed.status == PushStatus.PUSHED, pushed.detail
    assert pushed.sha == git_remote.remote_head()
    assert (USER + ":" + SECRET) in {given for _, given in server.seen}
    assert _origin(cache / "checkout") == url and _origin(cache / "writer") == url
    _assert_nowhere(SECRET, cache, careless_user, launched)
    helper_env = launched[0]["env"]
    assert helper_env["RECONCILER_GIT_PASSWORD_FILE"] == str(auth.password_file)


def test_credentials_in_the_url_keep_working_but_never_reach_the_clone(
    server, git_remote, tmp_path, launched, careless_user
):
    quoted = SECRET.replace("%", "%25").replace(" ", "%20").replace("/", "%2F")
    quoted = quoted.replace("@", "%40").replace(":", "%3A")
    with_credentials = server.url.replace("://", f"://{USER}:{quoted}@") + "/remote.git"
    assert split_credentials(with_credentials)[1:] == (USER, SECRET)
    auth = GitAuth(with_credentials)
    assert auth.embedded and auth.url == f"{server.url}/remote.git"
    cache = tmp_path / "cache"
    source = GitSource(with_credentials, "main", cache, auth=auth)
    assert source.fetch().sha == git_remote.remote_head()
    assert _origin(cache / "checkout") == f"{server.url}/remote.git"
    _assert_nowhere(SECRET, cache, careless_user, launched)
    _assert_nowhere(quoted, cache, careless_user, launched)


def test_an_old_clone_with_credentials_in_its_config_is_cleaned(
    server, git_remote, tmp_path, careless_user
):
    with_credentials = server.url.replace("://", f"://{USER}:token123@") + "/remote.git"
    cache = tmp_path / "cache"
    GitRemote.git(tmp_path, "clone", "--quiet", git_remote.url, str(cache / "checkout"))
    GitRemote.git(cache / "checkout", "remote", "set-url", "origin", with_credentials)
    server.password = "token123"
    GitSource(with_credentials, "main", cache).fetch()
    assert "token123" not in (cache / "checkout" / ".git" / "config").read_text()


def test_a_wrong_password_is_a_source_error_without_the_secret(server, tmp_path, launched):
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-password\n")
    url = f"{server.url}/remote.git"
    source = GitSource(url, "main", tmp_path / "cache", auth=GitAuth(url, password_file=wrong))
    with pytest.raises(SourceError) as raised:
        source.fetch()
    assert "not-the-password" not in str(raised.value)
    assert (USER + ":" + SECRET) not in {given for _, given in server.seen}


def test_ssh_deploy_key_and_known_hosts_go_to_ssh_only(git_remote, tmp_path, monkeypatch):
    """A stand-in ``ssh`` on PATH records its argv and runs the remote command locally, as sshd
    would: the clone works through GIT_SSH_COMMAND with exactly our options."""
    sha = git_remote.commit("first", {"a": "1"})
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "ssh-argv"
    fake = bin_dir / "ssh"
    fake.write_text(
        f'#!/bin/sh\nprintf "%s\\n" "$@" > "{record}"\nfor last; do :; done\nexec sh -c "$last"\n'
    )
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    key, known = tmp_path / "deploy key", tmp_path / "known_hosts"
    key.write_text("not a real key\n")
    known.write_text("")
    url = f"ssh://git@git.example.invalid{git_remote.bare}"
    auth = GitAuth(url, ssh_key_file=key, known_hosts_file=known)
    assert GitSource(url, "main", tmp_path / "cache", auth=auth).fetch().sha == sha
    argv = record.read_text().splitlines()
    for option in (
        "BatchMode=yes",
        "StrictHostKeyChecking=yes",
        "IdentitiesOnly=yes",
        f"UserKnownHostsFile={known}",
    ):
        assert option in argv, argv
    assert argv[argv.index("-i") + 1] == str(key)
    assert "git@git.example.invalid" in argv


@pytest.mark.parametrize(
    "url",
    ["https://h/x.git?private_token=abc", "deploy:hunter2@git.example.com:ops/repo.git"],
)
def test_credentials_that_cannot_be_separated_are_refused(url):
    with pytest.raises(ValueError, match="cannot be separated") as raised:
        GitAuth(url)
    assert "abc" not in str(raised.value) and "hunter2" not in str(raised.value)


def test_settings_wire_the_credentials(tmp_path):
    from reconciler.service import wiring

    secret = _secret_file(tmp_path)
    settings = Settings(
        state_dir=tmp_path / "state",
        source={"url": "https://u:tok@git.example.com/x.git", "password_file": str(secret)},
    )
    source = wiring.git_source(settings)
    assert source.url == "https://git.example.com/x.git" and redact(source.url) == source.url
    assert source.auth.password_file == secret and source.auth.username == "u"
    missing = Settings(source={"url": "https://h/x.git", "password_file": str(tmp_path / "no")})
    with pytest.raises(OSError):
        wiring.git_auth(missing)
