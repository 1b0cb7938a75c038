"""Each limit of ``desired.reading`` in-process, with the defaults and exact ``file:line``."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.desired import edits, loading
from reconciler.settings import LimitsSettings
from tests.hostile.builder import ENV_FILE, VALID, VALID_LINES, alias_bomb
from tests.hostile.conftest import load

DEFAULTS = LimitsSettings()


def problems(repo: Path, data: bytes | str, limits: LimitsSettings | None = None) -> list[str]:
    path = repo / ENV_FILE
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    result = load(repo, limits)
    assert (result.state is None) == bool(result.problems)
    return [str(p) for p in result.problems]


def test_the_valid_file_loads(repo):
    assert problems(repo, VALID) == []


def test_defaults():
    assert DEFAULTS.max_file_bytes == 2 * 2**20
    assert DEFAULTS.max_repository_bytes == 128 * 2**20
    assert (DEFAULTS.max_depth, DEFAULTS.max_nodes) == (32, 20_000)


def test_the_alias_bomb_is_refused_at_its_first_anchor(repo):
    bomb = alias_bomb()
    assert len(bomb) - len(VALID) < 700
    assert problems(repo, bomb) == [
        f"{ENV_FILE}:{VALID_LINES + 1}: YAML anchor &a0 is not allowed; environment files "
        "share settings through 'defaults', not anchors"
    ]


@pytest.mark.parametrize(
    "extra, message",
    [
        ("x: *nowhere\n", "YAML alias *nowhere is not allowed"),
        ("<<: *base\n", "YAML alias *base is not allowed"),
        ("x: &one 1\n", "YAML anchor &one is not allowed"),
        ("? &k key\n: 1\n", "YAML anchor &k is not allowed"),
    ],
)
def test_every_anchor_and_alias_is_refused(repo, extra, message):
    (found,) = problems(repo, VALID + extra)
    assert found.startswith(f"{ENV_FILE}:{VALID_LINES + 1}: {message}")


def test_nesting_deeper_than_the_limit_is_refused_before_recursing(repo):
    deep = VALID + "deep: " + "[" * 100_000 + "]" * 100_000 + "\n"
    assert problems(repo, deep) == [
        f"{ENV_FILE}:{VALID_LINES + 1}: nested more than 32 levels deep (limits.max_depth)"
    ]
    block = VALID + "".join(f"{'  ' * i}k{i}:\n" for i in range(40))
    (found,) = problems(repo, block)
    assert found.startswith(f"{ENV_FILE}:{VALID_LINES + 32}: nested more than 32 levels deep")
    assert problems(repo, deep, LimitsSettings(max_depth=100))[0].endswith(
        "nested more than 100 levels deep (limits.max_depth)"
    )


def test_a_document_of_more_nodes_than_the_limit_is_refused(repo):
    many = VALID + "".join(f"k{i}: 1\n" for i in range(15_000))
    nodes_before = 2 * 3 + 2 * 4 + 2 * 4  # the valid document's keys and values, roughly
    (found,) = problems(repo, many)
    line = int(found.split(":")[1])
    assert abs(line - (VALID_LINES + (20_000 - nodes_before) // 2)) < 10
    assert found.endswith(": more than 20000 YAML nodes (limits.max_nodes)")
    assert problems(repo, many, LimitsSettings(max_nodes=40_000))[0].endswith(
        "unknown key 'k0' (allowed: environment, inventory, defaults, groups)"
    )


def test_a_file_over_the_default_size_is_refused_unread(repo):
    huge = VALID + "# padding\n" * 300_000
    assert problems(repo, huge) == [
        f"{ENV_FILE}:1: file is {len(huge)} bytes, more than the 2097152 bytes allowed "
        "(limits.max_file_bytes)"
    ]


def test_nul_and_non_utf8_bytes_are_refused_on_their_line(repo):
    nul = VALID.replace('shop: "1.0.0"', 'shop: "1.0\x00.0"').encode()
    line = VALID.splitlines().index('      shop: "1.0.0"') + 1
    assert problems(repo, nul) == [
        f"{ENV_FILE}:{line}: a NUL byte: environment files are UTF-8 text"
    ]
    latin = VALID.encode() + b"# caf\xe9\n"
    assert problems(repo, latin) == [
        f"{ENV_FILE}:{VALID_LINES + 1}: not UTF-8 text: byte 0xe9 at offset {len(VALID) + 5}"
    ]
    utf16 = VALID.encode("utf-16")
    assert problems(repo, utf16)[0].startswith(f"{ENV_FILE}:1: a NUL byte")
    assert problems(repo, b"\xef\xbb\xbf" + VALID.encode()) == [], "a UTF-8 BOM is fine"


def test_other_yaml_failures_are_problems_with_lines(repo):
    assert problems(repo, VALID + "x: \x07\n") == [
        f"{ENV_FILE}:{VALID_LINES + 1}: invalid YAML: U+0007 is not allowed "
        "(special characters are not allowed)"
    ]
    (found,) = problems(repo, VALID + "n: " + "9" * 5000 + "\n")
    assert found.startswith(f"{ENV_FILE}:1: invalid YAML: ValueError: Exceeds the limit")
    (found,) = problems(repo, VALID + "---\nenvironment: prod\n")
    assert found.startswith(f"{ENV_FILE}:{VALID_LINES + 1}: invalid YAML")
    assert problems(repo, "[1, 2]\n") == [f"{ENV_FILE}:1: an environment file must be a mapping"]


def test_the_repository_size_is_checked_before_anything_is_parsed(repo):
    (repo / ENV_FILE).write_text("environment: [unparsed\n")
    (repo / "files").mkdir()
    (repo / "files" / "big.bin").write_bytes(b"\0" * 200_000)
    (repo / "files" / "small.bin").write_bytes(b"\0" * 1000)
    (repo / ".git").mkdir()  # a work tree's own .git is not part of the repository
    (repo / ".git" / "pack").write_bytes(b"\0" * 500_000)
    result = load(repo, LimitsSettings(max_repository_bytes=100_000))
    (problem,) = result.problems
    total = 200_000 + 1000 + len("environment: [unparsed\n") + len("all: {}\n")
    assert str(problem) == (
        f".:1: the repository's files add up to {total} bytes, more than the 100000 bytes "
        "allowed (limits.max_repository_bytes); the largest: files/big.bin (200000 bytes), "
        "files/small.bin (1000 bytes), environments/prod.yaml (23 bytes)"
    )


def test_files_an_environment_references_are_size_checked_before_the_inventory_is_read(repo):
    limits = LimitsSettings(max_file_bytes=4096)
    (repo / "inventories" / "prod.yml").write_text("# x\n" * 2000)
    (repo / "inventories" / "group_vars").mkdir()
    (repo / "inventories" / "group_vars" / "web.yml").write_text("# y\n" * 2000)
    (repo / "playbooks").mkdir()
    (repo / "playbooks" / "site.yml").write_text("# z\n" * 2000)
    text = VALID.replace("defaults:\n", "defaults:\n  playbook: playbooks/site.yml\n")
    assert problems(repo, text, limits) == [
        f"{name}:1: file is 8000 bytes, more than the 4096 bytes allowed (limits.max_file_bytes)"
        for name in ("inventories/group_vars/web.yml", "inventories/prod.yml", "playbooks/site.yml")
    ]


def test_problems_are_capped_and_rendered_terminal_safe(repo):
    many = VALID + "".join(f"unknown{i}: 1\n" for i in range(500))
    found = problems(repo, many)
    assert len(found) == loading.MAX_PROBLEMS
    assert found[-1].endswith(": ... and 401 more problems not shown")
    hostile = VALID + '? "\\e[31m' + "v" * 100_000 + '\\u202e"\n: 1\n'
    (shown,) = problems(repo, hostile)
    assert "\x1b" not in shown and "\u202e" not in shown and "\\x1b[31m" in shown
    assert len(shown) < 400
    version = VALID.replace('"1.0.0"', '"' + "1" * 100_000 + '"', 1)
    (shown,) = problems(repo, version)
    assert "…[+99936 chars]" in shown and len(shown) < 400


def test_the_loader_never_raises_for_an_exception_of_the_inventory_reader(repo):
    from reconciler.desired import loading as module

    def exploding(path: Path, *, root: Path, environment: str):
        raise RuntimeError("\x1b[2Jboom")

    (repo / ENV_FILE).write_text(VALID)
    result = module.load_repository(repo, inventories=exploding)
    assert [str(p) for p in result.problems] == [
        f"{ENV_FILE}:1: cannot validate: RuntimeError: \\x1b[2Jboom"
    ]


@pytest.mark.parametrize(
    "extra",
    [
        "bomb",
        "deep: " + "[" * 5000 + "]" * 5000 + "\n",
        "n: " + "9" * 5000 + "\n",
        "# padding\n" * 250_000,
    ],
    ids=["alias bomb", "deep nesting", "huge integer", "huge file"],
)
def test_edits_of_a_hostile_commit_fail_cleanly_and_never_expand_it(extra):
    """The Git writer edits and compares texts of any commit of the branch, rejected ones too."""
    text = alias_bomb().decode() if extra == "bomb" else VALID + extra
    with pytest.raises(edits.EditError):
        edits.group_versions(text, "web")
    with pytest.raises(edits.EditError):
        edits.set_group_versions(text, "web", {"shop": "2.0.0"})
    assert not edits.only_group_versions_changed(text, VALID, "web")
    assert not edits.only_group_versions_changed(VALID, text, "web")
