"""Validate a desired-state repository and resolve it into a ``DesiredState``.

Contract: ``load_repository(root, inventories=reader, limits=limits)`` reads
``environments/*.yaml`` under ``root`` (resolving inventories through ``reader``) and returns a
``LoadResult``: either a resolved ``DesiredState`` and no problems, or ``state=None`` and the
``Problem``s found (``file:line: message``; at most ``MAX_PROBLEMS``). The repository is
all-or-nothing: one invalid file rejects the whole commit. Reads files only below ``root``;
never follows a path outside it. Never raises for what the repository contains, and reads it
within the operator's ``limits`` (``desired.reading``: sizes before parsing, no NUL, UTF-8
only, no YAML anchors or aliases, bounded nesting); anything else a file makes it raise is a
problem of that file.
"""

from __future__ import annotations

import difflib
import graphlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from reconciler import content
from reconciler.desired import problems as problems_
from reconciler.desired import reading, resolve
from reconciler.desired.inventories import (
    Inventory,
    InventoryError,
    InventoryReader,
    host_problems,
)
from reconciler.desired.model import DesiredState, EnvironmentDesired
from reconciler.desired.problems import Problem
from reconciler.desired.schema import EnvironmentFile
from reconciler.settings import LimitsSettings
from reconciler.support.text import clip

ENVIRONMENTS_DIR = "environments"
MAX_PROBLEMS = 100
NAME_LIMIT = 60  # characters of a key or name quoted inside a message


@dataclass(frozen=True)
class LoadResult:
    state: DesiredState | None
    problems: tuple[Problem, ...]

    @property
    def ok(self) -> bool:
        return self.state is not None


class _Located:
    """Maps a pydantic error location back to a line of the parsed YAML document."""

    def __init__(self, document: Any) -> None:
        self.document = document

    def line(self, loc: Iterable[Any], *, key_line: bool = False) -> int:
        node, line = self.document, 1
        for part in loc:
            if isinstance(node, CommentedMap) and part in node:
                position = node.lc.key(part) if key_line else node.lc.value(part)
                line = position[0] + 1
                node = node[part]
            elif isinstance(node, CommentedSeq) and isinstance(part, int) and part < len(node):
                line = node.lc.item(part)[0] + 1
                node = node[part]
            elif isinstance(node, CommentedMap | CommentedSeq):
                line = node.lc.line + 1
                break
        return line


