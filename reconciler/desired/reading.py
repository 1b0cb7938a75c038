"""Bounded reading of a desired-state repository: sizes first, then bytes, then YAML.

A commit is untrusted input: whatever it holds, reading it takes bounded memory and time and
ends in ``Problem``s, never in an exception. The bounds are the operator's
(``settings.LimitsSettings``: ``limits.max_file_bytes``, ``limits.max_repository_bytes``,
``limits.max_depth``, ``limits.max_nodes``), never the repository's.

Contract (no function raises for what the files contain):

* ``repository_problems(root, limits)``: the sizes of every regular file below ``root`` (links
  not followed; a work tree's own top-level ``.git`` left out) add up to at most
  ``max_repository_bytes``. Checked before anything is parsed; the problem names the largest
  files.
* ``referenced_problems(root, inventory, playbooks, limits)``: every regular file an
  environment makes reconciler or Ansible read (its inventory, a file or a directory walked; the
  ``group_vars``/``host_vars`` beside an inventory file; repository playbooks, i.e. paths with a
  ``/``) holds at most ``max_file_bytes``. Checked before the inventory is parsed. Paths that
  resolve outside ``root`` are skipped (the loader reports them).
* ``read_text(root, path, limits)``: the file's text, or a problem: more than
  ``max_file_bytes`` (never read whole), a NUL byte, bytes that are not UTF-8 (each with the
  line of the first offending byte). A UTF-8 byte order mark is dropped.
* ``load_yaml(file, text, limits)``: the round-trip (ruamel) document with its line numbers, or
  a problem with the line where parsing stopped. YAML anchors and aliases are refused: they have
  no use in an environment file (``defaults`` shares settings) and an alias bomb of a few
  hundred bytes would otherwise expand to gigabytes; the first anchor is refused before anything
  is built. Nesting deeper than ``max_depth`` is refused while composing, before the parser
  recurses further, and so is a document of more than ``max_nodes`` nodes: what a file costs in
  memory and time is its number of nodes (about 2 KB each once built), so bytes alone would let
  2 MiB of ``k: 1`` lines cost a quarter of a gigabyte. Any other parser or constructor error (a
  5,000-digit integer, a bad tag) becomes a problem too.
* ``bounded_yaml(limits)``: the ruamel round-trip ``YAML`` that ``load_yaml`` uses.
* ``read_mapping(root, path, limits)``: ``read_text`` then ``load_yaml``; the document must be
  a mapping.
"""

from __future__ import annotations

import heapq
import os
import stat
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.composer import Composer
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import AliasEvent
from ruamel.yaml.reader import ReaderError

from reconciler.desired.problems import Problem
from reconciler.settings import LimitsSettings
from reconciler.support.text import clip

__all__ = [
    "bounded_yaml",
    "load_yaml",
    "read_mapping",
    "read_text",
    "referenced_problems",
    "repository_problems",
]

ANCHOR_HINT = "environment files share settings through 'defaults', not anchors"


class _Refused(MarkedYAMLError):
    """A construct the bounded reader does not accept (an anchor, an alias, too deep)."""


class _BoundedComposer(Composer):
    """ruamel's composer, refusing anchors and aliases, counting nodes and nesting depth."""

    max_depth = LimitsSettings().max_depth
    max_nodes = LimitsSettings().max_nodes

    def __init__(self, loader: Any = None) -> None:
        super().__init__(loader)
        self.nesting = 0
        self.nodes = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.parser.peek_event()
        if isinstance(event, AliasEvent):
            raise _Refused(
                problem=f"YAML alias *{clip(event.anchor, 60)} is not allowed; {ANCHOR_HINT}",
                problem_mark=event.start_mark,
            )
        if getattr(event, "anchor", None) is not None:
            raise _Refused(
                problem=f"YAML anchor &{clip(event.anchor, 60)} is not allowed; {ANCHOR_HINT}",
                problem_mark=event.start_mark,
            )
        self.nodes += 1
        if self.nodes > self.max_nodes:
            raise _Refused(
                problem=f"more than {self.max_nodes} YAML nodes (limits.max_nodes)",
                problem_mark=event.start_mark,
            )
        self.nesting += 1
        try:
            if self.nesting > self.max_depth:
                raise _Refused(
                    problem=f"nested more than {self.max_depth} levels deep (limits.max_depth)",
                    problem_mark=event.start_mark,
                )
            return super().compose_node(parent, index)
        finally:
            self.nesting -= 1


def bounded_yaml(limits: LimitsSettings) -> YAML:
    """A round-trip loader with the bounded composer (``desired.edits`` parses with it too)."""

    class _Composer(_BoundedComposer):
        pass

    _Composer.max_depth, _Composer.max_nodes = limits.max_depth, limits.max_nodes
    yaml = YAML(typ="rt")
    yaml.Composer = _Composer
    yaml.allow_duplicate_keys = False
    return yaml


def _line(data: bytes | str, offset: int) -> int:
    newline: Any = b"\n" if isinstance(data, bytes) else "\n"
    return data.count(newline, 0, max(0, offset)) + 1


def _too_big(file: str, size: int, limits: LimitsSettings) -> Problem:
    return Problem(
        file,
        1,
        f"file is {size} bytes, more than the {limits.max_file_bytes} bytes allowed "
        "(limits.max_file_bytes)",
    )


