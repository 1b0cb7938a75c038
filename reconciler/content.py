"""Locate the shipped playbooks and roles (installed package data, or a source checkout)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


@cache
def root() -> Path:
    """Directory holding ``playbooks/`` and ``roles/``."""
    installed = _PACKAGE / "_content"
    if (installed / "playbooks").is_dir():
        return installed
    return _PACKAGE.parent


def playbooks_dir() -> Path:
    return root() / "playbooks"


def roles_dir() -> Path:
    return root() / "roles"


def shipped_playbooks() -> frozenset[str]:
    directory = playbooks_dir()
    if not directory.is_dir():
        return frozenset()
    return frozenset(p.name for p in directory.glob("*.yml"))


def playbook_path(repo_root: Path, playbook: str) -> Path:
    """Absolute path of a playbook reference: a bare name is shipped, a path is in the repo."""
    if "/" in playbook:
        return (repo_root / playbook).resolve()
    return playbooks_dir() / playbook
