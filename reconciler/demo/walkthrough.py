"""``reconciler demo``: the whole flow on this machine, with nothing to set up.

1. copies ``desired-state-example`` into a Git repository pushed to a local bare "remote";
2. builds the test app's artifacts and creates a local fleet (one deploy root per host);
3. validates, diffs, syncs (everything gets deployed), and shows what each host serves;
4. commits a version bump of ``shop`` in production, plans and syncs again;
5. prints status, history and a final diff (no drift), then stops the fleet's apps.

With ``ssh=True`` (``reconciler demo --ssh``) the hosts are real sshd instances on 127.0.1.N
(:class:`~reconciler.demo.ssh_fleet.SshFleet`), reached over SSH with host key checking on.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.rule import Rule
from rich.table import Table
from ruamel.yaml import YAML

from reconciler import content
from reconciler.desired.model import DesiredState, EnvironmentDesired, Host
from reconciler.service.wiring import load_repository
from reconciler.testing.fleet import LocalFleet, port_in_use, served_version
from reconciler.testing.ssh_fleet import SshFleet

EXAMPLE = content.root() / "desired-state-example"
BUMP = ("production", "web", "shop", "2.5.0")
SSH_FIRST_ADDRESS = 100  # demo hosts on 127.0.1.100 and up (the tests use 127.0.1.10 and up)


def _git(cwd: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "Demo Developer",
        "GIT_AUTHOR_EMAIL": "dev@example.invalid",
        "GIT_COMMITTER_NAME": "Demo Developer",
        "GIT_COMMITTER_EMAIL": "dev@example.invalid",
    }
    return subprocess.run(
        ["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True
    ).stdout.strip()


def _versions(root: Path) -> set[tuple[str, str]]:
    result = load_repository(root)
    if result.state is None:
        raise RuntimeError(
            "desired-state-example is invalid: " + "; ".join(map(str, result.problems))
        )
    return {
        (app, version)
        for env in result.state.environments.values()
        for group in env.groups.values()
        for app, version in group.apps.items()
    }


def _hosts_table(console: Console, root: Path, fleet: LocalFleet) -> None:
    result = load_repository(root)
    assert result.state is not None
    table = Table("environment", "group", "host", "app", "port", "serving (HTTP /healthz)")
    for env in result.state.environments.values():
        for group in env.groups.values():
            for host in group.hosts:
                for app in group.apps:
                    port = host.ports.get(app)
                    serving = served_version(port) if port else None
                    table.add_row(
                        env.name,
                        group.name,
                        host.name,
                        app,
                        str(port),
                        serving or "[red]nothing[/red]",
                    )
    console.print(table)


def _cli(console: Console, config: Path | None, *args: str) -> int:
    """Run ``reconciler ARGS`` as a user would (a new process); its output goes to ours."""
    console.print(Rule(f"[bold]reconciler {' '.join(args)}"))
    argv = [sys.executable, "-m", "reconciler"]
    if config is not None:
        argv += ["--config", str(config)]
    env = {**os.environ, "COLUMNS": str(console.width)}
    return subprocess.run([*argv, *args], env=env, check=False).returncode


def _ssh_fleet(root: Path, state: DesiredState) -> SshFleet:
    """One sshd host per host of the example's inventories (not started yet)."""
    names = dict.fromkeys(h.name for env in state.environments.values() for h in _hosts(env))
    return SshFleet(root, len(names), first_address=SSH_FIRST_ADDRESS, names=list(names))


def _hosts(env: EnvironmentDesired) -> list[Host]:
    return [h for g in env.groups.values() for h in g.hosts]


def _point_at_ssh_fleet(work: Path, state: DesiredState, fleet: SshFleet) -> None:
    """Rewrite the copied example for the SSH fleet: inventories that reach each host over
    SSH, and health gates that ask 127.0.0.1, where the test app listens on every host."""
    for env in state.environments.values():
        groups = {g.name: list(g.host_names) for g in env.groups.values()}
        apps = {h.name: next(iter(g.apps)) for g in env.groups.values() for h in g.hosts}
        fleet.write_inventory(work / env.inventory, groups, apps)
    for env_file in (work / "environments").glob("*.yaml"):
        env_file.write_text(env_file.read_text().replace("{host}", "127.0.0.1"))


