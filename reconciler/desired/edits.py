"""Pure edits of one environment file's text: read and set a group's app versions.

Contract (no I/O, no Git; text in, text out):

* ``group_versions(text, group)`` returns ``groups.<group>.apps`` as ``{app: version}`` strings.
* ``set_group_versions(text, group, versions)`` returns the text with only the values of
  ``groups.<group>.apps.<app>`` for the given apps replaced. Everything else stays byte for byte:
  comments, key order, indentation, flow or block style and the quoting of each edited scalar
  (``"2.4.1"`` stays double quoted, ``'2.4.1'`` single quoted, a plain scalar stays plain unless
  the new version would not read back as a string, e.g. ``1.0``, then it is double quoted). The
  file is parsed with ruamel.yaml's round-trip loader to find each value, the value token is
  replaced in place, and the result is parsed again and checked; if an in-place edit is not
  possible the document is dumped by ruamel.yaml's round-trip dumper instead (comments and key
  order are still kept, whitespace may change).
* ``only_group_versions_changed(before, after, group)`` is True when the two documents differ,
  and differ only in the values of ``groups.<group>.apps`` (same apps, nothing else changed).
  Documents are compared as parsed data: comments and formatting are ignored (they do not change
  what is deployed, and a true ``git revert`` simply restores them with the versions).

Every failure (invalid YAML, missing group or app, invalid version) raises ``EditError``, and
so does a document ``desired.reading`` would refuse (the default ``limits``: larger than
``max_file_bytes``, YAML anchors or aliases, deeper than ``max_depth``, more than ``max_nodes``):
the texts edited and compared here may come from any commit of the branch, rejected ones
included, and an alias bomb compared as data would expand to gigabytes.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.error import YAMLError
from ruamel.yaml.scalarstring import DoubleQuotedScalarString, SingleQuotedScalarString

from reconciler.desired import reading
from reconciler.desired.schema import VERSION_RE
from reconciler.settings import LimitsSettings

# Characters that end a plain scalar token of a version (versions never contain them).
_PLAIN_TOKEN = re.compile(r"[^\s,\[\]{}#\"']+")
LIMITS = LimitsSettings()


class EditError(ValueError):
    """The edit cannot be made: invalid YAML, missing group or app, or an invalid version."""


def _yaml() -> YAML:
    yaml = reading.bounded_yaml(LIMITS)
    yaml.preserve_quotes = True
    return yaml


def _load(text: str) -> Any:
    if len(text) > LIMITS.max_file_bytes:
        raise EditError(f"the file is larger than {LIMITS.max_file_bytes} bytes")
    try:
        return _yaml().load(text)
    except YAMLError as exc:
        raise EditError(f"invalid YAML: {exc}") from exc
    except Exception as exc:  # a constructor's ValueError (a 5,000-digit integer...)
        raise EditError(f"invalid YAML: {type(exc).__name__}: {exc}") from exc


def _apps(document: Any, group: str) -> CommentedMap:
    groups = document.get("groups") if isinstance(document, Mapping) else None
    if not isinstance(groups, Mapping):
        raise EditError("the file has no 'groups' mapping")
    spec = groups.get(group)
    if not isinstance(spec, Mapping):
        raise EditError(f"group {group!r} is not in the file")
    apps = spec.get("apps")
    if not isinstance(apps, CommentedMap):
        raise EditError(f"group {group!r} has no 'apps' mapping")
    return apps


def group_versions(text: str, group: str) -> dict[str, str]:
    """``groups.<group>.apps`` of the document as ``{app: version}``."""
    return {str(app): str(version) for app, version in _apps(_load(text), group).items()}


def _reads_as_string(value: str) -> bool:
    try:
        loaded = YAML(typ="safe", pure=True).load(f"v: {value}\n")
    except YAMLError:
        return False
    return isinstance(loaded, dict) and loaded.get("v") == value


def _token(value: Any, new: str) -> tuple[str | None, str]:
    """(regex of the old value token or None for plain, text of the new token)."""
    if isinstance(value, DoubleQuotedScalarString):
        return f'"{re.escape(str(value))}"', f'"{new}"'
    if isinstance(value, SingleQuotedScalarString):
        return f"'{re.escape(str(value))}'", f"'{new}'"
    return None, new if _reads_as_string(new) else f'"{new}"'


def _splice(text: str, apps: CommentedMap, versions: Mapping[str, str]) -> str | None:
    """Replace each value token in place; None when a token is not where ruamel says."""
    lines = text.splitlines(keepends=True)
    edits: list[tuple[int, int, int, str]] = []
    for app, new in versions.items():
        line, col = apps.lc.value(app)
        if line >= len(lines):
            return None
        pattern, replacement = _token(apps[app], new)
        match = re.compile(pattern or _PLAIN_TOKEN.pattern).match(lines[line], col)
        if match is None:
            return None
        edits.append((line, match.start(), match.end(), replacement))
    # Right to left so earlier columns on a shared (flow style) line stay valid.
    for line, start, end, replacement in sorted(edits, reverse=True):
        lines[line] = lines[line][:start] + replacement + lines[line][end:]
    return "".join(lines)


def _dump(document: Any) -> str:
    stream = io.StringIO()
    yaml = _yaml()
    yaml.width = 4096
    yaml.dump(document, stream)
    return stream.getvalue()


def set_group_versions(text: str, group: str, versions: Mapping[str, str]) -> str:
    """The text with ``groups.<group>.apps.<app>`` set to ``versions[app]`` (only those)."""
    document = _load(text)
    apps = _apps(document, group)
    missing = sorted(set(versions) - {str(a) for a in apps})
    if missing:
        raise EditError(f"group {group!r} has no app {', '.join(map(repr, missing))}")
    for app, version in versions.items():
        if not isinstance(version, str) or not VERSION_RE.fullmatch(version):
            raise EditError(f"version {version!r} of {app!r} is not a valid version")
    changes = {app: v for app, v in versions.items() if str(apps[app]) != v}
    if not changes:
        return text
    expected = _plain(document)
    expected["groups"][group]["apps"].update(changes)
    edited = _splice(text, apps, changes)
    if edited is not None and _safe_plain(edited) == expected:
        return edited
    # Fallback: set the values in the round-trip tree, keeping each scalar's quoting style.
    for app, new in changes.items():
        old = apps[app]
        if isinstance(old, DoubleQuotedScalarString):
            apps[app] = DoubleQuotedScalarString(new)
        elif isinstance(old, SingleQuotedScalarString):
            apps[app] = SingleQuotedScalarString(new)
        else:
            apps[app] = new if _reads_as_string(new) else DoubleQuotedScalarString(new)
    dumped = _dump(document)
    if _safe_plain(dumped) != expected:  # pragma: no cover - defensive
        raise EditError("the edited document does not read back as expected")
    return dumped


def _plain(node: Any) -> Any:
    """Round-trip nodes to plain containers and values (comments and styles dropped)."""
    if isinstance(node, Mapping):
        return {_plain(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    if isinstance(node, str):
        return str(node)
    return node


def _safe_plain(text: str) -> Any:
    try:
        return _plain(_load(text))
    except EditError:
        return None


def only_group_versions_changed(before: str, after: str, group: str) -> bool:
    """True when the documents differ, only in ``groups.<group>.apps`` values (same apps)."""
    try:
        old_doc, new_doc = _load(before), _load(after)
        old_apps, new_apps = _plain(_apps(old_doc, group)), _plain(_apps(new_doc, group))
    except EditError:
        return False
    if set(old_apps) != set(new_apps) or old_apps == new_apps:
        return False
    old, new = _plain(old_doc), _plain(new_doc)
    old["groups"][group]["apps"] = new["groups"][group]["apps"] = None
    return bool(old == new)
