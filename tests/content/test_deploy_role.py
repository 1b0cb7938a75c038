"""The shipped deploy-app playbook and deploy_app role, run for real with ansible-playbook.

Two fleets of local-connection hosts:

- ``web`` (web1, web2; keep 2 releases) walks one app through a history:
  v1 -> v1 again -> v2 -> v3 -> v4 -> rollback to v3 -> check-mode runs. Each step is a
  module-scoped fixture that depends on the one before, so any single test can run alone.
  Host-specific builds (each host has its own artifact dir): web2's v2 dumps its environment
  before serving, web1's v3 is unhealthy.
- ``mixed`` gets one deploy of two apps where the main app crashes on ``bad`` and is fine on
  ``good``.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import http.server
import io
import json
import os
import shutil
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from reconciler.testing import testapp
from tests.content.conftest import BIN, REPO_ROOT, Fleet, Host, Run, http_get, make_fleet

pytestmark = pytest.mark.ansible

V1, V2, V3, V4 = "1.0.0", "2.0.0", "3.0.0", "4.0.0"


def assert_ok(run: Run, hosts: list[str]) -> None:
    assert run.rc == 0, run.output
    assert sorted(run.recap) == sorted(hosts), run.output
    for host in hosts:
        assert run.recap[host]["failed"] == 0, run.output
        assert run.recap[host]["unreachable"] == 0, run.output


def assert_serves(fleet: Fleet, host: str, version: str, healthy: bool = True) -> None:
    port = fleet.hosts[host].port
    status, body = http_get(port, "/healthz")
    assert status == (200 if healthy else 500), body
    assert json.loads(body) == {
        "app": "shop",
        "version": version,
        "status": "ok" if healthy else "unhealthy",
    }
    assert http_get(port, "/version") == (200, version)


_ENV_DUMP_START = """#!/usr/bin/env python3
import json, os
raw = open("/proc/self/environ", "rb").read().decode()
env = dict(item.split("=", 1) for item in raw.split("\\0") if item)
with open("env.json", "w") as fh:
    json.dump({"env": env, "cwd": os.getcwd()}, fh)
os.execve("./start-real", ["./start-real"], env)
"""


def build_env_dump_artifact(dest_dir: Path, scratch: Path, app: str, version: str) -> Path:
    """An ok artifact whose ``start`` first writes its environment and cwd to env.json."""
    source = testapp.build_artifact(scratch, app, version)
    raw = io.BytesIO()
    with tarfile.open(source) as original, tarfile.open(fileobj=raw, mode="w") as tar:
        for member in original.getmembers():
            data = original.extractfile(member)
            if member.name == "start":
                member.name = "start-real"
            tar.addfile(member, data)
        script = _ENV_DUMP_START.encode()
        info = tarfile.TarInfo("start")
        info.size, info.mode = len(script), 0o755
        tar.addfile(info, io.BytesIO(script))
    dest = dest_dir / source.name
    dest.write_bytes(gzip.compress(raw.getvalue()))
    return dest


# --- the web fleet: a history of deploys --------------------------------------------------


@pytest.fixture(scope="module")
def web(fleet: Fleet, tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    builds = tmp_path_factory.mktemp("builds")
    artifacts = [testapp.build_artifact(builds, "shop", v) for v in (V1, V2, V3, V4)]
    for name in ("web1", "web2"):
        host = fleet.add_host(
            name, deploy_app_keep_releases=2, deploy_app_service_manager="pidfile"
        )
        for artifact in artifacts:
            shutil.copy(artifact, host.artifact_dir)
    testapp.build_artifact(fleet.hosts["web1"].artifact_dir, "shop", V3, "unhealthy")
    build_env_dump_artifact(fleet.hosts["web2"].artifact_dir, builds / "scratch", "shop", V2)
    return fleet


@pytest.fixture(scope="module")
def first(web: Fleet) -> Run:
    return web.run({"shop": V1})


@pytest.fixture(scope="module")
def again(web: Fleet, first: Run) -> tuple[Run, dict[str, int | None]]:
    pids = {name: host.pid() for name, host in web.hosts.items()}
    return web.run({"shop": V1}), pids


@pytest.fixture(scope="module")
def upgrade(web: Fleet, again: object) -> tuple[Run, dict[str, int | None]]:
    pids = {name: host.pid() for name, host in web.hosts.items()}
    return web.run({"shop": V2}), pids


@pytest.fixture(scope="module")
def degraded(web: Fleet, upgrade: object) -> tuple[Run, dict[str, tuple[int, str]]]:
    """v3, unhealthy on web1; returns the run and each host's /healthz answer right after."""
    run = web.run({"shop": V3})
    return run, {name: http_get(host.port, "/healthz") for name, host in web.hosts.items()}


