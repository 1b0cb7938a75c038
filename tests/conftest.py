"""Fixtures shared by every tier: real Git remotes, settings in temp dirs, PostgreSQL
(``tests.pg``: one server per session, a database per test)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.gitrepo import GitRemote
from tests.pg import postgres_cluster, postgres_database, postgres_url  # noqa: F401 (fixtures)

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = REPO_ROOT / "desired-state-example"


@pytest.fixture
def git_remote(tmp_path: Path) -> GitRemote:
    return GitRemote(tmp_path / "git")
