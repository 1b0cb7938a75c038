"""Extra vars as YAML with every string value tagged ``!unsafe``: Ansible never templates them,
so a version like ``{{ lookup('pipe', ...) }}`` stays literal text. Mapping keys stay plain.

ansible-core 2.19 templates *trusted* extra vars from JSON files and ``extravars=``: pass only
this YAML file (``-e @file``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

__all__ = ["dump_unsafe_yaml"]


class _Unsafe(str):
    """A string value to be emitted as ``!unsafe``."""

    __slots__ = ()


class _ExtraVarsDumper(yaml.SafeDumper):
    pass


def _represent_unsafe(dumper: yaml.SafeDumper, data: _Unsafe) -> yaml.ScalarNode:
    text = str(data)
    # Single quotes for ordinary text; double quotes (with escapes) for line breaks and
    # non-printable characters, which single-quoted scalars fold or cannot represent.
    style = "'" if text.isprintable() else '"'
    return dumper.represent_scalar("!unsafe", text, style=style)


_ExtraVarsDumper.add_representer(_Unsafe, _represent_unsafe)


def _mark_unsafe(value: Any) -> Any:
    if isinstance(value, str):
        return _Unsafe(value)
    if isinstance(value, Mapping):
        return {str(k): _mark_unsafe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_mark_unsafe(v) for v in value]
    return value


def dump_unsafe_yaml(extra_vars: Mapping[str, Any]) -> str:
    """YAML text of ``extra_vars`` with every string value tagged ``!unsafe``."""
    return yaml.dump(
        _mark_unsafe(extra_vars),
        Dumper=_ExtraVarsDumper,
        default_flow_style=False,
        allow_unicode=True,
        sort_keys=False,
        width=1 << 20,
    )
