"""Hostile inventories in a desired-state repository: rejected with ``file:line`` problems, and
nothing from the repository ever runs (a probe file stays absent), in the loader and in
``reconciler validate``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.edges.ansible import inventory, inventory_process
from reconciler.service import wiring

RECONCILER = str(Path(sys.executable).parent / "reconciler")
DISABLED = (
    "dynamic inventories are disabled; an operator can enable them per environment in the "
    "reconciler config (execution.dynamic_inventories)"
)


def problems(root: Path) -> list[str]:
    result = wiring.load_repository(root)
    assert (result.state is None) == bool(result.problems)
    return [str(p) for p in result.problems]


def script(probe: Path) -> str:
    return (
        "#!/bin/sh\n"
        f"touch {probe}\n"
        'echo \'{"web": {"hosts": ["web-01"]}, "_meta": {"hostvars": {}}}\'\n'
    )


def validate(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [RECONCILER, "validate", str(root)],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "300"},
        timeout=120,
    )


def test_executable_inventory_is_rejected_and_never_run(make_repo, probe, children):
    root = make_repo({"inventories/prod.ini": script(probe)}, executable=("inventories/prod.ini",))
    assert problems(root) == [
        "environments/prod.yaml:2: inventory: inventories/prod.ini: an executable inventory "
        f"(a script): {DISABLED}"
    ]
    assert children.started == 0, "rejected before any parser starts"
    result = validate(root)
    assert result.returncode == 1
    assert "environments/prod.yaml:2: inventory: inventories/prod.ini: an executable" in (
        result.stdout
    )
    assert not probe.exists()


def test_executable_file_in_an_inventory_directory_is_rejected(make_repo, probe):
    root = make_repo(
        {
            "inventories/prod/01-static.ini": "[web]\nweb-01\n",
            "inventories/prod/02-dynamic": script(probe),
            "inventories/prod/group_vars/web.yml": "x: 1\n",
        },
        inventory="inventories/prod",
        executable=("inventories/prod/02-dynamic",),
    )
    [problem] = problems(root)
    assert problem.startswith(
        "environments/prod.yaml:2: inventory: inventories/prod/02-dynamic: an executable"
    )
    assert not probe.exists()


def test_the_child_alone_never_runs_a_script_either(make_repo, probe):
    """Defense in depth: even past the parent's checks, the child has no script plugin."""
    root = make_repo({"inventories/prod.ini": script(probe)}, executable=("inventories/prod.ini",))
    source = root / "inventories" / "prod.ini"
    document = inventory_process.run(
        {"source": str(source), "yaml_files": [], "vault": []},
        plugins=inventory.STATIC_PLUGINS,
        limits=inventory.Limits(timeout_s=60),
    )
    assert "error" in document
    assert not probe.exists()


CONSTRUCTED = """\
plugin: constructed
strict: true
compose:
  pwned: lookup('pipe', 'touch {probe}')
groups:
  owned: lookup('pipe', 'touch {probe}') is defined
"""
GENERATOR = """\
plugin: generator
hosts:
  name: "{{{{ lookup('pipe', 'touch {probe}') }}}}-{{{{ layer }}}}"
layers:
  layer: [a, b]
"""


@pytest.mark.parametrize(
    ("plugin", "text"), [("constructed", CONSTRUCTED), ("generator", GENERATOR)]
)
def test_plugin_inventories_with_a_pipe_lookup_are_rejected(make_repo, probe, plugin, text):
    root = make_repo(
        {
            "inventories/prod/01-hosts.ini": "[web]\nweb-01\n",
            "inventories/prod/02-plugin.yml": text.format(probe=probe),
        },
        inventory="inventories/prod",
    )
    assert problems(root) == [
        "environments/prod.yaml:2: inventory: inventories/prod/02-plugin.yml: an inventory "
        f"plugin configuration (plugin: {plugin}): {DISABLED}"
    ]
    result = validate(root)
    assert result.returncode == 1 and "an inventory plugin configuration" in result.stdout
    # and the child alone refuses them too (no `auto` plugin, so nothing is looked up)
    document = inventory_process.run(
        {"source": str(root / "inventories" / "prod"), "yaml_files": [], "vault": []},
        plugins=inventory.STATIC_PLUGINS,
        limits=inventory.Limits(timeout_s=60),
    )
    assert "error" in document
    assert not probe.exists()


def test_a_pipe_lookup_in_host_vars_stays_text(make_repo, probe):
    lookup = f"{{{{ lookup('pipe', 'touch {probe}') }}}}"
    root = make_repo(
        {
            "inventories/prod.yml": (
                f"all:\n  children:\n    web:\n      hosts:\n        web-01:\n"
                f'          ansible_host: "{lookup}"\n        web-02: {{}}\n'
            ),
            "inventories/group_vars/web.yml": f'deploy_app_ports: "{lookup}"\n',
            "inventories/host_vars/web-02.yml": f'ansible_host: "{lookup}"\n',
        },
        inventory="inventories/prod.yml",
    )
    result = wiring.load_repository(root)
    assert result.problems == ()
    web = result.state.environments["prod"].groups["web"]
    assert [h.address for h in web.hosts] == [lookup, lookup]
    assert [dict(h.ports) for h in web.hosts] == [{}, {}]
    assert validate(root).returncode == 0
    assert not probe.exists()


