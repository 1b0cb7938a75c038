"""Locate the shipped playbooks and roles (installed package data, or a source checkout).

``roles_path(repo_root, playbook)`` is where Ansible looks for roles in a run, first match
wins: for a shipped playbook (a bare name) the shipped roles come first, so a repository's
``roles/deploy_app`` can never replace the role the shipped playbook was written for; for the
repository's own playbook (a path) the repository's roles come first (its own code, trusted
like the playbook). ``shadowed_roles(repo_root)`` names the repository roles that carry a
shipped role's name (the rollout logs a warning saying which one a run uses).
"""

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


#: Shipped playbooks reconciler runs itself (observation); groups cannot name them.
INTERNAL_PLAYBOOKS = frozenset({"reconciler-observe.yml", "reconciler-observe-command.yml"})


def shipped_playbooks() -> frozenset[str]:
    """The shipped playbooks a group may name (``playbook: deploy-app.yml``)."""
    directory = playbooks_dir()
    if not directory.is_dir():
        return frozenset()
    return frozenset(p.name for p in directory.glob("*.yml")) - INTERNAL_PLAYBOOKS


def is_shipped(playbook: str) -> bool:
    return "/" not in playbook


def roles_path(repo_root: Path, playbook: str) -> tuple[Path, ...]:
    """Role directories for a run of ``playbook`` (see the module docstring)."""
    ordered = (roles_dir(), repo_root / "roles")
    if not is_shipped(playbook):
        ordered = ordered[::-1]
    return tuple(p for p in ordered if p.is_dir())


def shadowed_roles(repo_root: Path) -> tuple[str, ...]:
    """Names of the repository's roles that are also shipped roles, sorted."""
    shipped, own = roles_dir(), repo_root / "roles"
    if not shipped.is_dir() or not own.is_dir():
        return ()
    return tuple(sorted(p.name for p in own.iterdir() if (shipped / p.name).is_dir()))


def playbook_path(repo_root: Path, playbook: str) -> Path:
    """Absolute path of a playbook reference: a bare name is shipped, a path is in the repo."""
    if not is_shipped(playbook):
        return (repo_root / playbook).resolve()
    return playbooks_dir() / playbook
