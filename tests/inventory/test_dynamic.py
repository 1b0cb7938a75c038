"""Dynamic inventories: the operator's opt-in per environment (never the repository's), and even
then only in the bounded child process, never cached."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from reconciler.service import wiring
from reconciler.settings import Settings
from tests.inventory.conftest import environment

SCRIPT = """#!{python}
import json, os, resource, sys
import psutil
worker = psutil.Process(os.getppid())
with open({report!r}, "a") as handle:
    handle.write(json.dumps({{
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "rlimit_as": resource.getrlimit(resource.RLIMIT_AS)[0],
        "marker": os.environ.get("RECONCILER_INVENTORY_RUN"),
        "token_file": os.environ.get("RECONCILER_API__TOKEN_FILE"),
        "argv": sys.argv[1:],
        "worker_cmdline": worker.cmdline(),
        "worker_parent": worker.ppid(),
    }}) + "\\n")
print(json.dumps({{
    "web": {{"hosts": ["web-01", "web-02"]}},
    "_meta": {{"hostvars": {{"web-01": {{"ansible_host": "10.1.2.3"}}}}}},
}}))
"""


def settings(tmp_path: Path, **execution: object) -> Settings:
    return Settings(state_dir=tmp_path / "state", execution=execution)


def runs(report: Path) -> list[dict[str, object]]:
    if not report.exists():
        return []
    return [json.loads(line) for line in report.read_text().splitlines()]


def test_an_opted_in_environment_runs_its_script_in_the_bounded_child(
    make_repo, tmp_path, monkeypatch, children
):
    monkeypatch.setenv("RECONCILER_API__TOKEN_FILE", "/run/credentials/api-token")
    report = tmp_path / "report.jsonl"
    files = {"inventories/staging.py": SCRIPT.format(python=sys.executable, report=str(report))}
    root = make_repo(
        files, env="staging", inventory="inventories/staging.py", executable=tuple(files)
    )
    config = settings(
        tmp_path, dynamic_inventories={"staging": ["script"]}, inventory_memory_mib=768
    )

    result = wiring.load_repository(root, settings=config)
    assert result.problems == ()
    web = result.state.environments["staging"].groups["web"]
    assert [(h.name, h.address) for h in web.hosts] == [
        ("web-01", "10.1.2.3"),
        ("web-02", "web-02"),
    ]

    [run] = runs(report)
    assert run["argv"] == ["--list"]
    me = os.getpid()
    assert run["pid"] != me and run["ppid"] != me, "the script runs below the child, not in us"
    assert run["worker_parent"] == me
    assert run["worker_cmdline"][1:] == ["-I", "-m", "reconciler.edges.ansible.inventory_worker"]
    assert run["rlimit_as"] == 768 << 20, "the child's memory cap applies to what it runs"
    assert run["marker"], "marked, so a timeout kills it wherever it went"
    assert run["token_file"] is None, "no RECONCILER_* settings reach it"
    assert children.started == 1

    # never cached: the next load runs the script again, and nothing is stored
    assert wiring.load_repository(root, settings=config).problems == ()
    assert len(runs(report)) == 2 and children.started == 2
    cache = config.inventory_cache_dir
    assert not cache.exists() or not list(cache.iterdir())


def test_the_opt_in_is_per_environment_and_keyed_by_the_file_name(make_repo, tmp_path):
    report = tmp_path / "report.jsonl"
    script = SCRIPT.format(python=sys.executable, report=str(report))
    config = settings(tmp_path, dynamic_inventories={"staging": ["script"]})
    disabled = (
        "an executable inventory (a script): dynamic inventories are disabled; an operator can "
        "enable them per environment in the reconciler config (execution.dynamic_inventories)"
    )

    # another environment of the same repository: static only
    root = make_repo(
        {"inventories/prod.py": script},
        inventory="inventories/prod.py",
        executable=("inventories/prod.py",),
    )
    [problem] = wiring.load_repository(root, settings=config).problems
    assert str(problem) == f"environments/prod.yaml:2: inventory: inventories/prod.py: {disabled}"

    # a file that claims to be the opted-in environment is still judged by its own name
    (root / "environments" / "prod.yaml").write_text(environment("staging", "inventories/prod.py"))
    problems = [str(p) for p in wiring.load_repository(root, settings=config).problems]
    assert f"environments/prod.yaml:2: inventory: inventories/prod.py: {disabled}" in problems

    # without a configuration (``reconciler validate`` in CI), no environment is opted in
    staging = make_repo(
        {"inventories/staging.py": script},
        env="staging",
        inventory="inventories/staging.py",
        executable=("inventories/staging.py",),
    )
    [problem] = wiring.load_repository(staging).problems
    assert disabled in str(problem)
    assert runs(report) == []


def test_a_plugin_inventory_runs_when_its_plugin_is_enabled(make_repo, tmp_path):
    constructed = (
        "plugin: constructed\nstrict: true\ngroups:\n  canary: inventory_hostname == 'web-01'\n"
    )
    root = make_repo(
        {
            "inventories/staging/01-hosts.ini": "[web]\nweb-01\nweb-02\n",
            "inventories/staging/02-constructed.yml": constructed,
            "environments/staging.yaml": environment("staging", "inventories/staging").replace(
                "  web:", "  canary:"
            ),
        },
        env="staging",
        inventory="inventories/staging",
    )
    [problem] = wiring.load_repository(root, settings=settings(tmp_path)).problems
    assert "an inventory plugin configuration (plugin: constructed)" in str(problem)
    config = settings(tmp_path, dynamic_inventories={"staging": ["constructed"]})
    result = wiring.load_repository(root, settings=config)
    assert result.problems == ()
    assert result.state.environments["staging"].groups["canary"].host_names == ("web-01",)
