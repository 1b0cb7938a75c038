"""Shared set-up for the benchmarks: a real bare Git remote with a work clone, fleet shapes."""

from __future__ import annotations

import functools
import os
import resource
import subprocess
import threading
import time
import types
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from reconciler.testing.fleet import write_inventory

T = TypeVar("T")

GIT_ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@invalid",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, env=GIT_ENV, check=True, capture_output=True, text=True
    ).stdout.strip()


def wait_until(
    predicate: Callable[[], T | None], timeout: float, what: str, interval: float = 0.01
) -> T:
    """The first truthy value of ``predicate``, polled every ``interval`` s, or RuntimeError."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(interval)


def cpu_seconds() -> float:
    """User + system CPU of this process and of its reaped children (git, ansible-playbook)."""
    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class Stopwatch:
    """Exclusive time and calls per label of wrapped callables (nested calls are not counted
    twice). Each thread keeps its own nesting, so calls made in the rollout's group threads are
    timed like those of the calling thread."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)
        self._lock = threading.Lock()
        self._local = threading.local()

    def reset(self) -> None:
        with self._lock:
            self.totals.clear()
            self.counts.clear()

    def _stack(self) -> list[float]:
        stack: list[float] | None = getattr(self._local, "stack", None)
        if stack is None:
            stack = self._local.stack = []
        return stack

    def wrap(self, label: str, func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def timed(*args: Any, **kwargs: Any) -> Any:
            children = self._stack()
            start = time.perf_counter()
            children.append(0.0)
            try:
                return func(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - start
                exclusive = elapsed - children.pop()
                if children:
                    children[-1] += elapsed
                with self._lock:
                    self.totals[label] += exclusive
                    self.counts[label] += 1

        return timed

    @contextmanager
    def instrument(self, targets: Iterable[tuple[object, str, str]]) -> Iterator[list[str]]:
        """Wrap each ``(object or module, attribute, label)`` for the duration (module functions
        and instance attributes are put back, wrapped methods dropped so the class's shows
        again); yields the attributes that were not found."""
        restore: list[Callable[[], None]] = []
        missing: list[str] = []
        for target, name, label in targets:
            original = getattr(target, name, None)
            if original is None:
                missing.append(name)
                continue
            own = isinstance(target, types.ModuleType) or name in getattr(target, "__dict__", {})
            setattr(target, name, self.wrap(label, original))
            if own:  # a module function or an attribute of the instance itself: put it back
                restore.append(functools.partial(setattr, target, name, original))
            else:  # a method: drop the instance attribute, the class method shows again
                restore.append(functools.partial(delattr, target, name))
        try:
            yield missing
        finally:
            for undo in reversed(restore):
                undo()


class DesiredRepo:
    """A desired-state repository: a bare remote in ``base`` and a work tree that pushes to it."""

    def __init__(self, base: Path) -> None:
        base.mkdir(parents=True, exist_ok=True)
        self.bare, self.work = base / "remote.git", base / "work"
        git(base, "init", "-q", "--bare", "--initial-branch=main", str(self.bare))
        git(base, "init", "-q", "--initial-branch=main", str(self.work))

    @property
    def url(self) -> str:
        return str(self.bare)

    def write(self, relative: str, text: str) -> Path:
        path = self.work / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path

    def inventory(
        self,
        groups: Mapping[str, Sequence[str]],
        ports: Mapping[str, Mapping[str, int]] | None = None,
        relative: str = "inventories/prod.yml",
    ) -> Path:
        return write_inventory(self.work / relative, groups, ports or {})

    def commit_push(self, message: str) -> str:
        git(self.work, "add", "-A")
        git(self.work, "commit", "-qm", message)
        git(self.work, "push", "-q", str(self.bare), "HEAD:main")
        return git(self.bare, "rev-parse", "main")


def host_names(group: str, count: int) -> list[str]:
    return [f"{group}-{i:05d}" for i in range(1, count + 1)]


def split_hosts(total: int, groups: Sequence[str]) -> dict[str, list[str]]:
    """``total`` hosts spread as evenly as possible over ``groups``."""
    share, extra = divmod(total, len(groups))
    return {g: host_names(g, share + (i < extra)) for i, g in enumerate(groups)}