@pytest.fixture(scope="module")
def pruned(web: Fleet, degraded: object) -> Run:
    return web.run({"shop": V4})


@pytest.fixture(scope="module")
def rollback(web: Fleet, pruned: object) -> Run:
    # Simulate a crash in the middle of an earlier unpack of v3 on web1: no completion
    # marker and a missing file. The rollback must unpack v3 again from scratch.
    release = web.hosts["web1"].app_root() / "releases" / V3
    (release / ".reconciler-release.json").unlink()
    (release / "start").unlink()
    (release / "half-written").write_text("junk")
    return web.run({"shop": V3}, deploy_app_keep_releases=1)


def host_tree(host: Host) -> dict[str, tuple[int, int, str | None]]:
    """Every path under the host's base and fact dir: mode, mtime and content (or link)."""
    tree = {}
    for top in (host.base, host.fact_dir):
        for directory, dirs, files in os.walk(top):
            for name in dirs + files:
                path = Path(directory, name)
                info = path.lstat()
                if path.is_symlink():
                    content: str | None = os.readlink(path)
                elif path.is_file():
                    content = hashlib.sha256(path.read_bytes()).hexdigest()
                else:
                    content = None
                tree[str(path)] = (info.st_mode, info.st_mtime_ns, content)
    return tree


@pytest.fixture(scope="module")
def checked(web: Fleet, rollback: object) -> tuple[Run, Run, dict, dict]:
    """Check-mode runs after the rollback: to the pruned v1, then to the current v3."""
    before = {name: host_tree(host) for name, host in web.hosts.items()}
    to_v1 = web.run({"shop": V1}, check=True)
    to_v3 = web.run({"shop": V3}, check=True)
    after = {name: host_tree(host) for name, host in web.hosts.items()}
    return to_v1, to_v3, before, after


def test_first_deploy_serves_the_version_on_every_host(web: Fleet, first: Run) -> None:
    assert_ok(first, ["web1", "web2"])
    for name, host in web.hosts.items():
        assert host.link("current") == f"releases/{V1}"
        assert host.link("previous") is None
        assert (host.app_root() / "current" / "READY").is_file()
        assert_serves(web, name, V1)


def test_fact_file_reports_the_running_release(web: Fleet, first: Run) -> None:
    assert_ok(first, ["web1", "web2"])
    for host in web.hosts.values():
        assert host.fact_file().stat().st_mode & 0o777 == 0o755  # an executable fact
        assert host.fact() == {
            "app": "shop",
            "manager": "pidfile",
            "version": V1,
            "current": V1,
            "release_dir": str(host.app_root() / "releases" / V1),
            "running": True,
            "pid": host.pid(),
            "running_version": V1,
            "state": "running",
        }
        marker = json.loads(
            (host.app_root() / "releases" / V1 / ".reconciler-release.json").read_text()
        )
        assert marker["environment"] == "test"
        assert marker["rollout_id"] == "rollout-1"


def test_second_identical_run_changes_nothing(web: Fleet, again: tuple[Run, dict]) -> None:
    run, pids_before = again
    assert_ok(run, ["web1", "web2"])
    assert {host: stats["changed"] for host, stats in run.recap.items()} == {"web1": 0, "web2": 0}
    for name, host in web.hosts.items():
        assert host.pid() == pids_before[name]
        assert_serves(web, name, V1)


