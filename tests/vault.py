"""Ansible Vault for tests: encrypt files and strings with the venv's ``ansible-vault``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ANSIBLE_VAULT = str(Path(sys.executable).parent / "ansible-vault")


def encrypt_file(path: Path, password_file: Path, vault_id: str = "default") -> None:
    """Encrypt ``path`` in place (what ``ansible-vault encrypt`` does to a group_vars file)."""
    subprocess.run(
        [ANSIBLE_VAULT, "encrypt", "--vault-id", f"{vault_id}@{password_file}", str(path)],
        check=True,
        capture_output=True,
        cwd=path.parent,
    )
    assert path.read_text().startswith("$ANSIBLE_VAULT;")


def encrypt_string(value: str, name: str, password_file: Path, vault_id: str = "default") -> str:
    """``name: !vault |...`` YAML for one value (``ansible-vault encrypt_string``)."""
    result = subprocess.run(
        [
            ANSIBLE_VAULT,
            "encrypt_string",
            "--vault-id",
            f"{vault_id}@{password_file}",
            "--name",
            name,
            value,
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=password_file.parent,
    )
    assert "!vault" in result.stdout
    return result.stdout
