"""Fixtures shared by every tier: real Git remotes, settings in temp dirs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.gitrepo import GitRemote

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = REPO_ROOT / "desired-state-example"


@pytest.fixture
def git_remote(tmp_path: Path) -> GitRemote:
    return GitRemote(tmp_path / "git")