def run(workdir: Path | None, keep: bool, console: Console, ssh: bool = False) -> int:
    started = time.monotonic()
    base = workdir or Path(tempfile.mkdtemp(prefix="reconciler-demo-"))
    base.mkdir(parents=True, exist_ok=True)
    work, remote = base / "desired-state", base / "remote.git"
    for stale in (work, remote, base / "state", base / "fleet"):
        shutil.rmtree(stale, ignore_errors=True)

    shutil.copytree(EXAMPLE, work)
    versions = _versions(work) | {(BUMP[2], BUMP[3])}
    result = load_repository(work)
    assert result.state is not None
    fleet: LocalFleet
    if ssh:
        fleet = _ssh_fleet(base / "fleet", result.state)
    else:
        fleet = LocalFleet(base / "fleet").create()
        os.environ.update(fleet.environ())
        busy = [p for p in range(18101, 18230) if port_in_use(p)]
        wanted = {
            port
            for env in result.state.environments.values()
            for h in _hosts(env)
            for port in h.ports.values()
        }
        if clash := sorted(wanted & set(busy)):
            console.print(
                f"[red]ports already in use: {clash}; stop what uses them and retry[/red]"
            )
            return 2
    for app, version in sorted(versions):
        fleet.build(app, version)

    config = base / "reconciler.yaml"
    settings: dict[str, object] = {
        "state_dir": str(base / "state"),
        "source": {"url": str(remote), "branch": "main"},
    }
    failures = 0
    try:
        if isinstance(fleet, SshFleet):
            fleet.start()
            _point_at_ssh_fleet(work, result.state, fleet)
            settings["execution"] = {"extra_envvars": fleet.ansible_envvars()}
            first, last = fleet.hosts[0].address, fleet.hosts[-1].address
            where = f"one sshd per host on {first}-{last.rsplit('.', 1)[1]}, host keys checked"
        else:
            where = "ansible_connection=local, one root per host"
        YAML().dump(settings, config)
        _git(base, "init", "--quiet", "--bare", "--initial-branch=main", str(remote))
        _git(work, "init", "--quiet", "--initial-branch=main")
        _git(work, "add", "-A")
        _git(work, "commit", "--quiet", "-m", "Initial desired state")
        _git(work, "remote", "add", "origin", str(remote))
        _git(work, "push", "--quiet", "origin", "main")
        console.print(
            f"demo directory: {base}\n  remote: {remote}\n  config: {config}\n"
            f"  fleet:  {fleet.hosts_dir} ({where})"
        )
        _cli(console, None, "validate", str(work))
        console.print("(nothing is deployed yet: everything drifts)")
        _cli(console, config, "diff")
        failures += _cli(console, config, "sync", "--once")
        _hosts_table(console, work, fleet)

        env_file = work / "environments" / f"{BUMP[0]}.yaml"
        text = env_file.read_text()
        env_file.write_text(text.replace('shop: "2.4.1"', f'shop: "{BUMP[3]}"', 1))
        _git(work, "commit", "--quiet", "-am", f"{BUMP[0]}: bump {BUMP[2]} to {BUMP[3]}")
        _git(work, "push", "--quiet", "origin", "main")
        console.print(Rule(f"[bold]git push: {BUMP[0]}/{BUMP[1]} {BUMP[2]} -> {BUMP[3]}"))
        _cli(console, config, "plan")
        failures += _cli(console, config, "sync", "--once")
        _hosts_table(console, work, fleet)
        _cli(console, config, "status")
        _cli(console, config, "history", "--limit", "10")
        failures += _cli(console, config, "diff")
    finally:
        if not keep:
            fleet.stop()
    console.print(Rule())
    verdict = "[green]converged[/green]" if not failures else "[red]did not converge[/red]"
    console.print(
        f"demo {verdict} in {time.monotonic() - started:.1f}s; files kept in {base}"
        + (f"; {'sshd and ' if ssh else ''}apps still running (--keep)" if keep else "")
    )
    return 0 if not failures else 1