def bomb(indent: str = "") -> str:
    """Nine lines of anchors and aliases that expand to 9**9 strings (a billion laughs)."""
    laughs = ", ".join(["lol"] * 9)
    lines = [f"{indent}a: &a [{laughs}]"]
    for previous, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{indent}{name}: &{name} [{', '.join([f'*{previous}'] * 9)}]")
    return "\n".join(lines) + "\n"


def deep(depth: int) -> str:
    """A host var of block mappings nested ``depth`` deep (libyaml refuses deep flow nesting
    by itself)."""
    lines = [
        "all:",
        "  children:",
        "    web:",
        "      hosts:",
        "        web-01:",
        "          deep:",
    ]
    lines += [" " * (12 + 2 * level) + f"k{level}:" for level in range(depth)]
    return "\n".join(lines) + " leaf\n"


WEB = "all:\n  children:\n    web:\n      hosts: {web-01: {}}\n"


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (
            {"inventories/prod.yml": "all:\n  vars:\n" + bomb("    ") + WEB[5:]},
            "inventories/prod.yml:9: YAML aliases expand to 5,380,840 values here",
        ),
        (
            {"inventories/prod.yml": WEB, "inventories/group_vars/web.yml": bomb()},
            "inventories/prod.yml: inventories/group_vars/web.yml:7: YAML aliases expand",
        ),
        ({"inventories/prod.yml": deep(300)}, "inventories/prod.yml:"),
    ],
    ids=["inventory", "group_vars", "nesting"],
)
def test_alias_bombs_and_deep_nesting_are_rejected_at_once(make_repo, children, files, expected):
    root = make_repo(files, inventory="inventories/prod.yml")
    [problem] = problems(root)
    assert problem.startswith(f"environments/prod.yaml:2: inventory: {expected}"), problem
    assert "YAML aliases expand" in problem or "nesting deeper than 200 levels" in problem
    assert children.started == 1


def test_unicode_and_other_unsafe_host_names_are_file_line_problems(make_repo):
    cyrillic = "w\u0435b-01"  # the "e" is CYRILLIC SMALL LETTER IE
    root = make_repo(
        {
            "inventories/prod.yml": (
                "all:\n  children:\n    web:\n      hosts:\n"
                f"        {cyrillic}: {{}}\n        '~web-02': {{}}\n        'web 03': {{}}\n"
                "        web-04: {}\n    other:\n      hosts:\n        'weird*': {}\n"
            )
        },
        inventory="inventories/prod.yml",
    )
    rule = "use ASCII letters, digits, '_', '.', ':' and '-' (^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,252}$)"
    assert problems(root) == [
        f"environments/prod.yaml:2: inventory: inventories/prod.yml: host {name} (group web) "
        f"is not a safe host name: {rule}"
        for name in ("'w\\u0435b-01'", "'web 03'", "'~web-02'")  # problems are sorted
    ]  # 'weird*' is in a group the environment does not use
    result = validate(root)
    assert result.returncode == 1 and "host 'w\\u0435b-01' (group web)" in result.stdout


def test_a_look_alike_group_name_does_not_match_the_environment(make_repo):
    root = make_repo(
        {"inventories/prod.yml": "all:\n  children:\n    w\u0435b:\n      hosts: {web-01: {}}\n"},
        inventory="inventories/prod.yml",
    )
    [problem] = problems(root)
    assert problem.startswith("environments/prod.yaml:4: groups.web: no inventory group 'web'")


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (
            {"inventories/group_vars/web.yml": "a: [\n"},
            "inventories/prod.ini: inventories/group_vars/web.yml:2: host 'web-01': YAML "
            "parsing failed",
        ),
        (
            {"inventories/host_vars/web-01.yml": "- just\n- a list\n"},
            "inventories/prod.ini: host 'web-01': Could not process "
            "'inventories/host_vars/web-01.yml': failed to combine variables",
        ),
    ],
)
def test_bad_group_vars_and_host_vars_are_problems(make_repo, files, expected):
    root = make_repo({"inventories/prod.ini": "[web]\nweb-01\n", **files})
    [problem] = problems(root)
    assert problem.startswith(f"environments/prod.yaml:2: inventory: {expected}"), problem


def test_broken_ini_names_file_and_line(make_repo):
    root = make_repo({"inventories/prod.ini": "[web]\nweb-01\n[web:vars]\nnot a variable\n"})
    assert problems(root) == [
        "environments/prod.yaml:2: inventory: inventories/prod.ini:4: Failed to parse "
        "inventory: Expected key=value, got: not a variable"
    ]


def test_a_symlink_out_of_the_repository_is_refused(make_repo, tmp_path):
    secret = tmp_path / "secret.yml"
    secret.write_text("token: do-not-read\n")
    root = make_repo({"inventories/prod.ini": "[web]\nweb-01\n"})
    (root / "inventories" / "group_vars").mkdir()
    (root / "inventories" / "group_vars" / "all.yml").symlink_to(secret)
    assert problems(root) == [
        "environments/prod.yaml:2: inventory: inventories/group_vars/all.yml: resolves outside "
        "the repository"
    ]


def test_terminal_escapes_in_inventory_errors_are_escaped(make_repo):
    root = make_repo({"inventories/prod.ini": "[web]\nweb-01\n[web:vars]\n\x1b[31mred\x07\n"})
    [problem] = problems(root)
    assert "\x1b" not in problem and "\x07" not in problem
    assert "\\x1b[31mred\\x07" in problem
