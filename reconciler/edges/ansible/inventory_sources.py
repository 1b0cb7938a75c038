"""The files an inventory is made of: found, checked and hashed in the parent, before any parse.

Contract: ``scan(root, path, dynamic=False)`` returns the ``Sources`` of the inventory at
``path`` (a file or a directory below the repository ``root``): every file Ansible reads for it
(the file or the directory tree, and for a file the ``group_vars``/``host_vars`` trees beside
it), their total size, and the SHA-256 of their repository-relative names, executable bits and
contents (the cache key's content part: equal inventories in two commits hash the same). It
raises ``InventoryError`` naming the file when:

* a file or directory resolves outside ``root`` (a symlink), or the files total more than
  ``max_bytes``;
* unless ``dynamic``: an inventory source is executable (Ansible would run it as a script) or
  is an inventory plugin configuration (a ``plugin:`` YAML key): dynamic inventories are the
  operator's opt-in (``execution.dynamic_inventories``), never the repository's.

Nothing here parses YAML: the checks are on names, modes and one line pattern, so hostile
content costs the parent one read of bounded size.
"""

from __future__ import annotations

import hashlib
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from reconciler.desired.inventories import InventoryError
from reconciler.edges.ansible.inventory_data import size
from reconciler.support.text import safe

__all__ = ["DISABLED_HINT", "MAX_BYTES", "Sources", "scan"]

MAX_BYTES = 64 << 20
DISABLED_HINT = (
    "dynamic inventories are disabled; an operator can enable them per environment in the "
    "reconciler config (execution.dynamic_inventories)"
)
_VARS_DIRS = ("group_vars", "host_vars")
# What Ansible skips in an inventory directory (IGNORED_ALWAYS and INVENTORY_IGNORE_EXTS).
_SKIPPED_NAMES = re.compile(r"^\.|^(host_vars|group_vars|vars_plugins)$")
_SKIPPED_EXTS = (
    ".pyc",
    ".pyo",
    ".swp",
    ".bak",
    "~",
    ".rpm",
    ".md",
    ".txt",
    ".rst",
    ".orig",
    ".cfg",
    ".retry",
)
_PLUGIN_KEY = re.compile(rb"""^["']?plugin["']?[ \t]*:[ \t]*(\S*)""", re.MULTILINE)
_YAML_EXTS = ("", ".yml", ".yaml", ".json")


@dataclass(frozen=True)
class Sources:
    path: Path  # the inventory, resolved
    files: tuple[Path, ...]  # every file read for it (resolved), sorted
    sources: tuple[Path, ...]  # of these, the inventory sources (not group_vars/host_vars)
    size: int
    digest: str


def _relative(root: Path, path: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.name


class _Walk:
    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root, self.max_bytes = root, max_bytes
        self.files: dict[Path, bool] = {}  # resolved file -> is an inventory source
        self.size = 0
        self._seen_dirs: set[Path] = set()

    def inside(self, path: Path) -> Path:
        resolved = path.resolve()
        try:
            resolved.relative_to(self.root)
        except ValueError:
            raise InventoryError(
                f"{safe(_relative(self.root, path))}: resolves outside the repository"
            ) from None
        return resolved

    def add(self, path: Path, *, source: bool) -> None:
        resolved = self.inside(path)
        if resolved.is_dir():
            self.tree(resolved, source=source)
            return
        if not resolved.is_file():
            return  # a socket, a fifo, a dangling link: Ansible cannot read it either
        if resolved not in self.files:
            self.size += resolved.stat().st_size
            if self.size > self.max_bytes:
                raise InventoryError(
                    f"{safe(_relative(self.root, resolved))}: the inventory's files total more "
                    f"than {size(self.max_bytes)}"
                )
        self.files[resolved] = self.files.get(resolved, False) or source

    def tree(self, directory: Path, *, source: bool) -> None:
        if directory in self._seen_dirs:
            return
        self._seen_dirs.add(directory)
        for entry in sorted(directory.iterdir()):
            skipped = bool(_SKIPPED_NAMES.search(entry.name)) or entry.name.endswith(_SKIPPED_EXTS)
            if source and skipped and entry.name in _VARS_DIRS:
                self.add(entry, source=False)  # group_vars/host_vars inside an inventory dir
            elif source and skipped:
                continue
            else:
                self.add(entry, source=source)


_EXECUTABLE = stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH


def _check_static(root: Path, file: Path, data: bytes, executable: bool) -> None:
    name = safe(_relative(root, file))
    if executable:
        raise InventoryError(f"{name}: an executable inventory (a script): {DISABLED_HINT}")
    if file.suffix.lower() not in _YAML_EXTS:
        return
    match = _PLUGIN_KEY.search(data)
    if match:
        plugin = safe(match.group(1).decode("utf-8", "replace").strip("'\""), 80)
        raise InventoryError(
            f"{name}: an inventory plugin configuration (plugin: {plugin}): {DISABLED_HINT}"
        )


def scan(root: Path, path: Path, *, dynamic: bool = False, max_bytes: int = MAX_BYTES) -> Sources:
    """Find, check and hash the files of the inventory at ``path`` (see the module docstring)."""
    root = root.resolve()
    walk = _Walk(root, max_bytes)
    try:
        resolved = walk.inside(path)
        walk.add(resolved, source=True)
        if resolved.is_file():
            for name in _VARS_DIRS:
                if (resolved.parent / name).exists():
                    walk.add(resolved.parent / name, source=False)
        digest = hashlib.sha256()
        for file in sorted(walk.files):
            data = file.read_bytes()
            executable = bool(file.stat().st_mode & _EXECUTABLE)
            if walk.files[file] and not dynamic:
                _check_static(root, file, data, executable)
            relative = _relative(root, file).encode("utf-8", "surrogateescape")
            mode = b"x" if executable else b"-"
            digest.update(b"%d:%s\0%s%d\0" % (len(relative), relative, mode, len(data)))
            digest.update(data)
    except OSError as exc:
        raise InventoryError(
            f"{safe(_relative(root, Path(exc.filename or path)))}: cannot read: "
            f"{safe(exc.strerror or str(exc))}"
        ) from None
    files = tuple(sorted(walk.files))
    return Sources(
        path=resolved,
        files=files,
        sources=tuple(f for f in files if walk.files[f]),
        size=walk.size,
        digest=digest.hexdigest(),
    )