def _model_fields(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Names allowed at ``loc`` (a path into EnvironmentFile), for did-you-mean hints."""
    current: Any = model
    for part in loc:
        if isinstance(part, int) or current is None:
            continue
        fields = getattr(current, "model_fields", None)
        if fields is None:
            return []
        if part not in fields:
            # dict keys (group names) map to the dict's value model
            continue
        current = _inner_model(fields[part].annotation)
    return list(getattr(current, "model_fields", {}) or [])


def _inner_model(annotation: Any) -> Any:
    """Find the BaseModel inside Optional[...], tuple[...], dict[..., ...] annotations."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


def _dotted(loc: Iterable[Any]) -> str:
    parts = (f"[{p}]" if isinstance(p, int) else clip(p, NAME_LIMIT) for p in loc)
    return ".".join(parts).replace(".[", "[")


def _pydantic_problems(file: str, document: Any, error: ValidationError) -> list[Problem]:
    located = _Located(document)
    problems = []
    for item in error.errors():
        loc = tuple(
            p for p in item["loc"] if not (isinstance(p, str) and p.startswith("function-"))
        )
        if item["type"] == "extra_forbidden":
            key = loc[-1]
            allowed = _model_fields(EnvironmentFile, loc[:-1])
            hint = difflib.get_close_matches(str(key), allowed, n=1)
            suffix = (
                f" (did you mean {hint[0]!r}?)"
                if hint
                else (f" (allowed: {', '.join(allowed)})" if allowed else "")
            )
            message = f"{_dotted(loc)}: unknown key {clip(key, NAME_LIMIT)!r}{suffix}"
            problems.append(Problem(file, located.line(loc, key_line=True), message))
            continue
        if item["type"] == "missing":
            where = _dotted(loc[:-1]) or "document"
            problems.append(
                Problem(file, located.line(loc[:-1]), f"{where}: missing required key {loc[-1]!r}")
            )
            continue
        text = item["msg"].removeprefix("Value error, ")
        is_key = "[key]" in loc
        loc = tuple(p for p in loc if p != "[key]")
        where = _dotted(loc) or "document"
        problems.append(Problem(file, located.line(loc, key_line=is_key), f"{where}: {text}"))
    return problems


def _inside(root: Path, relative: str) -> Path | None:
    """Resolve ``relative`` below ``root``; None when it escapes (symlinks included)."""
    candidate = (root / relative).resolve()
    try:
        candidate.relative_to(root.resolve())
    except ValueError:
        return None
    return candidate


def _check_environment(
    root: Path, file: str, document: Any, spec: EnvironmentFile, inventories: InventoryReader
) -> tuple[EnvironmentDesired | None, list[Problem]]:
    located = _Located(document)
    problems: list[Problem] = []
    stem = Path(file).stem
    if spec.environment != stem:
        problems.append(
            Problem(
                file,
                located.line(("environment",)),
                f"environment: {spec.environment!r} must equal the file name {stem!r}",
            )
        )

    inventory_path = _inside(root, spec.inventory)
    parsed: Inventory | None = None
    if inventory_path is None:
        problems.append(
            Problem(
                file,
                located.line(("inventory",)),
                f"inventory: {spec.inventory!r} resolves outside the repository",
            )
        )
    elif not inventory_path.exists():
        problems.append(
            Problem(
                file, located.line(("inventory",)), f"inventory: {spec.inventory!r} does not exist"
            )
        )
    else:
        try:
            # named by its file: the operator's dynamic-inventory opt-in is per environment
            parsed = inventories(inventory_path, root=root, environment=stem)
        except InventoryError as exc:
            detail = str(exc).replace(f"{root.resolve()}/", "")
            problems.append(Problem(file, located.line(("inventory",)), f"inventory: {detail}"))
        else:
            line = located.line(("inventory",))
            found = host_problems(parsed, spec.groups, spec.inventory)
            problems.extend(Problem(file, line, f"inventory: {text}") for text in found)

    for name, group in spec.groups.items():
        if parsed is not None and name not in parsed.groups:
            close = difflib.get_close_matches(name, list(parsed.groups), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(
                Problem(
                    file,
                    located.line(("groups", name), key_line=True),
                    f"groups.{name}: no inventory group {name!r} in {spec.inventory}{hint}",
                )
            )
        elif parsed is not None and not parsed.groups[name]:
            problems.append(
                Problem(
                    file,
                    located.line(("groups", name), key_line=True),
                    f"groups.{name}: inventory group {name!r} has no hosts",
                )
            )
        for position, dependency in enumerate(group.after):
            if dependency not in spec.groups:
                problems.append(
                    Problem(
                        file,
                        located.line(("groups", name, "after", position)),
                        f"groups.{name}.after: unknown group {dependency!r}",
                    )
                )
        if group.playbook is not None:
            problem = _check_playbook(root, group.playbook)
            if problem:
                where: tuple[str, ...] = ("groups", name, "playbook")
                problems.append(Problem(file, located.line(where), f"{_dotted(where)}: {problem}"))
    if any(group.playbook is None for group in spec.groups.values()):
        problem = _check_playbook(root, spec.defaults.playbook)
        if problem:
            where = ("defaults", "playbook")
            problems.append(Problem(file, located.line(where), f"{_dotted(where)}: {problem}"))

    order: tuple[str, ...] = ()
    sorter = graphlib.TopologicalSorter(
        {name: [d for d in g.after if d in spec.groups] for name, g in spec.groups.items()}
    )
    try:
        order = tuple(sorter.static_order())
    except graphlib.CycleError as exc:
        cycle = exc.args[1]
        problems.append(
            Problem(
                file,
                located.line(("groups", cycle[0], "after")),
                f"groups: 'after' forms a cycle: {' -> '.join(cycle)}",
            )
        )

    if parsed is not None:
        problems.extend(_conflicting_hosts(file, located, spec, parsed))
    if problems or parsed is None:
        return None, problems

    groups = {name: resolve.group(spec, name, parsed) for name in order}
    return EnvironmentDesired(spec.environment, file, spec.inventory, groups), []


def _check_playbook(root: Path, playbook: str) -> str | None:
    if "/" not in playbook:
        if playbook in content.shipped_playbooks():
            return None
        shipped = ", ".join(sorted(content.shipped_playbooks()))
        return (
            f"{playbook!r} is not a shipped playbook ({shipped}); "
            "use a repository path such as playbooks/site.yml"
        )
    path = _inside(root, playbook)
    if path is None:
        return f"{playbook!r} resolves outside the repository"
    if not path.is_file():
        return f"{playbook!r} does not exist in the repository"
    return None


def _conflicting_hosts(
    file: str, located: _Located, spec: EnvironmentFile, parsed: Inventory
) -> list[Problem]:
    """A host in two groups must not be asked to run two versions of one app."""
    seen: dict[tuple[str, str], tuple[str, str]] = {}
    problems = []
    for name, group in spec.groups.items():
        for host in parsed.groups.get(name, ()):
            for app, version in group.apps.items():
                other = seen.setdefault((host, app), (name, version))
                if other[1] != version:
                    problems.append(
                        Problem(
                            file,
                            located.line(("groups", name, "apps", app)),
                            f"groups.{name}.apps.{app}: host {host!r} is also in group "
                            f"{other[0]!r}, which wants {app} {other[1]} (not {version})",
                        )
                    )
    return problems


def load_environment_file(
    root: Path,
    path: Path,
    inventories: InventoryReader,
    limits: LimitsSettings | None = None,
) -> tuple[EnvironmentDesired | None, list[Problem]]:
    """One environment file, within ``limits``; never raises for what the files contain."""
    file = path.relative_to(root).as_posix()
    try:
        return _load_environment_file(root, file, path, inventories, limits or LimitsSettings())
    except Exception as exc:  # whatever a file contains, it is a problem of that file
        return None, [Problem(file, 1, f"cannot validate: {type(exc).__name__}: {exc}")]


def _load_environment_file(
    root: Path, file: str, path: Path, inventories: InventoryReader, limits: LimitsSettings
) -> tuple[EnvironmentDesired | None, list[Problem]]:
    document, problems = reading.read_mapping(root, path, limits)
    if document is None:
        return None, problems
    try:
        spec = EnvironmentFile.model_validate(_plain(document))
    except ValidationError as exc:
        return None, _pydantic_problems(file, document, exc)
    playbooks = [spec.defaults.playbook, *(g.playbook for g in spec.groups.values() if g.playbook)]
    too_big = reading.referenced_problems(root, spec.inventory, playbooks, limits)
    if too_big:
        return None, too_big
    return _check_environment(root, file, document, spec, inventories)


def _plain(node: Any) -> Any:
    """ruamel round-trip nodes to plain Python containers."""
    if isinstance(node, Mapping):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


def environment_files(root: Path) -> list[Path]:
    directory = root / ENVIRONMENTS_DIR
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())


def load_repository(
    root: Path,
    *,
    inventories: InventoryReader,
    commit: str | None = None,
    limits: LimitsSettings | None = None,
) -> LoadResult:
    """Validate every environment file below ``root``; all-or-nothing, within ``limits``."""
    limits, root = limits or LimitsSettings(), root.resolve()
    too_big = reading.repository_problems(root, limits)
    if too_big:
        return LoadResult(None, tuple(too_big))
    files = environment_files(root)
    if not files:
        return LoadResult(None, (Problem(ENVIRONMENTS_DIR, 1, "no environments/*.yaml files"),))
    problems: list[Problem] = []
    environments: dict[str, EnvironmentDesired] = {}
    stems: dict[str, str] = {}
    for path in files:
        file = path.relative_to(root).as_posix()
        if path.stem in stems:
            problems.append(
                Problem(file, 1, f"environment {path.stem!r} is also defined in {stems[path.stem]}")
            )
            continue
        stems[path.stem] = file
        if _inside(root, file) is None:
            problems.append(Problem(file, 1, "resolves outside the repository"))
            continue
        environment, found = load_environment_file(root, path, inventories, limits)
        problems.extend(found)
        if environment is not None:
            environments[environment.name] = environment
    if problems:
        return LoadResult(None, problems_.capped(sorted(problems), MAX_PROBLEMS))
    return LoadResult(DesiredState(environments=environments, commit=commit), ())
