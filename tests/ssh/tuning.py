"""SSH tuning as operators measure it: one 10-host deploy with/without pipelining and
ControlPersist, median of 3 runs each, through the same PlaybookRunner the daemon uses.

Run: ``.venv/bin/python -m tests.ssh.tuning [--hosts 10] [--runs 3]``. Every measured run
deploys a new version to every host (unpack, switch, restart) and starts without ssh control
masters (a rollout step's hosts are new connections too).
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import tempfile
from pathlib import Path

from reconciler import content
from reconciler.demo.ssh_fleet import SshFleet
from reconciler.playbook_runner import PlaybookRun, PlaybookRunner


def measure(hosts: int, runs: int) -> dict[tuple[bool, bool], list[float]]:
    combos = list(itertools.product((True, False), repeat=2))  # (pipelining, control_persist)
    timings: dict[tuple[bool, bool], list[float]] = {combo: [] for combo in combos}
    with tempfile.TemporaryDirectory(prefix="ssh-tuning-") as tmp:
        root = Path(tmp)
        with SshFleet(root / "fleet", hosts, first_address=200) as fleet:
            names = [h.name for h in fleet.hosts]
            inventory = fleet.write_inventory(root / "inventory.yml", {"web": names})
            runner = PlaybookRunner(root / "runs", keep_runs=5)
            versions = (f"2.0.{n}" for n in itertools.count())
            # one warm-up deploy (installs the helper everywhere), then runs interleaved
            for combo in [(True, True), *combos * runs]:
                version = next(versions)
                fleet.build("shop", version)
                fleet.drop_connections()
                pipelining, persist = combo
                envvars = fleet.ansible_envvars(pipelining=pipelining, control_persist=persist)
                result = runner.run(
                    PlaybookRun(
                        playbook=content.playbooks_dir() / "deploy-app.yml",
                        inventory=inventory,
                        hosts=tuple(names),
                        extra_vars={"reconciler_apps": {"shop": version}},
                        timeout_s=600,
                        roles_path=(content.roles_dir(),),
                        envvars={**envvars, "ANSIBLE_FORKS": str(hosts)},
                        label="tuning",
                    )
                )
                if result.outcome != "successful":
                    raise SystemExit(f"deploy {version} {combo}: {result.message}")
                if version != "2.0.0":
                    timings[combo].append(result.duration_s)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    timings = measure(args.hosts, args.runs)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"{args.hosts}-host deploy over SSH, median of {args.runs} (all runs in s)")
    print(f"load average at the end: {load} on {os.cpu_count()} CPUs")
    for (pipelining, persist), values in timings.items():
        flags = f"pipelining={_on(pipelining)} controlpersist={_on(persist)}"
        runs = ", ".join(f"{v:.2f}" for v in values)
        print(f"{flags}  {statistics.median(values):6.2f}s  ({runs})")


def _on(flag: bool) -> str:
    return "on " if flag else "off"


if __name__ == "__main__":
    main()
