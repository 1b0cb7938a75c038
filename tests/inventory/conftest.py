"""Desired-state repositories with hostile or plain inventories, and ways to observe the
inventory child (how many started, what it left behind)."""

from __future__ import annotations

import stat
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from reconciler.edges.ansible import inventory_process

ENVIRONMENT = """\
environment: {env}
inventory: {inventory}
groups:
  web:
    apps: {{shop: "1.0.0"}}
"""


def environment(env: str = "prod", inventory: str = "inventories/prod.ini") -> str:
    return ENVIRONMENT.format(env=env, inventory=inventory)


def write(root: Path, files: Mapping[str, str | bytes], executable: tuple[str, ...] = ()) -> None:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        if name in executable:
            path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


@pytest.fixture
def make_repo(tmp_path: Path) -> Callable[..., Path]:
    """A desired-state work tree: environments/<env>.yaml and the given inventory files."""
    counter = iter(range(1000))

    def make(
        files: Mapping[str, str | bytes],
        *,
        env: str = "prod",
        inventory: str = "inventories/prod.ini",
        executable: tuple[str, ...] = (),
    ) -> Path:
        root = tmp_path / f"repo-{next(counter)}"
        write(root, {f"environments/{env}.yaml": environment(env, inventory), **files}, executable)
        return root

    return make


@pytest.fixture
def probe(tmp_path: Path) -> Path:
    """A file hostile content tries to create; it must stay absent."""
    return tmp_path / "PROBE"


class Children:
    """Counts inventory children started in this process since the fixture was made."""

    def __init__(self) -> None:
        self.base = inventory_process.started

    @property
    def started(self) -> int:
        return inventory_process.started - self.base


@pytest.fixture
def children() -> Children:
    return Children()
