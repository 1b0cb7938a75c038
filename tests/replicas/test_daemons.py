"""Three real daemons (``reconciler run``) sharing one PostgreSQL and six environments of the
local fleet: each environment owned by exactly one replica, all converge; a sync request
sent to a replica that does not own the environment reaches its owner (LISTEN/NOTIFY); the
owner killed with SIGKILL during a step's bake: another replica takes the lease over,
resumes the interrupted rollout through the journal and converges it, nothing left
unfinished, no host on an unknown version; the owner of another environment stopped with
SIGSTOP during a bake past its lease: the survivor takes over and converges it, and after
SIGCONT the paused replica writes nothing (fenced) and stands down.

Waits poll observable state (the database, the fleet, the API) with deadlines; no sleeps.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from ruamel.yaml import YAML

from reconciler.record.postgresql import PostgresStateStore
from reconciler.states import RolloutState
from reconciler.testing.fleet import free_port, served_version, write_inventory
from tests.daemon.conftest import TOKEN, RunningDaemon, wait_for, write_config
from tests.end_to_end.conftest import Setup
from tests.gitrepo import GitRemote

ENVIRONMENTS = [f"env-{n}" for n in range(6)]
REPLICAS = ["replica-a", "replica-b", "replica-c"]


def environment_yaml(name: str, version: str, rollout: str = "{canary: [100]}") -> str:
    return (
        f"environment: {name}\n"
        f"inventory: inventories/{name}.yml\n"
        "defaults:\n"
        "  timeout: 120s\n"
        f"  rollout: {rollout}\n"
        "groups:\n"
        "  web:\n"
        "    apps:\n"
        f'      shop: "{version}"\n'
    )


@pytest.fixture
def fleet_of_six(tmp_path, fleet) -> tuple[Setup, dict[str, list[str]]]:
    """Six environments of two hosts each on one bare remote."""
    ports: dict[str, dict[str, int]] = {}
    hosts: dict[str, list[str]] = {}
    remote = GitRemote(tmp_path / "git")
    for name in ENVIRONMENTS:
        hosts[name] = [f"{name}-web-{i}" for i in (1, 2)]
        env_ports = {host: {"shop": free_port()} for host in hosts[name]}
        ports.update(env_ports)
        write_inventory(
            remote.work / "inventories" / f"{name}.yml", {"web": hosts[name]}, env_ports
        )
    for version in ("1.0.0", "1.1.0"):
        fleet.build("shop", version)
    config = tmp_path / "reconciler.yaml"
    YAML().dump({"state_dir": str(tmp_path / "state"), "source": {"url": remote.url}}, config)
    groups = {"web": [h for name in ENVIRONMENTS for h in hosts[name]]}
    return Setup(remote, fleet, config, ports, groups), hosts


def replica(setup: Setup, tmp_path: Path, name: str, url: str) -> RunningDaemon:
    directory = tmp_path / name
    directory.mkdir()
    own = Setup(setup.remote, setup.fleet, directory / "reconciler.yaml", setup.ports, setup.groups)
    own.config.write_text(setup.config.read_text())
    config = write_config(
        own,
        state={"url": url, "replica": name, "lease_ttl": "3s", "connect_timeout": "5s"},
    )
    document: dict[str, Any] = YAML().load(config.read_text())
    document["state_dir"] = str(directory / "state")
    with config.open("w") as handle:
        YAML().dump(document, handle)
    port = document["api"]["port"]
    return RunningDaemon(own, config, f"http://127.0.0.1:{port}", directory / "daemon.log")


def holders(url: str) -> dict[str, str]:
    with psycopg.connect(url, autocommit=True) as db:
        return dict(
            db.execute(
                "SELECT environment, holder FROM leases WHERE expires_at > clock_timestamp()"
            ).fetchall()
        )


def served(setup: Setup, hosts: list[str]) -> set[str | None]:
    return {served_version(setup.port(host)) for host in hosts}


def test_three_replicas_share_six_environments_and_survive_the_loss_of_an_owner(
    fleet_of_six, tmp_path, postgres_url
):
    setup, hosts = fleet_of_six
    setup.remote.commit(
        "initial",
        {f"environments/{n}.yaml": environment_yaml(n, "1.0.0") for n in ENVIRONMENTS},
    )
    daemons = {name: replica(setup, tmp_path, name, postgres_url) for name in REPLICAS}
    try:
        for daemon in daemons.values():
            daemon.start()
        wait_for(lambda: sorted(holders(postgres_url)) == ENVIRONMENTS, 60, "every lease held")
        owners = holders(postgres_url)
        assert set(owners.values()) <= set(REPLICAS)
        wait_for(
            lambda: all(served(setup, hosts[n]) == {"1.0.0"} for n in ENVIRONMENTS),
            240,
            "all six environments converged",
        )
        for name, daemon in daemons.items():  # each exports the environments it owns
            text = daemon.get("/metrics").text
            mine = {e for e, r in holders(postgres_url).items() if r == name}
            for environment in ENVIRONMENTS:
                line = (
                    f'reconciler_environment_owner{{environment="{environment}",'
                    f'replica="{name}"}} 1.0'
                )
                assert (line in text) == (environment in mine), (name, environment)
                gauge = f'reconciler_group_hosts{{environment="{environment}",group="web"}} 2.0'
                assert (gauge in text) == (environment in mine), "exported by the owner only"

        # any replica's status shows the whole fleet and who owns what: a non-owner of env-0
        # names the holder of every lease, as the leases table and the owners' metrics say
        leases = holders(postgres_url)
        asked = next(r for r in REPLICAS if r != leases["env-0"])
        fleet = {e["name"]: e for e in daemons[asked].status()["environments"]}
        assert sorted(fleet) == ENVIRONMENTS
        for environment in ENVIRONMENTS:
            owner = fleet[environment]["owner"]
            assert owner is not None and owner["replica"] == leases[environment], environment
            assert owner["fencing_token"] > 0 and owner["expires_at"] > 0

        # a sync request to a replica that does not own env-0 reaches its owner
        target = "env-0"
        owner = holders(postgres_url)[target]
        other = next(r for r in REPLICAS if r != owner)
        setup.remote.commit(
            "bump env-0 with a bake",
            {
                f"environments/{target}.yaml": environment_yaml(
                    target, "1.1.0", "{canary: [50, 100], bake: 60s, max_failed_hosts: 0}"
                )
            },
        )
        answer = daemons[other].post("/api/v1/sync", {"wait": False}, token=TOKEN)
        assert answer.status_code in (200, 202), answer.text
        wait_for(lambda: "1.1.0" in served(setup, hosts[target]), 120, "the owner's first step")
        assert served(setup, hosts[target]) == {"1.0.0", "1.1.0"}, "baking after the canary"

        # the owner dies mid-step (during its bake): another replica resumes
        daemons[owner].send(signal.SIGKILL)
        assert daemons[owner].proc is not None
        daemons[owner].proc.wait(timeout=30)
        wait_for(
            lambda: holders(postgres_url).get(target) not in (None, owner),
            60,
            "another replica to take the lease over",
        )
        successor = holders(postgres_url)[target]
        wait_for(lambda: served(setup, hosts[target]) == {"1.1.0"}, 240, "the resumed rollout")
        alive = [daemons[r] for r in REPLICAS if r != owner]
        wait_for(lambda: all(not d.status()["daemon"]["running"] for d in alive), 120, "idle again")
        with PostgresStateStore.open(postgres_url, read_only=True) as store:
            assert store.unfinished_rollouts() == []
            states = [r.state for r in store.rollouts(target, limit=10)]
        assert RolloutState.INTERRUPTED in states, "the killed rollout is in the history"
        assert states[0] is RolloutState.SUCCEEDED, "and the resumed one converged"
        assert sorted(holders(postgres_url)) == ENVIRONMENTS, "every environment owned"
        assert owner not in holders(postgres_url).values()
        assert any(
            e.get("event") == "takeover_resumed" and e.get("environment") == target
            for e in daemons[successor].events()
        )

        # SIGSTOP the owner of another environment during a bake, past its lease: the other
        # replica takes over and converges it; SIGCONT: the paused one writes nothing
        paused_env = next(e for e in ENVIRONMENTS if e != target)
        paused = holders(postgres_url)[paused_env]
        survivor = next(r for r in REPLICAS if r not in (owner, paused))
        bake = "{canary: [50, 100], bake: 60s, max_failed_hosts: 0}"
        setup.remote.commit(
            "bump with a bake",
            {f"environments/{paused_env}.yaml": environment_yaml(paused_env, "1.1.0", bake)},
        )
        daemons[survivor].post("/api/v1/sync", {"wait": False}, token=TOKEN)  # a non-owner
        wait_for(lambda: "1.1.0" in served(setup, hosts[paused_env]), 120, "the first step")
        assert served(setup, hosts[paused_env]) == {"1.0.0", "1.1.0"}, "baking after the canary"
        daemons[paused].send(signal.SIGSTOP)
        try:
            wait_for(
                lambda: holders(postgres_url).get(paused_env) == survivor,
                60,
                "the survivor to take the paused replica's lease",
            )
            wait_for(lambda: served(setup, hosts[paused_env]) == {"1.1.0"}, 240, "the takeover")
            wait_for(lambda: not daemons[survivor].status()["daemon"]["running"], 120, "idle")
            with PostgresStateStore.open(postgres_url, read_only=True) as store:
                before = store.rollouts(paused_env, limit=20)
        finally:
            daemons[paused].send(signal.SIGCONT)
        wait_for(
            lambda: any(
                (e.get("event") == "lease_lost" and e.get("environment") == paused_env)
                or e.get("event") == "reconcile_fenced"
                for e in daemons[paused].events()
            ),
            60,
            "the paused replica to find its lease gone",
        )
        wait_for(lambda: not daemons[paused].status()["daemon"]["running"], 120, "it stood down")
        with PostgresStateStore.open(postgres_url, read_only=True) as store:
            assert store.rollouts(paused_env, limit=20) == before, "it wrote nothing"
            assert store.unfinished_rollouts() == []
        assert served(setup, hosts[paused_env]) == {"1.1.0"}
        # back among the members, it may get its share again (re-balance once idle)
        wait_for(lambda: sorted(holders(postgres_url)) == ENVIRONMENTS, 60, "all owned again")

        for daemon in alive:
            assert daemon.stop() == 0
    finally:
        for daemon in daemons.values():
            if daemon.proc is not None and daemon.proc.poll() is None:
                daemon.stop(signal.SIGKILL)
