"""Fixtures shared by every tier: real Git remotes, settings in temp dirs, PostgreSQL
(``tests.pg``: one server per session, a database per test).

``make test`` runs the suite on pytest-xdist workers with ``--dist loadscope``: a module runs on
one worker, so its module-scoped fixtures are built once (SSH modules on different workers use
different addresses: ``tests.ssh.conftest.ssh_address``). The slow tiers are collected first, so
their long modules start early instead of finishing last. Hypothesis has no deadline: examples
run on a loaded machine, and speed lives in ``bench/``."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import settings

from tests.gitrepo import GitRemote
from tests.pg import postgres_cluster, postgres_database, postgres_url  # noqa: F401 (fixtures)

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = REPO_ROOT / "desired-state-example"
# Tiers whose modules take minutes each, longest first (see the module docstring).
SLOW_TIERS = ("end_to_end", "ssh", "replicas", "daemon", "web", "hostile", "inventory", "content")

settings.register_profile("reconciler", deadline=None)
settings.load_profile("reconciler")


def _tier_rank(item: pytest.Item) -> int:
    parts = item.nodeid.split("/")
    tier = parts[1] if len(parts) > 2 and parts[0] == "tests" else ""
    return SLOW_TIERS.index(tier) if tier in SLOW_TIERS else len(SLOW_TIERS)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Slow tiers first; a stable sort keeps every module's tests in their order."""
    items.sort(key=_tier_rank)


@pytest.fixture
def git_remote(tmp_path: Path) -> GitRemote:
    return GitRemote(tmp_path / "git")
