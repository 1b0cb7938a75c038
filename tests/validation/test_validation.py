"""Every validation rule gives an exact ``file:line: message``; one bad file rejects the commit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.service import wiring

INVENTORY = """\
[web]
web-01 ansible_host=10.0.0.1 deploy_app_ports="{'shop': 8080}"
web-02
[worker]
worker-01
[db]
"""

VALID = """\
environment: prod
inventory: inventories/prod.ini
defaults:
  rollout: {canary: [50, 100], bake: 5s}
groups:
  web:
    apps:
      shop: "1.0.0"
  worker:
    after: [web]
    apps: {jobs: "2.0.0"}
"""


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    (tmp_path / "inventories").mkdir()
    (tmp_path / "inventories" / "prod.ini").write_text(INVENTORY)
    (tmp_path / "environments").mkdir()
    return tmp_path


def problems(repo: Path, text: str, name: str = "prod.yaml") -> list[str]:
    (repo / "environments" / name).write_text(text)
    result = wiring.load_repository(repo)
    assert (result.state is None) == bool(result.problems)
    return [str(p) for p in result.problems]


def test_valid_repository_resolves_groups_hosts_and_defaults(repo):
    assert problems(repo, VALID) == []
    state = wiring.load_repository(repo).state
    env = state.environments["prod"]
    assert list(env.groups) == ["web", "worker"]
    web = env.groups["web"]
    assert web.host_names == ("web-01", "web-02")
    assert web.hosts[0].address == "10.0.0.1" and web.hosts[0].ports == {"shop": 8080}
    assert web.rollout.canary == (50, 100) and web.rollout.bake_s == 5.0
    assert web.playbook == "deploy-app.yml"


def test_group_rollout_overrides_only_the_keys_it_sets(repo):
    text = VALID.replace(
        '      shop: "1.0.0"\n', '      shop: "1.0.0"\n    rollout: {canary: [100]}\n'
    )
    assert problems(repo, text) == []
    web = wiring.load_repository(repo).state.environments["prod"].groups["web"]
    assert web.rollout.canary == (100,) and web.rollout.bake_s == 5.0


def test_unknown_key_has_did_you_mean_hint(repo):
    text = VALID.replace("bake: 5s", "bakee: 5s")
    assert problems(repo, text) == [
        "environments/prod.yaml:4: defaults.rollout.bakee: unknown key 'bakee' "
        "(did you mean 'bake'?)"
    ]


def test_unknown_top_level_and_group_keys(repo):
    text = VALID.replace("    apps: {jobs", "    aps: {jobs").replace("defaults:", "defualts:")
    assert problems(repo, text) == [
        "environments/prod.yaml:3: defualts: unknown key 'defualts' (did you mean 'defaults'?)",
        "environments/prod.yaml:10: groups.worker: missing required key 'apps'",
        "environments/prod.yaml:11: groups.worker.aps: unknown key 'aps' (did you mean 'apps'?)",
    ]


def test_version_must_match_strict_pattern(repo):
    text = VALID.replace('shop: "1.0.0"', 'shop: "1.0 beta"')
    assert problems(repo, text) == [
        "environments/prod.yaml:8: groups.web.apps.shop: version '1.0 beta' contains "
        "templating or shell characters; versions must match ^[A-Za-z0-9][A-Za-z0-9._+~-]*$"
    ]


def test_version_with_jinja_lookup_is_rejected(repo):
    text = VALID.replace('shop: "1.0.0"', "shop: \"{{ lookup('pipe', 'touch /tmp/pwned') }}\"")
    [problem] = problems(repo, text)
    assert problem.startswith("environments/prod.yaml:8: groups.web.apps.shop: version ")
    assert "templating or shell characters" in problem


@pytest.mark.parametrize("version", ["$(id)", "1.0;rm", "`id`", "1.0|x", "{%raw%}", "-rf"])
def test_shell_characters_in_versions_are_rejected(repo, version):
    [problem] = problems(repo, VALID.replace('"1.0.0"', f"'{version}'"))
    assert problem.startswith("environments/prod.yaml:8: groups.web.apps.shop: version")


def test_app_names_are_checked_too(repo):
    [problem] = problems(repo, VALID.replace("      shop:", '      "shop;id":'))
    assert problem == (
        "environments/prod.yaml:8: groups.web.apps.shop;id: app name 'shop;id' "
        "contains templating or shell characters; app names must match "
        "^[a-z][a-z0-9_-]*$"
    )


def test_inventory_path_escaping_the_repo(repo):
    text = VALID.replace("inventories/prod.ini", "../prod.ini")
    assert problems(repo, text) == [
        "environments/prod.yaml:2: inventory: path '../prod.ini' must be relative and stay "
        "inside the repository"
    ]


def test_symlink_escaping_the_repo(repo, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside") / "inv.ini"
    outside.write_text(INVENTORY)
    (repo / "inventories" / "link.ini").symlink_to(outside)
    text = VALID.replace("inventories/prod.ini", "inventories/link.ini")
    assert problems(repo, text) == [
        "environments/prod.yaml:2: inventory: 'inventories/link.ini' resolves outside the "
        "repository"
    ]


def test_playbook_path_escaping_the_repo(repo):
    text = VALID.replace("    after: [web]\n", "    after: [web]\n    playbook: ../site.yml\n")
    assert problems(repo, text) == [
        "environments/prod.yaml:11: groups.worker.playbook: path '../site.yml' must be "
        "relative and stay inside the repository"
    ]


def test_repo_playbook_must_exist_and_shipped_names_are_known(repo):
    text = VALID.replace("    after: [web]\n", "    after: [web]\n    playbook: playbooks/x.yml\n")
    assert problems(repo, text) == [
        "environments/prod.yaml:11: groups.worker.playbook: 'playbooks/x.yml' does not exist "
        "in the repository"
    ]
    (repo / "playbooks").mkdir()
    (repo / "playbooks" / "x.yml").write_text("- hosts: all\n  tasks: []\n")
    assert problems(repo, text) == []
    [problem] = problems(repo, VALID.replace("defaults:\n", "defaults:\n  playbook: nope.yml\n"))
    assert problem.startswith(
        "environments/prod.yaml:4: defaults.playbook: 'nope.yml' is not a "
        "shipped playbook (deploy-app.yml)"
    )


def test_group_missing_from_inventory(repo):
    text = VALID.replace("  web:\n", "  wbe:\n").replace("after: [web]", "after: [wbe]")
    assert problems(repo, text) == [
        "environments/prod.yaml:6: groups.wbe: no inventory group 'wbe' in "
        "inventories/prod.ini (did you mean 'web'?)"
    ]


def test_group_without_hosts(repo):
    text = VALID + '  db:\n    apps: {postgres: "15.4"}\n'
    assert problems(repo, text) == [
        "environments/prod.yaml:12: groups.db: inventory group 'db' has no hosts"
    ]


def test_environment_must_match_file_name(repo):
    assert problems(repo, VALID.replace("environment: prod", "environment: production")) == [
        "environments/prod.yaml:1: environment: 'production' must equal the file name 'prod'"
    ]


def test_cycle_in_after(repo):
    text = VALID.replace('      shop: "1.0.0"\n', '      shop: "1.0.0"\n    after: [worker]\n')
    assert problems(repo, text) == [
        "environments/prod.yaml:9: groups: 'after' forms a cycle: web -> worker -> web"
    ]


def test_after_names_an_unknown_group(repo):
    assert problems(repo, VALID.replace("after: [web]", "after: [web, cache]")) == [
        "environments/prod.yaml:10: groups.worker.after: unknown group 'cache'"
    ]


def test_canary_and_max_failed_hosts_rules(repo):
    text = VALID.replace("canary: [50, 100]", "canary: [50, 90]")
    assert problems(repo, text) == [
        "environments/prod.yaml:4: defaults.rollout: the last canary step must be 100"
    ]
    text = VALID.replace("bake: 5s", "max_failed_hosts: lots")
    [problem] = problems(repo, text)
    assert problem.startswith("environments/prod.yaml:4: defaults.rollout.max_failed_hosts:")


def test_host_in_two_groups_with_conflicting_versions(repo):
    (repo / "inventories" / "prod.ini").write_text(INVENTORY + "[canary]\nweb-01\n")
    text = VALID + '  canary:\n    apps: {shop: "1.1.0"}\n'
    assert problems(repo, text) == [
        "environments/prod.yaml:13: groups.canary.apps.shop: host 'web-01' is also in group "
        "'web', which wants shop 1.0.0 (not 1.1.0)"
    ]


def test_yaml_syntax_error_and_duplicate_keys(repo):
    [problem] = problems(repo, VALID.replace("groups:\n", "groups:\n  web: [\n", 1))
    assert problem.startswith("environments/prod.yaml:")
    assert "invalid YAML" in problem
    [problem] = problems(
        repo, VALID.replace("environment: prod\n", "environment: prod\nenvironment: prod\n")
    )
    assert problem.startswith("environments/prod.yaml:2: invalid YAML")


def test_one_invalid_file_rejects_the_whole_repository(repo):
    (repo / "environments" / "stage.yaml").write_text(
        VALID.replace("environment: prod", "environment: stage")
    )
    assert problems(repo, VALID) == []
    assert problems(repo, VALID.replace('"1.0.0"', '"{{x}}"')) != []
    assert wiring.load_repository(repo).state is None


def test_unparseable_inventory(repo):
    (repo / "inventories" / "prod.ini").write_text("[web\nweb-01 = = =\n")
    [problem] = problems(repo, VALID)
    assert problem.startswith("environments/prod.yaml:2: inventory:")


def test_validate_command_prints_file_line_and_exits_1(repo):
    reconciler = Path(sys.executable).parent / "reconciler"
    (repo / "environments" / "prod.yaml").write_text(VALID.replace("bake: 5s", "bakee: 5s"))
    result = subprocess.run(
        [str(reconciler), "validate", str(repo)],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert result.returncode == 1
    assert (
        "environments/prod.yaml:4: defaults.rollout.bakee: unknown key 'bakee' "
        "(did you mean 'bake'?)"
    ) in result.stdout
    (repo / "environments" / "prod.yaml").write_text(VALID)
    result = subprocess.run(
        [str(reconciler), "validate", str(repo)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok: 1 environment(s), 2 group(s), 3 host(s)" in result.stdout


def test_shipped_example_is_valid():
    example = Path(__file__).resolve().parents[2] / "desired-state-example"
    result = wiring.load_repository(example)
    assert result.problems == ()
    assert set(result.state.environments) == {"production", "staging"}


def test_reading_inventories_leaves_the_process_environment_alone(repo, monkeypatch):
    # child processes (ansible-runner, ansible-lint) inherit os.environ: no settings may leak
    for name in ("ANSIBLE_INVENTORY_UNPARSED_FAILED", "ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED"):
        monkeypatch.delenv(name, raising=False)
    before = dict(os.environ)
    assert problems(repo, VALID) == []
    assert dict(os.environ) == before