def test_upgrade_switches_current_keeps_previous_and_restarts(
    web: Fleet, upgrade: tuple[Run, dict]
) -> None:
    run, pids_before = upgrade
    assert_ok(run, ["web1", "web2"])
    for name, host in web.hosts.items():
        assert host.link("current") == f"releases/{V2}"
        assert host.link("previous") == f"releases/{V1}"
        assert host.pid() != pids_before[name]
        assert_serves(web, name, V2)
        assert host.fact()["version"] == V2


def test_the_app_gets_a_clean_environment_and_runs_in_its_release(
    web: Fleet, upgrade: tuple[Run, dict]
) -> None:
    assert_ok(upgrade[0], ["web1", "web2"])
    web2 = web.hosts["web2"]
    dumped = json.loads((web2.app_root() / "releases" / V2 / "env.json").read_text())
    env = dumped["env"]
    assert set(env) == {"PATH", "HOME", "PORT", "APP_NAME", "APP_VERSION"}
    assert env["PORT"] == str(web2.port)
    assert (env["APP_NAME"], env["APP_VERSION"]) == ("shop", V2)
    assert dumped["cwd"] == str(web2.app_root() / "releases" / V2)


def test_an_unhealthy_version_still_deploys(web: Fleet, degraded: tuple[Run, dict]) -> None:
    run, health = degraded
    assert_ok(run, ["web1", "web2"])
    assert health["web1"][0] == 500
    assert json.loads(health["web1"][1])["version"] == V3
    assert health["web2"][0] == 200
    assert web.hosts["web1"].fact()["version"] == V3


def test_pruning_keeps_current_and_previous(web: Fleet, pruned: Run) -> None:
    assert_ok(pruned, ["web1", "web2"])
    for name, host in web.hosts.items():
        assert host.releases() == {V3, V4}
        assert host.link("current") == f"releases/{V4}"
        assert host.link("previous") == f"releases/{V3}"
        assert_serves(web, name, V4)


def test_rollback_redoes_a_partial_unpack_and_never_prunes_current_or_previous(
    web: Fleet, rollback: Run
) -> None:
    assert_ok(rollback, ["web1", "web2"])
    for name, host in web.hosts.items():
        # keep=1 is below what must survive: current (v3) and previous (v4) both stay.
        assert host.releases() == {V3, V4}
        assert host.link("current") == f"releases/{V3}"
        assert host.link("previous") == f"releases/{V4}"
        assert_serves(web, name, V3, healthy=name != "web1")
    redone = web.hosts["web1"].app_root() / "releases" / V3
    assert not (redone / "half-written").exists()
    assert (redone / ".reconciler-release.json").is_file()


def test_check_mode_reports_changes_and_changes_nothing(
    web: Fleet, checked: tuple[Run, Run, dict, dict]
) -> None:
    to_v1, to_v3, before, after = checked
    assert_ok(to_v1, ["web1", "web2"])
    assert_ok(to_v3, ["web1", "web2"])
    assert all(stats["changed"] > 0 for stats in to_v1.recap.values()), to_v1.output
    assert {host: stats["changed"] for host, stats in to_v3.recap.items()} == {
        "web1": 0,
        "web2": 0,
    }
    assert after == before
    for name in web.hosts:
        assert_serves(web, name, V3, healthy=name != "web1")


def test_a_version_with_template_characters_is_rejected(web: Fleet) -> None:
    canary = web.root / "template-was-evaluated"
    version = "{{ lookup('ansible.builtin.pipe', 'touch " + str(canary) + "') }}"
    run = web.run({"shop": version})
    assert run.rc == 2, run.output
    assert "invalid app/version" in run.output
    assert not canary.exists()


