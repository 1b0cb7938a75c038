"""Ansible Vault on the real runner: password files passed as files (``--vault-id id@file``),
vaulted group_vars decrypted by ansible-playbook, and neither the password nor a vaulted value
anywhere in the run's directory."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from reconciler.edges.ansible import PlaybookRun
from reconciler.edges.ansible.runner import PlaybookRunner
from tests.vault import encrypt_file, encrypt_string

from .conftest import PLAYBOOKS, local_host

pytestmark = pytest.mark.ansible

FILE_SECRET = "file-secret-4c1d0e"
INLINE_SECRET = "inline-secret-93ab27"
PASSWORDS = {"default": "default-pass-61f2", "prod": "prod-pass-0d7e"}


def every_byte(directory: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file())


@pytest.fixture
def vaulted_inventory(tmp_path: Path) -> tuple[Path, dict[str, Path]]:
    files = {}
    for vault_id, password in PASSWORDS.items():
        files[vault_id] = tmp_path / f"{vault_id}.pass"
        files[vault_id].write_text(password + "\n")
    inventory = tmp_path / "inventory"
    (inventory / "group_vars" / "all").mkdir(parents=True)
    (inventory / "hosts.yml").write_text(
        json.dumps({"all": {"hosts": {"web1": local_host(), "web2": local_host()}}})
    )
    secret_file = inventory / "group_vars" / "all" / "vault.yml"
    secret_file.write_text(f"vaulted_file_secret: {FILE_SECRET}\n")
    encrypt_file(secret_file, files["default"])
    (inventory / "group_vars" / "all" / "inline.yml").write_text(
        encrypt_string(INLINE_SECRET, "vaulted_inline_secret", files["prod"], vault_id="prod")
    )
    return inventory, files


def test_vaulted_group_vars_are_used_and_never_written(runs_dir, tmp_path, vaulted_inventory):
    inventory, files = vaulted_inventory
    probe_dir = tmp_path / "probe"
    probe_dir.mkdir()
    runner = PlaybookRunner(
        runs_dir, vault=[("default", files["default"]), ("prod", files["prod"])]
    )
    result = runner.run(
        PlaybookRun(
            playbook=PLAYBOOKS / "vault.yml",
            inventory=inventory,
            hosts=("web1", "web2"),
            extra_vars={"probe_dir": str(probe_dir)},
            timeout_s=120,
        )
    )
    assert result.outcome == "successful", result
    digests = " ".join(hashlib.sha256(s.encode()).hexdigest() for s in (FILE_SECRET, INLINE_SECRET))
    for host in ("web1", "web2"):
        assert (probe_dir / f"{host}.sha256").read_text() == digests

    command = json.loads((result.run_dir / "artifacts" / result.ident / "command").read_text())
    argv = command["command"]
    assert f"default@{files['default']}" in argv and f"prod@{files['prod']}" in argv
    stored = every_byte(runs_dir)
    for secret in (FILE_SECRET, INLINE_SECRET, *PASSWORDS.values()):
        assert secret.encode() not in stored, f"{secret} is in the run directory"


def test_without_the_password_the_run_fails_without_printing_secrets(runs_dir, vaulted_inventory):
    inventory, _ = vaulted_inventory
    runner = PlaybookRunner(runs_dir)
    result = runner.run(
        PlaybookRun(
            playbook=PLAYBOOKS / "vault.yml",
            inventory=inventory,
            hosts=("web1",),
            extra_vars={"probe_dir": "/nonexistent"},
            timeout_s=120,
        )
    )
    assert result.outcome != "successful"
    for secret in (FILE_SECRET, INLINE_SECRET):
        assert secret not in result.message
        assert secret.encode() not in every_byte(runs_dir)


def test_vault_ids_are_checked():
    with pytest.raises(ValueError, match="invalid vault id"):
        PlaybookRunner(Path("/tmp/runs"), vault=[("a@b", Path("/x"))])
