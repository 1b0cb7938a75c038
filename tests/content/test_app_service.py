"""The release bookkeeping of ``app-service activate`` (roles/deploy_app/files/app-service).

Run directly, without Ansible, with ``--manager=systemd`` so that no process is started: the
completion marker, the current/previous links, pruning, ``--prepare`` and ``--check``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.content.conftest import REPO_ROOT

HELPER = REPO_ROOT / "roles" / "deploy_app" / "files" / "app-service"


def activate(root: Path, version: str, *args: str) -> tuple[int, dict, str]:
    proc = subprocess.run(
        [
            sys.executable,
            str(HELPER),
            "activate",
            "--name=shop",
            f"--version={version}",
            f"--app-root={root}",
            "--manager=systemd",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    answer = json.loads(proc.stdout) if proc.stdout.startswith("{") else {}
    return proc.returncode, answer, proc.stderr


def unpack(root: Path, version: str) -> None:
    """What the role's unarchive leaves: a release directory with an executable start."""
    release = root / "releases" / version
    release.mkdir(parents=True, exist_ok=True)
    (release / "start").write_text("#!/bin/sh\nexec sleep 60\n")
    (release / "start").chmod(0o755)


def release(root: Path, version: str, mtime: int | None = None) -> None:
    """A complete release: unpacked and marked (marker mtime = order of unpacking)."""
    unpack(root, version)
    marker = root / "releases" / version / ".reconciler-release.json"
    marker.write_text("{}\n")
    if mtime is not None:
        os.utime(marker, (mtime, mtime))


def link(root: Path, name: str) -> str | None:
    path = root / name
    return os.readlink(path) if path.is_symlink() else None


def releases(root: Path) -> set[str]:
    return {p.name for p in (root / "releases").iterdir()}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "shop"


def test_prepare_creates_an_empty_release_then_activate_marks_and_switches(root: Path) -> None:
    rc, answer, err = activate(root, "1.0", "--prepare")
    assert rc == 0, err
    assert answer["unpack"] is True and answer["changed"] is True
    assert answer["manager"] == "systemd"
    assert list((root / "releases" / "1.0").iterdir()) == []
    assert link(root, "current") is None

    unpack(root, "1.0")
    download = root / ".download-shop-1.0.tar.gz"
    download.write_bytes(b"artifact")
    rc, answer, err = activate(
        root, "1.0", "--environment=prod", "--commit=--abc", f"--download={download}"
    )
    assert rc == 0, err
    assert not download.exists()
    assert answer["changed"] and answer["switched"] and answer["restart"]
    assert link(root, "current") == "releases/1.0"
    assert link(root, "previous") is None
    marker = json.loads((root / "releases" / "1.0" / ".reconciler-release.json").read_text())
    assert marker == {
        "app": "shop",
        "version": "1.0",
        "environment": "prod",
        "group": "",
        "commit": "--abc",
        "rollout_id": "",
    }

    # Complete and current: --prepare activates it right away, and there is nothing to do.
    rc, answer, err = activate(root, "1.0", "--prepare")
    assert rc == 0, err
    assert answer["changed"] is False and answer["unpack"] is False
    assert answer["restart"] is False


def test_prepare_removes_a_partial_unpack(root: Path) -> None:
    unpack(root, "1.0")
    (root / "releases" / "1.0" / "half-written").write_text("junk")
    rc, answer, err = activate(root, "1.0", "--prepare")
    assert rc == 0, err
    assert answer["unpack"] is True
    assert list((root / "releases" / "1.0").iterdir()) == []


def test_an_artifact_without_an_executable_start_is_refused(root: Path) -> None:
    (root / "releases" / "1.0").mkdir(parents=True)
    (root / "releases" / "1.0" / "start").write_text("not executable")
    rc, answer, err = activate(root, "1.0")
    assert rc == 1
    assert "shop-1.0.tar.gz has no executable 'start' at its root" in err
    assert answer["failed"] is True
    assert not (root / "releases" / "1.0" / ".reconciler-release.json").exists()
    assert link(root, "current") is None


def test_switch_keeps_previous_and_pruning_removes_partial_unpacks_first(root: Path) -> None:
    release(root, "1", mtime=1_000)
    release(root, "2", mtime=2_000)
    unpack(root, "3")  # partial: no marker
    release(root, "4", mtime=3_000)
    (root / "releases" / "junk file").write_text("not a release")
    os.symlink("releases/4", root / "current")
    os.symlink("releases/2", root / "previous")
    unpack(root, "5")

    # keep 3: current (5) and previous (4), then the newest other complete release (2); the
    # partial unpack 3 goes before the older complete 1.
    rc, answer, err = activate(root, "5", "--keep=3", "--check")
    assert rc == 0, err
    assert answer["changed"] is True
    assert answer["pruned"] == ["1", "3"]
    assert releases(root) == {"1", "2", "3", "4", "5", "junk file"}
    assert link(root, "current") == "releases/4"
    assert not (root / "releases" / "5" / ".reconciler-release.json").exists()

    rc, answer, err = activate(root, "5", "--keep=3")
    assert rc == 0, err
    assert answer["pruned"] == ["1", "3"]
    assert releases(root) == {"2", "4", "5", "junk file"}
    assert link(root, "current") == "releases/5"
    assert link(root, "previous") == "releases/4"

    # Rollback with keep 1: current and previous always survive.
    rc, answer, err = activate(root, "4", "--keep=1")
    assert rc == 0, err
    assert answer["switched"] is True
    assert releases(root) == {"4", "5", "junk file"}
    assert link(root, "current") == "releases/4"
    assert link(root, "previous") == "releases/5"


def test_record_installs_the_executable_fact_only_when_it_changes(tmp_path: Path) -> None:
    fact = tmp_path / "facts.d" / "reconciler_shop.fact"
    argv = [
        sys.executable,
        str(HELPER),
        "record",
        "--name=shop",
        f"--app-root={tmp_path}/shop",
        "--manager=pidfile",
        f"--fact-file={fact}",
    ]
    answers = []
    for extra in (["--check"], [], [], ["--version=2.0"]):
        proc = subprocess.run(argv + extra, capture_output=True, text=True, timeout=30, check=True)
        answers.append(json.loads(proc.stdout))
        if extra == ["--check"]:
            assert not fact.parent.exists()
    # The wrapper does not depend on the version: a later deploy leaves it alone.
    assert [answer["changed"] for answer in answers] == [True, True, False, False]
    assert "fact" not in answers[0], "a check run reports no fact"
    assert fact.stat().st_mode & 0o777 == 0o755
    assert fact.parent.stat().st_mode & 0o777 == 0o755
    assert fact.read_text().startswith("#!/bin/sh\n")
    run = subprocess.run([str(fact)], capture_output=True, text=True, timeout=30, check=True)
    # record's answer carries what the fact file prints (the deploy's report of the host)
    assert all(answer["fact"] == json.loads(run.stdout) for answer in answers[1:])
    assert json.loads(run.stdout) == {
        "app": "shop",
        "manager": "pidfile",
        "version": None,
        "current": None,
        "release_dir": None,
        "running": False,
        "pid": None,
        "state": "stopped",
        "reason": f"shop is not running: no live process started by app-service in "
        f"{tmp_path}/shop/run/shop.pid",
    }
