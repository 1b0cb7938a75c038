"""Hostile desired-state commits: what a careless committer or an attacker could push.

Each ``Case`` is a set of files written over a valid repository (``environments/prod.yaml``
with groups ``web`` and ``worker``, inventory ``inventories/prod.yml``) and the ``file:line``
problem it must be rejected with. ``NESTED_GIT`` cannot be written to a work tree (git refuses to
check it out): ``commit_nested_git`` builds that commit with plumbing.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tests.end_to_end.conftest import environment_yaml
from tests.gitrepo import GIT_ENV, GitRemote

V1 = {"web": {"shop": "1.0.0"}, "worker": {"jobs": "3.0.0"}}
ENV_FILE = "environments/prod.yaml"
VALID = environment_yaml(V1)
VALID_LINES = VALID.count("\n")
# The limits every test of this suite runs with (the operator's ``limits`` section), small
# enough to be crossed cheaply; tests/hostile/test_reading.py checks the defaults.
LIMITS = {"max_file_bytes": 262_144, "max_repository_bytes": 1_048_576}
LIMITS_ENV = {f"RECONCILER_LIMITS__{key.upper()}": str(value) for key, value in LIMITS.items()}


@dataclass(frozen=True)
class Case:
    name: str
    files: Mapping[str, bytes]  # written over the valid repository
    file: str  # where the problem is reported
    line: int  # and on which line
    fragment: str  # a piece of its message
    absent: tuple[str, ...] = field(default=())  # never in the output (raw escapes...)

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}:"


def _env(extra: str) -> bytes:
    return (VALID + extra).encode()


def alias_bomb() -> bytes:
    """~650 bytes of YAML that expand to 9**10 (3.4 billion) strings when aliases are followed."""
    lines = ['bomb0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, 10):
        refs = ", ".join([f"*a{level - 1}"] * 9)
        lines.append(f"bomb{level}: &a{level} [{refs}]")
    return _env("\n".join(lines) + "\n")


def _cases() -> list[Case]:
    after = VALID_LINES + 1  # the first line after the valid document
    version_line = VALID.splitlines().index('      shop: "1.0.0"') + 1
    return [
        Case("alias bomb", {ENV_FILE: alias_bomb()}, ENV_FILE, after, "anchor &a0"),
        Case(
            "deep nesting",
            {ENV_FILE: _env("deep: " + "[" * 5000 + "]" * 5000 + "\n")},
            ENV_FILE,
            after,
            "nested more than 32 levels deep (limits.max_depth)",
        ),
        Case(
            "NUL byte",
            {ENV_FILE: VALID.replace('shop: "1.0.0"', 'shop: "1.0.\x000"').encode()},
            ENV_FILE,
            version_line,
            "a NUL byte",
        ),
        Case(
            "huge file",
            {ENV_FILE: _env("# padding\n" * 50_000)},
            ENV_FILE,
            1,
            "(limits.max_file_bytes)",
        ),
        Case(
            "non-UTF-8",
            {ENV_FILE: _env("# caf\xe9 au lait\n").replace(b"caf\xc3\xa9", b"caf\xe9")},
            ENV_FILE,
            after,
            "not UTF-8 text: byte 0xe9",
        ),
        Case(
            "repository size",
            {"files/blob.bin": os.urandom(1_200_000)},
            ".",
            1,
            "(limits.max_repository_bytes)",
        ),
        Case(
            "escape sequences and a 100,000-character key",
            {ENV_FILE: _env('? "\\e]0;pwned\\a\\e[2J' + "k" * 100_000 + '"\n: 1\n')},
            ENV_FILE,
            after,
            "unknown key '\\x1b]0;pwned\\x07\\x1b[2Jkkk",
            absent=("\x1b", "\x07", "k" * 1000),
        ),
        Case(
            "typo'd key (control)",
            {ENV_FILE: VALID.replace("    apps:\n", "    aps:\n", 1).encode()},
            ENV_FILE,
            VALID.splitlines().index("    apps:") + 1,
            "unknown key 'aps' (did you mean 'apps'?)",
        ),
    ]


CASES = _cases()
NESTED_GIT = Case("nested .git", {}, "x/.git/config", 1, "has a path component '.git'")


def write_repository(root: Path, case: Case, inventory: Callable[[Path], object]) -> Path:
    """A work tree: the valid repository (``inventory`` writes its inventory file) + ``case``."""
    inventory(root / "inventories" / "prod.yml")
    (root / "environments").mkdir(parents=True, exist_ok=True)
    (root / ENV_FILE).write_text(VALID)
    for name, data in case.files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def _git(cwd: Path, *args: str, data: bytes | None = None) -> str:
    return subprocess.run(
        ["git", *args],
        cwd=cwd,
        input=data,
        env={**os.environ, **GIT_ENV},
        check=True,
        capture_output=True,
    ).stdout.decode()


def commit_case(remote: GitRemote, valid_sha: str, case: Case, probe: Path | None = None) -> str:
    """Push the valid tree plus ``case`` on top of the remote's branch; its sha. ``probe``: a
    file that the nested ``.git/config`` would create if git ever ran inside it."""
    tip = remote.remote_head()
    _git(remote.work, "reset", "--quiet", "--hard", valid_sha)
    _git(remote.work, "reset", "--quiet", "--soft", tip)
    if case is NESTED_GIT:
        return commit_nested_git(remote, probe)
    for name, data in case.files.items():
        path = remote.work / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return remote.commit(f"hostile: {case.name}")


def commit_nested_git(remote: GitRemote, probe: Path | None = None) -> str:
    """Push a commit adding ``x/.git/config`` to the index's tree (plumbing: porcelain and
    checkouts refuse such a path); the config runs ``touch probe`` in any git command there."""
    work = remote.work
    config = f"[core]\n\tfsmonitor = touch {probe or '/dev/null'}\n".encode()
    blob = _git(work, "hash-object", "-w", "--stdin", data=config).strip()
    dot_git = _git(work, "mktree", data=f"100644 blob {blob}\tconfig\n".encode()).strip()
    x = _git(work, "mktree", data=f"040000 tree {dot_git}\t.git\n".encode()).strip()
    base = _git(work, "write-tree").strip()
    entries = _git(work, "ls-tree", base) + f"040000 tree {x}\tx\n"
    root = _git(work, "mktree", data=entries.encode()).strip()
    sha = _git(work, "commit-tree", root, "-p", "HEAD", "-m", "hostile: nested .git").strip()
    _git(work, "update-ref", "HEAD", sha)
    remote.push()
    return sha
