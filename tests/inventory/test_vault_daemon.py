"""Ansible Vault through the real daemon: a desired-state repository with a vault-encrypted
group_vars file, a repository playbook that uses the vaulted value, the password as a file in
the configuration. The fleet gets the value; the password and the value appear nowhere in the
logs, the run artifacts, the state dir (state.db, caches) or the metrics and API."""

from __future__ import annotations

import hashlib
import json

from tests.daemon.conftest import (  # noqa: F401 (fixtures)
    big_setup,
    fleet,
    make_daemon,
    setup,
    wait_for,
)
from tests.end_to_end.conftest import environment_yaml
from tests.vault import encrypt_file

SECRET = "vaulted-db-password-5e8c1f"
PASSWORD = "vault-password-a94d22"
SITE = """\
- name: Deploy, using a vaulted value
  hosts: all
  gather_facts: false
  roles:
    - role: deploy_app
  tasks:
    - name: Write the digest of the vaulted value
      ansible.builtin.copy:
        content: "{{ vaulted_db_password | hash('sha256') }}"
        dest: "{{ deploy_app_base }}/vault.sha256"
        mode: "0600"
"""


def every_byte(directory) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file())


def test_vaulted_group_vars_reach_the_playbook_and_nothing_else(setup, make_daemon, tmp_path):  # noqa: F811
    password_file = tmp_path / "secrets" / "vault-password"
    password_file.parent.mkdir(exist_ok=True)
    password_file.write_text(PASSWORD + "\n")
    vault = setup.remote.work / "inventories" / "group_vars" / "all" / "vault.yml"
    vault.parent.mkdir(parents=True)
    vault.write_text(f"vaulted_db_password: {SECRET}\n")
    encrypt_file(vault, password_file)
    apps = {"web": {"shop": "1.0.0"}, "worker": {"jobs": "3.0.0"}}
    text = environment_yaml(apps).replace(
        "defaults:\n", "defaults:\n  playbook: playbooks/site.yml\n"
    )
    setup.remote.commit(
        "vaulted group_vars", {"environments/prod.yaml": text, "playbooks/site.yml": SITE}
    )

    daemon = make_daemon(execution={"vault_password_file": str(password_file)}).start()
    wait_for(lambda: daemon.converged("1.0.0"), 180, "convergence with vaulted group_vars")
    metrics = daemon.get("/metrics").text
    api = json.dumps([daemon.status(), daemon.rollouts()])
    assert daemon.stop() == 0

    digest = hashlib.sha256(SECRET.encode()).hexdigest()
    for hosts in setup.groups.values():
        for host in hosts:
            assert (setup.fleet.hosts_dir / host / "vault.sha256").read_text() == digest
    state_dir = setup.config.parent / "state"
    assert (state_dir / "state.db").is_file() and list((state_dir / "runs").iterdir())
    assert list((state_dir / "inventory-cache").glob("*.json")), "a vault-free result is cached"
    places = {
        "daemon log": daemon.log_path.read_bytes(),
        "state dir (state.db, runs, caches, source)": every_byte(state_dir),
        "metrics": metrics.encode(),
        "API": api.encode(),
    }
    for name, data in places.items():
        assert SECRET.encode() not in data, f"the vaulted value is in the {name}"
        assert PASSWORD.encode() not in data, f"the vault password is in the {name}"