# --- the mixed fleet: one failing host ---------------------------------------------------


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def artifact_server(directory: Path) -> Iterator[str]:
    """Serve ``directory`` over HTTP on loopback; yield the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}/"
        finally:
            server.shutdown()
            thread.join()


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Fleet, Future[Run]]]:
    """``bad`` unpacks from the controller, ``good`` downloads from deploy_app_artifact_url.

    The deploy runs in a background thread (see the autouse fixture below).
    """
    root = tmp_path_factory.mktemp("mixed")
    served = root / "served"
    with (
        make_fleet(root) as fleet,
        artifact_server(served) as url,
        ThreadPoolExecutor(max_workers=1) as pool,
    ):
        bad = fleet.add_host("bad")
        fleet.add_host("good", deploy_app_artifact_url=url)  # its artifact dir stays empty
        testapp.build_artifact(bad.artifact_dir, "shop", V3, "crash")
        testapp.build_artifact(bad.artifact_dir, "shop-worker", V1)
        testapp.build_artifact(served, "shop", V3)
        testapp.build_artifact(served, "shop-worker", V1)
        yield fleet, pool.submit(fleet.run, {"shop": V3, "shop-worker": V1})


@pytest.fixture(scope="module", autouse=True)
def _deploy_mixed_while_the_web_history_plays(mixed: tuple[Fleet, Future[Run]]) -> None:
    """Start the mixed fleet's deploy first: it overlaps the web fleet's runs (2 cores)."""


def test_a_crashing_app_fails_its_host_with_the_log_tail(
    mixed: tuple[Fleet, Future[Run]],
) -> None:
    fleet, future = mixed
    run = future.result()
    assert run.rc == 2, run.output
    assert run.recap["bad"]["failed"] == 1, run.output
    assert run.recap["good"]["failed"] == 0, run.output
    assert "shop 3.0.0 failed to start: exited with status 1" in run.output
    assert "testapp shop 3.0.0: simulated crash on start" in run.output
    bad = fleet.hosts["bad"]
    assert bad.pid() is None
    assert not (bad.fact_dir / "reconciler_shop.fact").exists()
    # The failed host stopped there: the second app was not deployed on it.
    assert not bad.app_root("shop-worker").exists()
    assert_serves(fleet, "good", V3)
    # good downloaded its artifacts and cleaned up after unpacking.
    assert not list(fleet.hosts["good"].app_root().glob(".download-*"))


def test_an_app_without_a_port_runs_as_a_worker(mixed: tuple[Fleet, Future[Run]]) -> None:
    fleet, future = mixed
    assert future.result().recap["good"]["failed"] == 0
    good = fleet.hosts["good"]
    worker = good.fact("shop-worker")
    assert {key: worker[key] for key in ("app", "version", "release_dir", "running")} == {
        "app": "shop-worker",
        "version": V1,
        "release_dir": str(good.app_root("shop-worker") / "releases" / V1),
        "running": True,
    }
    assert worker["pid"] == good.pid("shop-worker")
    assert (good.app_root("shop-worker") / "current" / "READY").is_file()
    assert good.pid("shop-worker") not in (None, good.pid("shop"))


# --- content quality and the artifact builder ----------------------------------------------


def test_build_artifact_is_deterministic(tmp_path: Path) -> None:
    first = testapp.build_artifact(tmp_path / "a", "shop", V1)
    second = testapp.build_artifact(tmp_path / "b", "shop", V1)
    assert first.read_bytes() == second.read_bytes()
    with tarfile.open(first) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert sorted(members) == ["READY", "VERSION", "start"]
    assert members["start"].mode == 0o755
    for behaviour in ("unhealthy", "crash"):
        with tarfile.open(
            testapp.build_artifact(tmp_path / behaviour, "shop", V1, behaviour)
        ) as tar:
            assert "READY" not in tar.getnames()
    with pytest.raises(ValueError):
        testapp.build_artifact(tmp_path, "shop", "{{ 1 }}")


def test_content_passes_ansible_lint_production() -> None:
    lint = BIN / "ansible-lint"
    if not lint.exists():
        found = shutil.which("ansible-lint")
        if found is None:
            pytest.skip("ansible-lint is not installed")
        lint = Path(found)
    proc = subprocess.run(
        [
            str(lint),
            "--offline",
            "--nocolor",
            "--profile",
            "production",
            "playbooks/deploy-app.yml",
            "playbooks/reconciler-observe.yml",
            "playbooks/reconciler-observe-command.yml",
            "roles/deploy_app",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
