"""The inventory child's bounds: address space (RLIMIT_AS), wall clock, output size, crashes.
Each ends as an ``InventoryError`` naming the inventory; nothing is left running."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from reconciler.desired.inventories import InventoryError
from reconciler.edges.ansible import inventory, inventory_process
from tests.inventory.conftest import write

MiB = 1 << 20
# A named promptness bound: a killed parse is reported within this much after its timeout.
KILL_PROMPTNESS_S = 15.0

MEASURE = """
import json, resource, sys
from pathlib import Path
from reconciler.desired.inventories import InventoryError
from reconciler.edges.ansible import inventory
limits = inventory.Limits(timeout_s=300, memory_bytes=int(sys.argv[2]))
try:
    inventory.InventoryParser(limits=limits)(Path(sys.argv[1]), root=Path(sys.argv[1]).parent,
                                             environment="prod")
    message = None
except InventoryError as exc:
    message = str(exc)
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
print(json.dumps({"message": message, "child_peak_bytes": peak}))
"""


def test_memory_is_bounded_by_the_rlimit_of_the_child(tmp_path):
    """16 MB of host variable need more than 128 MiB to parse: the child's RLIMIT_AS stops it.
    The bound is asserted on the child's peak RSS (its parent's RUSAGE_CHILDREN), not a timer."""
    source = tmp_path / "prod.yml"
    source.write_text("all:\n  hosts:\n    web-01:\n      big: '" + "x" * (16 * MiB) + "'\n")
    limit = 128 * MiB
    result = subprocess.run(
        [sys.executable, "-c", MEASURE, str(source), str(limit)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    report = json.loads(result.stdout)
    assert report["message"] == "prod.yml: ran out of memory (limit 128 MiB)"
    assert 0 < report["child_peak_bytes"] <= limit
    # and with room enough, the same inventory parses
    parsed = inventory.InventoryParser(limits=inventory.Limits(memory_bytes=512 * MiB))(
        source, root=tmp_path, environment="prod"
    )
    assert list(parsed.hosts) == ["web-01"]


SLOW_SCRIPT = """#!{python}
import os, subprocess, sys, time
# a grandchild in a session of its own, as a daemonising inventory script would leave behind
sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                           start_new_session=True)
open({pids!r}, "w").write(f"{{os.getpid()}} {{sleeper.pid}}")
time.sleep(600)
"""


def _dynamic(tmp_path: Path, text: str, **limits: float) -> tuple[Path, inventory.InventoryParser]:
    write(tmp_path, {"inventories/staging.py": text}, executable=("inventories/staging.py",))
    parser = inventory.InventoryParser(
        dynamic={"staging": ["script"]}, limits=inventory.Limits(**limits)
    )
    return tmp_path / "inventories" / "staging.py", parser


def test_a_hanging_parse_is_killed_with_everything_it_started(tmp_path):
    pids_file = tmp_path / "pids"
    path, parser = _dynamic(
        tmp_path, SLOW_SCRIPT.format(python=sys.executable, pids=str(pids_file)), timeout_s=3
    )
    started = time.monotonic()
    with pytest.raises(InventoryError) as raised:
        parser(path, root=tmp_path, environment="staging")
    elapsed = time.monotonic() - started
    assert str(raised.value) == "inventories/staging.py: timed out after 3s"
    assert elapsed < 3 + KILL_PROMPTNESS_S
    pids = [int(p) for p in pids_file.read_text().split()]
    assert len(pids) == 2
    for pid in pids:  # the script and its setsid'd grandchild are gone
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_a_crashing_parser_is_an_inventory_error(tmp_path):
    path, parser = _dynamic(tmp_path, "#!/bin/sh\nkill -SEGV $PPID\nsleep 600\n", timeout_s=60)
    with pytest.raises(InventoryError) as raised:
        parser(path, root=tmp_path, environment="staging")
    assert str(raised.value) == "inventories/staging.py: the parser crashed (signal SIGSEGV)"


def test_output_is_capped(tmp_path):
    hosts = "".join(f"web-{i:05d}\n" for i in range(2000))
    write(tmp_path, {"prod.ini": "[web]\n" + hosts})
    parser = inventory.InventoryParser(limits=inventory.Limits(output_bytes=16 << 10))
    with pytest.raises(InventoryError) as raised:
        parser(tmp_path / "prod.ini", root=tmp_path, environment="prod")
    assert str(raised.value) == "prod.ini: its output exceeds 16 KiB"


def test_files_too_large_are_refused_before_any_parse(tmp_path, children):
    write(tmp_path, {"prod.ini": "[web]\nweb-01\n", "group_vars/web.yml": "x: " + "y" * 4096})
    parser = inventory.InventoryParser(max_bytes=4096)
    with pytest.raises(InventoryError) as raised:
        parser(tmp_path / "prod.ini", root=tmp_path, environment="prod")
    assert str(raised.value) == ("group_vars/web.yml: the inventory's files total more than 4 KiB")
    assert children.started == 0


def test_a_static_child_gets_a_minimal_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("RECONCILER_API__TOKEN_FILE", "/secret/path")
    monkeypatch.setenv("SOME_DAEMON_SECRET", "hunter2")
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    static = inventory_process._environment(tmp_path, ("yaml",), False, "m")
    assert "SOME_DAEMON_SECRET" not in static
    assert not [
        k for k in static if k.startswith("RECONCILER_") and k != "RECONCILER_INVENTORY_RUN"
    ]
    assert static["HOME"] == str(tmp_path) and static["ANSIBLE_INVENTORY_ENABLED"] == "yaml"
    assert static["ANSIBLE_CONFIG"] == str(tmp_path / "ansible.cfg")
    dynamic = inventory_process._environment(tmp_path, ("yaml", "script"), True, "m")
    assert dynamic["SOME_DAEMON_SECRET"] == "hunter2"  # cloud credentials, the operator's choice
    assert "RECONCILER_API__TOKEN_FILE" not in dynamic and "NOTIFY_SOCKET" not in dynamic
    assert os.environ["SOME_DAEMON_SECRET"] == "hunter2"  # ours is left alone


# Ansible waits for its script's own stdout/stderr; this leftover holds the child's stderr.
LINGERING = """#!/bin/sh
sleep 600 </dev/null >/dev/null 2>/proc/$PPID/fd/2 &
echo $! > {pid}
echo '{{"web": {{"hosts": ["web-01"]}}, "_meta": {{"hostvars": {{}}}}}}'
"""


def test_what_a_dynamic_inventory_leaves_behind_is_killed_and_not_waited_for(tmp_path):
    """A background process holding the child's stderr: the parse ends when the child does
    (well before its timeout), and the leftover is killed."""
    pid_file = tmp_path / "pid"
    path, parser = _dynamic(tmp_path, LINGERING.format(pid=pid_file), timeout_s=120)
    started = time.monotonic()
    parsed = parser(path, root=tmp_path, environment="staging")
    assert list(parsed.hosts) == ["web-01"]
    assert time.monotonic() - started < 120 - KILL_PROMPTNESS_S, "it waited for the timeout"
    pid = int(pid_file.read_text())
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
