"""The Ansible edge: what a playbook run is and what it returned, and the ``Runner`` Protocol.

This package's ``__init__`` imports no Ansible: the rollout engine uses these types and the
Protocol, and only ``edges.ansible.runner`` (wired in by ``service.wiring``) imports
``ansible_runner``. ``PlaybookRun`` is validated on construction (``ValueError``/``TypeError``):
host names can select only the host of exactly that name in an Ansible pattern, extra vars are
plain data (they are written ``!unsafe`` by ``edges.ansible.extravars``), and nobody may set the
run's process marker.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from reconciler.states import HostStatus, RunOutcome

__all__ = [
    "RUNS_DIR_ENV",
    "RUN_IDENT_ENV",
    "HostResult",
    "HostStatus",
    "PlaybookRun",
    "RunOutcome",
    "RunResult",
    "Runner",
]

#: Environment variable that marks every process of one run (see ``process_tree``).
RUN_IDENT_ENV = "RECONCILER_RUN_IDENT"
#: Environment variable naming the runs directory a run belongs to.
RUNS_DIR_ENV = "RECONCILER_RUNS_DIR"

_HOST_RE = re.compile(r"^[A-Za-z0-9_.:-]+$")


def _check_extra_vars(value: Any, path: str) -> None:
    if isinstance(value, str) or value is None or isinstance(value, bool | int | float):
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"extra_vars{path}: keys must be str, got {type(key).__name__}")
            _check_extra_vars(item, f"{path}.{key}")
        return
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_extra_vars(item, f"{path}[{index}]")
        return
    raise TypeError(f"extra_vars{path}: unsupported type {type(value).__name__}")


def _check_host(host: Any) -> None:
    if not isinstance(host, str) or not host:
        raise ValueError(f"host names must be non-empty str, got {host!r}")
    if host[0] in "!&~":
        raise ValueError(f"host name {host!r} must not start with '!', '&' or '~'")
    if not _HOST_RE.match(host):
        # rejects ',', '*', '?', whitespace and '[...]' (fnmatch classes/subscripts in Ansible
        # host patterns), so every name selects at most the host of exactly that name.
        raise ValueError(f"invalid host name {host!r}: must match {_HOST_RE.pattern}")


@dataclass(frozen=True)
class PlaybookRun:
    """What to run. Validated on construction (``ValueError`` / ``TypeError``)."""

    playbook: Path
    inventory: Path
    hosts: tuple[str, ...]
    extra_vars: Mapping[str, Any]
    timeout_s: float
    roles_path: tuple[Path, ...] = ()
    envvars: Mapping[str, str] = field(default_factory=dict)
    label: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.hosts, str) or not self.hosts:
            raise ValueError("hosts must be a non-empty tuple of host names")
        for host in self.hosts:
            _check_host(host)
        if len(set(self.hosts)) != len(self.hosts):
            raise ValueError("hosts contains duplicates")
        if not isinstance(self.extra_vars, Mapping):
            raise TypeError("extra_vars must be a mapping")
        _check_extra_vars(self.extra_vars, "")
        if not self.timeout_s > 0:
            raise ValueError("timeout_s must be > 0")
        for key, value in self.envvars.items():
            if not isinstance(key, str) or not isinstance(value, str) or not key:
                raise TypeError("envvars must map str to str")
        if RUN_IDENT_ENV in self.envvars:
            raise ValueError(f"envvars must not set {RUN_IDENT_ENV}")


@dataclass(frozen=True)
class HostResult:
    host: str
    status: HostStatus
    changed: bool
    message: str  # last failure/unreachable message (<= ~500 chars), "" when ok


@dataclass(frozen=True)
class RunResult:
    ident: str
    outcome: RunOutcome
    rc: int | None
    hosts: Mapping[str, HostResult]  # one entry for every requested host
    duration_s: float
    run_dir: Path
    message: str = ""  # run-level explanation (error text, timeout, ...); "" when successful

    def succeeded(self) -> tuple[str, ...]:
        return tuple(h for h, r in self.hosts.items() if r.status is HostStatus.OK)

    def failed(self) -> tuple[str, ...]:
        return tuple(h for h, r in self.hosts.items() if r.status is not HostStatus.OK)


class Runner(Protocol):
    """Runs one playbook; never raises for what happens while it runs (see ``runner``)."""

    @property
    def runs_dir(self) -> Path: ...

    def run(
        self,
        run: PlaybookRun,
        *,
        cancel: threading.Event | None = None,
        on_event: Callable[[dict[str, Any]], None] | None = None,
    ) -> RunResult: ...
