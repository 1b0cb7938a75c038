"""The in-process inventory cache: keyed by content, never for dynamic inventories."""

from __future__ import annotations

from reconciler.edges.ansible import inventory

INI = "[web]\nweb-01 ansible_host=10.0.0.1\nweb-02\n"


def test_unchanged_content_is_parsed_once_and_changes_are_seen(tmp_path):
    first = tmp_path / "a" / "prod.ini"
    first.parent.mkdir()
    first.write_text(INI)
    copy = tmp_path / "b" / "prod.ini"  # another commit's snapshot, same content
    copy.parent.mkdir()
    copy.write_text(INI)
    parsed = inventory.load(first)
    assert parsed.groups["web"] == ("web-01", "web-02")
    assert inventory.load(copy) is parsed
    inventory.clear_cache()
    assert inventory.load(copy) is not parsed  # parsed again, as in a new process
    copy.write_text(INI + "web-03\n")
    assert inventory.load(copy).groups["web"] == ("web-01", "web-02", "web-03")
    # host_vars beside the file are part of the key (a new snapshot dir, as for a new commit)
    third = tmp_path / "c" / "prod.ini"
    (third.parent / "host_vars").mkdir(parents=True)
    third.write_text(INI + "web-03\n")
    (third.parent / "host_vars" / "web-03.yml").write_text("ansible_host: 10.0.0.3\n")
    assert inventory.content_key(third) != inventory.content_key(copy)
    assert inventory.load(third).hosts["web-03"].address == "10.0.0.3"


def test_scripts_and_plugins_are_never_cached(tmp_path):
    script = tmp_path / "hosts.py"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    plugin = tmp_path / "aws_ec2.yml"
    plugin.write_text("plugin: amazon.aws.aws_ec2\n")
    assert inventory.content_key(script) is None
    assert inventory.content_key(plugin) is None
    static = tmp_path / "static.yml"
    static.write_text("all:\n  hosts: {a: {}}\n")
    assert inventory.content_key(static) is not None
