"""Ansible Vault in inventories: the child reads the password files itself, decrypts only what it
needs, and a vaulted value is never printed or stored."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.desired.inventories import InventoryError
from reconciler.edges.ansible import inventory
from tests.inventory.conftest import write
from tests.vault import encrypt_file, encrypt_string

SECRET = "s3cret-value-7f3a9"
PASSWORD = "vault-password-2b81"


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "vault-password"
    path.write_text(PASSWORD + "\n")
    path.chmod(0o600)
    return path


def every_byte(directory: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file())


def parser(cache: Path, password_file: Path | None) -> inventory.InventoryParser:
    vault = [("default", password_file)] if password_file else []
    return inventory.InventoryParser(cache_dir=cache, vault=vault)


def test_vaulted_group_vars_do_not_break_parsing_and_are_never_stored(
    tmp_path, password_file, children
):
    root = tmp_path / "repo"
    write(
        root,
        {
            "inventories/prod.ini": "[web]\nweb-01\nweb-02\n",
            "inventories/group_vars/all/vault.yml": f"db_password: {SECRET}\n",
            "inventories/group_vars/web.yml": encrypt_string(SECRET, "api_token", password_file)
            + "deploy_app_ports: {shop: 8080}\n",
        },
    )
    encrypt_file(root / "inventories/group_vars/all/vault.yml", password_file)
    cache = tmp_path / "cache"
    for secrets in (password_file, None):  # with the password (daemon), without (CI validate)
        parsed = parser(cache, secrets)(root / "inventories/prod.ini", root=root, environment="p")
        assert parsed.group_hosts("web")[0].ports == {"shop": 8080}
    # the vaulted values are not needed, so the result was cached (with the password only:
    # without it, a vaulted file could not be read, so the result is not kept)
    assert len(list(cache.glob("*.json"))) == 1 and children.started == 2
    assert SECRET.encode() not in every_byte(cache) and PASSWORD.encode() not in every_byte(cache)


@pytest.mark.parametrize("how", ["inline", "file"])
def test_a_vaulted_address_is_decrypted_but_never_cached(tmp_path, password_file, how):
    root = tmp_path / "repo"
    vars_file = root / "inventories/host_vars/web-01.yml"
    write(
        root,
        {
            "inventories/prod.ini": "[web]\nweb-01\n",
            vars_file.relative_to(root).as_posix(): (
                encrypt_string("10.20.30.40", "ansible_host", password_file)
                if how == "inline"
                else "ansible_host: 10.20.30.40\n"
            ),
        },
    )
    if how == "file":
        encrypt_file(vars_file, password_file)
    cache = tmp_path / "cache"
    source = root / "inventories/prod.ini"
    parsed = parser(cache, password_file)(source, root=root, environment="prod")
    assert parsed.hosts["web-01"].address == "10.20.30.40"
    assert not cache.exists() or not list(cache.glob("*.json"))
    # without the password the address is unknown, not an error (CI has no vault password)
    without = parser(cache, None)(source, root=root, environment="prod")
    assert without.hosts["web-01"].address == "web-01"


def test_a_wrong_password_names_the_file_and_prints_no_secret(tmp_path, password_file):
    root = tmp_path / "repo"
    write(
        root,
        {
            "inventories/prod.ini": "[web]\nweb-01\n",
            "inventories/group_vars/web.yml": f"db_password: {SECRET}\n",
        },
    )
    encrypt_file(root / "inventories/group_vars/web.yml", password_file)
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-password\n")
    with pytest.raises(InventoryError) as raised:
        parser(tmp_path / "cache", wrong)(root / "inventories/prod.ini", root=root, environment="p")
    message = str(raised.value)
    assert message.startswith("inventories/prod.ini: inventories/group_vars/web.yml")
    assert "Decryption failed" in message
    assert SECRET not in message and PASSWORD not in message


def test_errors_inside_an_encrypted_file_are_withheld(tmp_path, password_file):
    root = tmp_path / "repo"
    write(root, {"inventories/prod.ini": f"[web]\nweb-01\n[web:vars]\n{SECRET}\n"})
    encrypt_file(root / "inventories/prod.ini", password_file)
    with pytest.raises(InventoryError) as raised:
        parser(tmp_path / "cache", password_file)(
            root / "inventories/prod.ini", root=root, environment="prod"
        )
    assert str(raised.value) == (
        "inventories/prod.ini:4: cannot be parsed (a vault-encrypted file: details withheld)"
    )
