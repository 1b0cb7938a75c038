"""A real bare Git remote in a temp dir with a work clone that commits and pushes to it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test Developer",
    "GIT_AUTHOR_EMAIL": "dev@example.invalid",
    "GIT_COMMITTER_NAME": "Test Developer",
    "GIT_COMMITTER_EMAIL": "dev@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
}


class GitRemote:
    def __init__(self, base: Path, branch: str = "main") -> None:
        self.branch = branch
        base.mkdir(parents=True, exist_ok=True)
        self.bare = base / "remote.git"
        self.work = base / "work"
        self.git(base, "init", "--quiet", "--bare", f"--initial-branch={branch}", str(self.bare))
        self.git(base, "init", "--quiet", f"--initial-branch={branch}", str(self.work))
        self.git(self.work, "remote", "add", "origin", str(self.bare))

    @staticmethod
    def git(cwd: Path, *args: str) -> str:
        return subprocess.run(
            ["git", *args],
            cwd=cwd,
            env={**os.environ, **GIT_ENV},
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()

    @property
    def url(self) -> str:
        return str(self.bare)

    def copy_tree(self, source: Path) -> None:
        shutil.copytree(source, self.work, dirs_exist_ok=True)

    def write(self, files: dict[str, str]) -> None:
        for name, text in files.items():
            path = self.work / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)

    def commit(self, message: str, files: dict[str, str] | None = None, push: bool = True) -> str:
        if files:
            self.write(files)
        self.git(self.work, "add", "-A")
        self.git(self.work, "commit", "--quiet", "--allow-empty", "-m", message)
        if push:
            self.push()
        return self.head()

    def push(self) -> None:
        self.git(self.work, "push", "--quiet", "origin", f"HEAD:{self.branch}")

    def head(self) -> str:
        return self.git(self.work, "rev-parse", "HEAD")

    def remote_head(self) -> str:
        return self.git(self.bare, "rev-parse", self.branch)