def read_text(root: Path, path: Path, limits: LimitsSettings) -> tuple[str | None, list[Problem]]:
    """The text of ``path`` (below ``root``), or why it cannot be used."""
    file = path.relative_to(root).as_posix()
    try:
        with path.open("rb") as handle:
            data = handle.read(limits.max_file_bytes + 1)
            if len(data) > limits.max_file_bytes:
                size = max(os.fstat(handle.fileno()).st_size, len(data))
                return None, [_too_big(file, size, limits)]
    except OSError as exc:
        return None, [Problem(file, 1, f"cannot read: {exc.strerror or exc}")]
    nul = data.find(b"\0")
    if nul >= 0:
        return None, [
            Problem(file, _line(data, nul), "a NUL byte: environment files are UTF-8 text")
        ]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, [
            Problem(
                file,
                _line(data, exc.start),
                f"not UTF-8 text: byte 0x{data[exc.start]:02x} at offset {exc.start}",
            )
        ]
    return text.removeprefix("\ufeff"), []


def load_yaml(file: str, text: str, limits: LimitsSettings) -> tuple[Any, list[Problem]]:
    """The round-trip document of ``text`` (one YAML document), or why it cannot be used."""
    try:
        return bounded_yaml(limits).load(text), []
    except _Refused as exc:
        return None, [Problem(file, exc.problem_mark.line + 1, str(exc.problem))]
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        return None, [Problem(file, line, f"invalid YAML: {exc.problem or exc.context}")]
    except ReaderError as exc:
        where = exc.position if isinstance(exc.position, int) else 0
        character = f"U+{exc.character:04X}" if isinstance(exc.character, int) else "a character"
        message = f"invalid YAML: {character} is not allowed ({exc.reason})"
        return None, [Problem(file, _line(text, where), message)]
    except YAMLError as exc:
        return None, [Problem(file, 1, f"invalid YAML: {exc}")]
    except (RecursionError, MemoryError):
        return None, [Problem(file, 1, "invalid YAML: too large or too deeply nested")]
    except Exception as exc:  # a constructor's ValueError (huge integer...), whatever the input
        return None, [Problem(file, 1, f"invalid YAML: {type(exc).__name__}: {exc}")]


def read_mapping(root: Path, path: Path, limits: LimitsSettings) -> tuple[Any, list[Problem]]:
    """The round-trip mapping of the YAML file ``path``, or why it cannot be used."""
    text, problems = read_text(root, path, limits)
    if text is None:
        return None, problems
    file = path.relative_to(root).as_posix()
    document, problems = load_yaml(file, text, limits)
    if problems:
        return None, problems
    if not isinstance(document, Mapping):
        return None, [Problem(file, 1, "an environment file must be a mapping")]
    return document, []


def _files(top: Path, *, skip_git: bool = False) -> Iterator[tuple[Path, int]]:
    """Regular files at or below ``top`` with their sizes; links are not followed."""
    try:
        info = top.lstat()
    except OSError:
        return
    if stat.S_ISREG(info.st_mode):
        yield top, info.st_size
        return
    if not stat.S_ISDIR(info.st_mode):
        return
    pending = [top]
    while pending:
        directory = pending.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    if not (skip_git and directory == top and entry.name == ".git"):
                        pending.append(Path(entry.path))
                elif entry.is_file(follow_symlinks=False):
                    yield Path(entry.path), entry.stat(follow_symlinks=False).st_size
            except OSError:
                continue


def repository_problems(root: Path, limits: LimitsSettings) -> list[Problem]:
    """One problem when the repository's files add up to more than ``max_repository_bytes``."""
    total = 0
    largest: list[tuple[int, str]] = []
    for path, size in _files(root, skip_git=True):
        total += size
        item = (size, path.relative_to(root).as_posix())
        if len(largest) < 3:
            heapq.heappush(largest, item)
        else:
            heapq.heappushpop(largest, item)
    if total <= limits.max_repository_bytes:
        return []
    shown = ", ".join(f"{name} ({size} bytes)" for size, name in sorted(largest, reverse=True))
    return [
        Problem(
            ".",
            1,
            f"the repository's files add up to {total} bytes, more than the "
            f"{limits.max_repository_bytes} bytes allowed (limits.max_repository_bytes); "
            f"the largest: {shown}",
        )
    ]


def _below(root: Path, relative: str) -> Path | None:
    candidate = (root / relative).resolve()
    return candidate if candidate.is_relative_to(root.resolve()) else None


def referenced_problems(
    root: Path, inventory: str, playbooks: Iterable[str], limits: LimitsSettings
) -> list[Problem]:
    """A problem for each file an environment references that is over ``max_file_bytes``."""
    tops: list[Path] = []
    found = _below(root, inventory)
    if found is not None:
        tops.append(found)
        if not found.is_dir():
            tops += [found.parent / "group_vars", found.parent / "host_vars"]
    tops += [p for p in (_below(root, b) for b in sorted(set(playbooks)) if "/" in b) if p]
    problems = []
    seen: set[Path] = set()
    for top in tops:
        for path, size in _files(top):
            if path not in seen and size > limits.max_file_bytes:
                problems.append(_too_big(path.relative_to(root.resolve()).as_posix(), size, limits))
            seen.add(path)
    return problems
