"""Run the inventory child (``edges.ansible.inventory_worker``): bounded in time, memory, output.

Contract of ``run(request, plugins=..., limits=..., dynamic=...)``:

* Starts a FRESH interpreter (``python -I -m reconciler.edges.ansible.inventory_worker``, never
  a fork of this process, which holds secrets), in a new session, in a private temporary
  directory that is also its ``HOME`` and holds an empty ``ansible.cfg``: no ``ansible.cfg``
  of the repository or of the machine applies, only the ``plugins`` given are enabled
  (``ANSIBLE_INVENTORY_ENABLED``, set in the child's environment only) and only the
  ``host_group_vars`` vars plugin. A static parse gets a minimal environment (``PATH``, a
  UTF-8 locale); a ``dynamic`` one (the operator's opt-in) also inherits this process'
  environment, minus ``RECONCILER_*`` and systemd's notification and socket variables.
* The request is sent on stdin; the child sets ``RLIMIT_AS`` to ``limits.memory_bytes`` itself
  before parsing. Its stdout is read up to ``limits.output_bytes``, its stderr's tail kept.
* At ``limits.timeout_s`` (wall clock), or when the output overflows, every process carrying the
  run's marker (``RECONCILER_INVENTORY_RUN``: the child and whatever it started, even after a
  ``setsid``) is killed (``support.processes.kill``); after a normal exit too, the leftovers.
* Returns the child's JSON document (a ``dict``; the caller checks its shape). Raises
  ``WorkerError`` with a one-line reason for a timeout, memory exhaustion, a crash, an
  overflow or unreadable output; an error document of the child is returned as it is.

``started`` counts the children started by this process (tests observe the cache with it).
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reconciler.edges.ansible.inventory_data import size
from reconciler.support import processes

__all__ = ["MARKER_ENV", "Limits", "WorkerError", "run", "started"]

MARKER_ENV = "RECONCILER_INVENTORY_RUN"
WORKER_MODULE = "reconciler.edges.ansible.inventory_worker"
_EXIT_MEMORY = 3  # inventory_worker.EXIT_MEMORY (not imported: it would import nothing else)
_STDERR_TAIL = 16 << 10
_DROPPED_ENV_PREFIXES = ("RECONCILER_", "NOTIFY_SOCKET", "WATCHDOG_", "LISTEN_")

started = 0


class WorkerError(Exception):
    """The child did not deliver a result (timeout, memory, crash, output)."""


@dataclass(frozen=True)
class Limits:
    timeout_s: float = 120.0
    memory_bytes: int = 2048 << 20
    output_bytes: int = 64 << 20


def _environment(home: Path, plugins: Sequence[str], dynamic: bool, marker: str) -> dict[str, str]:
    if dynamic:
        env = {k: v for k, v in os.environ.items() if not k.startswith(_DROPPED_ENV_PREFIXES)}
    else:
        env = {
            "PATH": os.environ.get("PATH", os.defpath),
            "HOME": str(home),
            "TMPDIR": str(home),
            "ANSIBLE_HOME": str(home / ".ansible"),
        }
    env.update(
        {
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "ANSIBLE_CONFIG": str(home / "ansible.cfg"),
            "ANSIBLE_INVENTORY_ENABLED": ",".join(plugins),
            "ANSIBLE_VARS_ENABLED": "host_group_vars",
            "ANSIBLE_INVENTORY_UNPARSED_FAILED": "True",
            "ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED": "True",
            "ANSIBLE_INVENTORY_CACHE": "False",
            "ANSIBLE_LOCAL_TEMP": str(home / "tmp"),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_DEPRECATION_WARNINGS": "False",
            MARKER_ENV: marker,
        }
    )
    env.pop("ANSIBLE_FORCE_COLOR", None)
    return env


def _kill(marker: str, child: subprocess.Popen[bytes], everywhere: bool) -> None:
    """Kill the run's processes: all marked ones (``everywhere``), else its session's."""

    def find() -> list[Any]:
        among = None if everywhere else processes.in_session(child.pid)
        return processes.carrying(MARKER_ENV, marker, among=among)

    processes.kill(find, timeout_s=5.0)


def _collect(
    child: subprocess.Popen[bytes], limits: Limits, deadline: float
) -> tuple[bytes, bytes, str | None]:
    """stdout (capped), stderr's tail, and why reading stopped early (None: the child closed
    its stdout and exited; stderr is not waited for then: something the child started may
    still hold it)."""
    assert child.stdout is not None and child.stderr is not None
    out, err = bytearray(), bytearray()
    with selectors.DefaultSelector() as selector:
        selector.register(child.stdout, selectors.EVENT_READ, out)
        selector.register(child.stderr, selectors.EVENT_READ, err)
        while True:
            streams = {key.data is out for key in selector.get_map().values()}
            if True not in streams and (child.poll() is not None or not streams):
                return bytes(out), bytes(err), None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return bytes(out), bytes(err), f"timed out after {limits.timeout_s:g}s"
            for key, _ in selector.select(timeout=min(remaining, 0.2)):
                chunk = os.read(key.fd, 1 << 16)
                if not chunk:
                    selector.unregister(key.fileobj)
                    continue
                key.data.extend(chunk)
                if key.data is err and len(err) > _STDERR_TAIL:
                    del err[: len(err) - _STDERR_TAIL]
                if len(out) > limits.output_bytes:
                    return b"", bytes(err), f"its output exceeds {size(limits.output_bytes)}"


def _failure(returncode: int, stderr: bytes, limits: Limits) -> str:
    text = stderr.decode("utf-8", "replace")
    if returncode == _EXIT_MEMORY or "MemoryError" in text or "Cannot allocate memory" in text:
        return f"ran out of memory (limit {size(limits.memory_bytes)})"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = str(-returncode)
        return f"the parser crashed (signal {name})"
    last = [line for line in text.splitlines() if line.strip()][-1:] or ["no output"]
    return f"the parser failed (exit status {returncode}): {last[0]}"


def run(
    request: Mapping[str, Any],
    *,
    plugins: Sequence[str],
    limits: Limits,
    dynamic: bool = False,
) -> dict[str, Any]:
    """Parse in a bounded child; its JSON document, or ``WorkerError`` (module docstring)."""
    global started
    marker = uuid.uuid4().hex
    payload = json.dumps({**request, "memory_bytes": limits.memory_bytes}).encode()
    with tempfile.TemporaryDirectory(
        prefix="reconciler-inventory-", ignore_cleanup_errors=True
    ) as tmp:
        home = Path(tmp)
        (home / "ansible.cfg").write_bytes(b"")
        (home / "tmp").mkdir()
        deadline = time.monotonic() + limits.timeout_s
        child = subprocess.Popen(
            [sys.executable, "-I", "-m", WORKER_MODULE],
            cwd=home,
            env=_environment(home, plugins, dynamic, marker),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            close_fds=True,
        )
        started += 1
        try:
            assert child.stdin is not None
            try:
                child.stdin.write(payload)
                child.stdin.close()
            except BrokenPipeError:
                pass  # it died at once; its exit status says why
            out, err, stopped = _collect(child, limits, deadline)
            if stopped is not None:
                _kill(marker, child, everywhere=True)
                child.wait()
                raise WorkerError(stopped)
            try:
                returncode = child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _kill(marker, child, everywhere=True)
                child.wait()
                raise WorkerError(f"timed out after {limits.timeout_s:g}s") from None
            _kill(marker, child, everywhere=dynamic)
        finally:
            if child.poll() is None:  # an exception of ours: never leave it running
                _kill(marker, child, everywhere=True)
                child.wait()
            for stream in (child.stdout, child.stderr):
                if stream is not None:
                    stream.close()
    if returncode not in (0, 1):
        raise WorkerError(_failure(returncode, err, limits))
    try:
        document = json.loads(out)
    except ValueError:
        raise WorkerError(
            _failure(returncode, err, limits)
            if returncode
            else "the parser returned malformed output"
        ) from None
    if not isinstance(document, dict):
        raise WorkerError("the parser returned malformed output")
    return document
