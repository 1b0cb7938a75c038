"""The ``command`` gate kind: run an argv on the controller; exit status 0 passes.

Contract: the templates are the ``argv`` elements, each rendered on its own. An attempt runs
the rendered argv without a shell, with stdin ``/dev/null`` and stdout+stderr captured to a
temporary file (its last ``OUTPUT_LIMIT`` bytes, one line, end the detail), in a session of
its own, with the daemon's environment plus ``RECONCILER_GATE_IDENT=<unique per attempt>``.

Nothing it starts outlives the attempt:

* on timeout or cancel, :func:`reconciler.support.processes.kill` stops then kills its whole
  tree: its descendants, every member of its session (orphans re-parented to init included)
  and every process carrying its marker (which also finds a grandchild that called
  ``setsid`` and outlived its parent: it is neither in the tree nor in the session);
* after it exits on its own, what is left in its session (and carries its marker) is killed
  the same way; daemons it double-forked away from the session are its business.

Details users see::

    <argv> -> exit 0: <output tail>
    <argv> -> exit 1: <output tail>
    <argv> -> killed by signal 9: <output tail>
    <argv> -> timed out after 5s (killed): <output tail>
    <argv> -> executable not found: <argv[0]>
"""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from typing import IO

import psutil

from reconciler.desired.schema import CommandGate
from reconciler.edges.gates import templates
from reconciler.edges.gates.attempts import (
    CANCELED,
    AttemptResult,
    Context,
    describe_error,
    seconds,
    short,
)
from reconciler.support import processes

__all__ = ["KIND", "MARKER_ENV", "OUTPUT_LIMIT", "Fields", "attempt", "render", "texts"]

KIND = "command"
#: Environment variable marking every process an attempt starts.
MARKER_ENV = "RECONCILER_GATE_IDENT"
OUTPUT_LIMIT = 400
_CANCEL_POLL_S = 0.05
_REAP_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Fields:
    argv: tuple[str, ...]


def texts(gate: CommandGate) -> tuple[str, ...]:
    return tuple(gate.argv)


def render(gate: CommandGate, values: templates.Values) -> Fields:
    return Fields(tuple(templates.render_template(arg, values) for arg in gate.argv))


def attempt(fields: Fields, timeout: float, context: Context) -> AttemptResult:
    argv = list(fields.argv)
    what = short(shlex.join(argv), 200)
    marker = uuid.uuid4().hex
    with tempfile.TemporaryFile() as output:
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
                env={**os.environ, MARKER_ENV: marker},
            )
        except FileNotFoundError:
            return AttemptResult.failure(f"{what} -> executable not found: {argv[0]}")
        except PermissionError:
            return AttemptResult.failure(f"{what} -> not executable: {argv[0]}")
        except OSError as error:
            return AttemptResult.failure(f"{what} -> cannot run: {describe_error(error)}")
        code: int | None = None
        try:
            code = _wait(proc, timeout, context.cancel)
        finally:
            if code is None:  # timed out, canceled, or interrupted by an exception
                _kill_tree(proc, marker)
            else:  # what it left running in its session must not outlive the attempt
                processes.kill(lambda: _leftovers(proc.pid, marker))
        if code is None:
            if context.cancel is not None and context.cancel.is_set():
                return CANCELED
            tail = _tail(output)
            return AttemptResult.failure(
                f"{what} -> timed out after {seconds(timeout)} (killed)"
                + (f": {tail}" if tail else "")
            )
        tail = _tail(output)
    suffix = f": {tail}" if tail else ""
    if code == 0:
        return AttemptResult.success(f"{what} -> exit 0{suffix}")
    if code < 0:
        return AttemptResult.failure(f"{what} -> killed by signal {-code}{suffix}")
    return AttemptResult.failure(f"{what} -> exit {code}{suffix}")


def _wait(
    proc: subprocess.Popen[bytes], timeout: float, cancel: threading.Event | None
) -> int | None:
    """The exit status, or None when the timeout expired or ``cancel`` was set first."""
    deadline = time.monotonic() + timeout
    while True:
        if cancel is not None and cancel.is_set():
            return None
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        try:
            return proc.wait(timeout=min(left, _CANCEL_POLL_S) if cancel is not None else left)
        except subprocess.TimeoutExpired:
            continue


def _kill_tree(proc: subprocess.Popen[bytes], marker: str) -> None:
    """Kill everything the attempt started, then reap our own child (``Popen`` owns it)."""

    def find() -> list[psutil.Process]:
        return [
            *processes.descendants(proc.pid, include_self=True),
            *processes.in_session(proc.pid),
            *processes.carrying(MARKER_ENV, marker),
        ]

    processes.kill(find)
    with contextlib.suppress(subprocess.TimeoutExpired):  # SIGKILL was sent: it is dying
        proc.wait(timeout=_REAP_TIMEOUT_S)


def _leftovers(sid: int, marker: str) -> list[psutil.Process]:
    """What an exited command left in its session. Its pid (the session id) is free again once
    reaped, so only processes that also carry its marker count: never a stranger's session."""
    return processes.carrying(MARKER_ENV, marker, among=processes.in_session(sid))


def _tail(handle: IO[bytes]) -> str:
    """The last ``OUTPUT_LIMIT`` bytes of the output, on one line."""
    handle.flush()
    size = handle.seek(0, os.SEEK_END)
    handle.seek(max(0, size - OUTPUT_LIMIT))
    text = handle.read().decode("utf-8", "replace").strip()
    text = " | ".join(line.strip() for line in text.splitlines() if line.strip())
    return ("..." + text) if size > OUTPUT_LIMIT else text
