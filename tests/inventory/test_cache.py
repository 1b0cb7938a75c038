"""The parsed-inventory cache in the state dir: keyed by content and parser settings, shared by
processes, never trusted blindly."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

from ruamel.yaml import YAML

from reconciler.edges.ansible import inventory
from reconciler.edges.ansible.inventory_cache import DiskCache
from tests.gitrepo import GitRemote
from tests.inventory.conftest import environment, write

INI = "[web]\nweb-01\nweb-02\n"
RECONCILER = str(Path(sys.executable).parent / "reconciler")


def snapshot(base: Path, name: str, files: dict[str, str]) -> Path:
    """A commit's tree on disk (each commit gets its own directory, as Git snapshots do)."""
    root = base / name
    write(root, files)
    return root


def load(parser: inventory.InventoryParser, root: Path, name: str = "inventories/prod.ini"):
    return parser(root / name, root=root, environment="prod")


def entries(cache_dir: Path) -> list[Path]:
    return sorted(cache_dir.glob("*.json"))


def test_an_unchanged_inventory_starts_no_child_in_any_process(tmp_path, children):
    (tmp_path / "state").mkdir()
    cache = tmp_path / "state" / "inventory-cache"
    files = {"inventories/prod.ini": INI, "inventories/group_vars/web.yml": "ansible_host: h\n"}
    first = load(inventory.InventoryParser(cache_dir=cache), snapshot(tmp_path, "c1", files))
    assert children.started == 1
    assert first.groups["web"] == ("web-01", "web-02") and first.hosts["web-01"].address == "h"
    # another commit with the same inventory, and a new parser as after a restart
    again = load(inventory.InventoryParser(cache_dir=cache), snapshot(tmp_path, "c2", files))
    assert children.started == 1
    assert again == first
    assert len(entries(cache)) == 1


def test_a_change_to_group_vars_or_the_parser_settings_parses_again(tmp_path, children):
    cache = tmp_path / "cache"
    parser = inventory.InventoryParser(cache_dir=cache)
    files = {"inventories/prod.ini": INI, "inventories/group_vars/web.yml": "ansible_host: a\n"}
    assert load(parser, snapshot(tmp_path, "c1", files)).hosts["web-02"].address == "a"
    files["inventories/group_vars/web.yml"] = "ansible_host: b\n"
    assert load(parser, snapshot(tmp_path, "c2", files)).hosts["web-02"].address == "b"
    assert children.started == 2
    files["inventories/host_vars/web-02.yml"] = "ansible_host: c\n"  # a new file beside it
    assert load(parser, snapshot(tmp_path, "c3", files)).hosts["web-02"].address == "c"
    assert children.started == 3
    vault_file = tmp_path / "vault-pass"
    vault_file.write_text("pass\n")
    vaulted = inventory.InventoryParser(cache_dir=cache, vault=[("default", vault_file)])
    load(vaulted, snapshot(tmp_path, "c4", files))  # same files, other settings
    assert children.started == 4
    assert len(entries(cache)) == 4


def test_corrupt_or_foreign_cache_files_are_ignored(tmp_path, children):
    cache = tmp_path / "cache"
    parser = inventory.InventoryParser(cache_dir=cache)
    root = snapshot(tmp_path, "c1", {"inventories/prod.ini": INI})
    expected = load(parser, root)
    [entry] = entries(cache)
    good = json.loads(entry.read_text())
    bad_documents = [
        b"\x00garbage{",  # not JSON
        b"[]",
        json.dumps({**good, "format": 99}).encode(),
        json.dumps({**good, "key": "0" * 64}).encode(),  # another key's result
        json.dumps(
            {**good, "inventory": {**good["inventory"], "groups": {"web": ["intruder"]}}}
        ).encode(),  # a group member that is no host
        json.dumps(
            {
                **good,
                "inventory": {
                    **good["inventory"],
                    "hosts": {"web-01": {"address": 7, "ports": {}}, "web-02": {}},
                },
            }
        ).encode(),
        b" " * (65 << 20),  # larger than any result may be
    ]
    for count, data in enumerate(bad_documents, start=2):
        entry.write_bytes(data)
        assert load(parser, root) == expected
        assert children.started == count, data[:40]
        assert json.loads(entry.read_text()) == good, "parsed again and rewritten"
    assert load(parser, root) == expected and children.started == len(bad_documents) + 1


def test_cache_files_are_private_atomic_and_bounded(tmp_path):
    (tmp_path / "state").mkdir()
    cache = tmp_path / "state" / "inventory-cache"
    parser = inventory.InventoryParser(cache_dir=cache)
    parser.cache = DiskCache(cache, keep=2)
    for index in range(3):
        load(parser, snapshot(tmp_path, f"c{index}", {"inventories/prod.ini": INI + f"h{index}\n"}))
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    files = list(cache.iterdir())
    assert len(files) == 2, "the oldest entry is dropped"
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    assert not [f for f in files if f.name.startswith(".tmp-")]


def test_an_unwritable_cache_dir_only_costs_time(tmp_path):
    blocker = tmp_path / "state"
    blocker.write_text("a file where the state dir should be")
    parser = inventory.InventoryParser(cache_dir=blocker / "inventory-cache")
    assert load(parser, snapshot(tmp_path, "c1", {"inventories/prod.ini": INI})).groups["web"]
    missing = tmp_path / "no-state-dir-yet"
    parser = inventory.InventoryParser(cache_dir=missing / "inventory-cache")
    assert load(parser, snapshot(tmp_path, "c2", {"inventories/prod.ini": INI})).groups["web"]
    assert not missing.exists(), "the state dir is the daemon's to create, with its mode"


def test_cli_reads_share_the_cache_across_processes(tmp_path):
    """`reconciler plan` twice on an unchanged inventory: the second starts no parser."""
    remote = GitRemote(tmp_path / "git")
    remote.commit(
        "initial",
        {"environments/prod.yaml": environment(), "inventories/prod.ini": INI},
    )
    config = tmp_path / "reconciler.yaml"
    YAML().dump(
        {"state_dir": str(tmp_path / "state"), "source": {"url": remote.url, "branch": "main"}},
        config,
    )

    def plan() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [RECONCILER, "--log-level", "info", "--config", str(config), "plan"],
            capture_output=True,
            text=True,
            env={**os.environ, "COLUMNS": "200"},
            timeout=300,
        )

    first = plan()
    assert first.returncode == 0, first.stdout + first.stderr
    assert "parsed inventories/prod.ini in a child process" in first.stderr
    second = plan()
    assert second.returncode == 0, second.stdout + second.stderr
    assert "in a child process" not in second.stderr
    assert second.stdout == first.stdout
    shutil.rmtree(tmp_path / "state" / "inventory-cache")
    third = plan()
    assert "parsed inventories/prod.ini in a child process" in third.stderr
