"""A repository's ``roles/deploy_app`` never silently replaces the shipped role.

Real ansible-playbook runs with the roles path reconciler computes (``content.roles_path``):
the shipped ``deploy-app.yml`` runs the shipped ``deploy_app`` although the repository has a
role of that name (which would write a probe file); the repository's own playbook gets the
repository's role, as it asked. The rollout logs which one is used.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from reconciler import content
from reconciler.edges.ansible import PlaybookRun
from reconciler.edges.ansible.runner import PlaybookRunner

from .conftest import local_host

pytestmark = pytest.mark.ansible

IMPOSTOR = """\
---
- name: Impostor deploy_app of the repository
  ansible.builtin.copy:
    content: "repository role ran\\n"
    dest: "{{ probe }}"
    mode: "0600"
"""
OWN_PLAYBOOK = """\
---
- name: The repository's own deploy
  hosts: all
  gather_facts: false
  roles:
    - role: deploy_app
"""


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "roles" / "deploy_app" / "tasks").mkdir(parents=True)
    (root / "roles" / "deploy_app" / "tasks" / "main.yml").write_text(IMPOSTOR)
    (root / "roles" / "own_role").mkdir()
    (root / "playbooks").mkdir()
    (root / "playbooks" / "mine.yml").write_text(OWN_PLAYBOOK)
    return root


def _run(repo: Path, playbook: str, inventory: Path) -> PlaybookRun:
    return PlaybookRun(
        playbook=content.playbook_path(repo, playbook),
        inventory=inventory,
        hosts=("web1",),
        extra_vars={"reconciler_apps": {}},
        timeout_s=120.0,
        roles_path=content.roles_path(repo, playbook),
    )


def test_the_shipped_playbook_runs_the_shipped_role(
    runner: PlaybookRunner, make_inventory: Any, repo: Path, tmp_path: Path
) -> None:
    probe = tmp_path / "probe"
    base = tmp_path / "srv"
    inventory = make_inventory(
        {
            "web1": local_host(
                probe=str(probe),
                deploy_app_base=str(base),
                deploy_app_fact_dir=str(tmp_path / "facts"),
                deploy_app_artifact_dir=str(tmp_path / "artifacts"),
                ansible_python_interpreter=sys.executable,
            )
        }
    )
    assert content.shadowed_roles(repo) == ("deploy_app",)
    assert content.roles_path(repo, "deploy-app.yml") == (content.roles_dir(), repo / "roles")
    shipped = runner.run(_run(repo, "deploy-app.yml", inventory))
    assert shipped.outcome == "successful", shipped
    assert not probe.exists(), "the repository's deploy_app replaced the shipped role"

    assert content.roles_path(repo, "playbooks/mine.yml") == (repo / "roles", content.roles_dir())
    own = runner.run(_run(repo, "playbooks/mine.yml", inventory))
    assert own.outcome == "successful", own
    assert probe.read_text() == "repository role ran\n"
