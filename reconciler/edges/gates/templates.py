"""Placeholders of gate templates: which tokens exist, which a text uses, and their values.

Contract:

* Templates are rendered by plain replacement of exactly these tokens, in one pass (a value is
  never re-scanned): ``{host}`` (``Host.address``, i.e. ``ansible_host``), ``{name}``
  (``Host.name``, the inventory name), ``{port}`` (``Host.ports[app]``, from
  ``deploy_app_ports``), ``{app}``, ``{version}``, ``{environment}``, ``{group}``. Nothing
  else is interpreted: never ``str.format``, so ``{host.__class__}`` stays literal text.
* A token whose value is missing raises :class:`~reconciler.edges.gates.MissingPlaceholder`
  with a reason saying why (``{port}`` of a host without a port for the app, a target token
  when there is no target).
* ``TARGET_TOKENS`` depend on the target (host and app); ``HOST_TOKENS`` make a result name
  its host, ``APP_TOKENS`` its app.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from reconciler.edges.gates import GateTarget, MissingPlaceholder

__all__ = [
    "APP_TOKENS",
    "HOST_TOKENS",
    "PLACEHOLDERS",
    "TARGET_TOKENS",
    "Values",
    "render_template",
    "tokens",
    "values",
]

PLACEHOLDERS: tuple[str, ...] = ("host", "name", "port", "app", "version", "environment", "group")
#: Tokens whose value depends on the target (host and app), not only on environment/group.
TARGET_TOKENS = frozenset({"host", "name", "port", "app", "version"})
HOST_TOKENS = frozenset({"host", "name", "port"})
APP_TOKENS = frozenset({"app", "version", "port"})
_TOKEN_RE = re.compile(r"\{(" + "|".join(PLACEHOLDERS) + r")\}")

#: Token -> value (None: missing), and ``_missing_<token>`` -> the reason it is missing.
Values = Mapping[str, str | None]


def render_template(template: str, values: Values) -> str:
    """Replace exactly the ``{token}`` placeholders of ``values``; leave all other text alone.

    A token whose value is ``None`` (or absent) raises :class:`MissingPlaceholder`, with the
    reason stored under ``values["_missing_<token>"]`` when given.
    """

    def replace(match: re.Match[str]) -> str:
        token = match.group(1)
        value = values.get(token)
        if value is None:
            reason = values.get(f"_missing_{token}") or f"no value for {{{token}}}"
            raise MissingPlaceholder(reason)
        return value

    return _TOKEN_RE.sub(replace, template)


def tokens(texts: Iterable[str]) -> frozenset[str]:
    """The placeholders used by ``texts``."""
    return frozenset(m.group(1) for text in texts for m in _TOKEN_RE.finditer(text))


def values(target: GateTarget | None, environment: str, group: str) -> dict[str, str | None]:
    """The placeholder values for ``target`` (None: no target, only environment and group)."""
    found: dict[str, str | None] = {"environment": environment, "group": group}
    if target is None:
        for token in TARGET_TOKENS:
            found[f"_missing_{token}"] = f"{{{token}}} needs a target, and there is none"
        return found
    host = target.host
    port = host.ports.get(target.app) if host.ports else None
    found.update(
        host=host.address,
        name=host.name,
        app=target.app,
        version=target.version,
        port=None if port is None else str(port),
        _missing_port=f"host {host.name} has no port for app {target.app} (needed by {{port}})",
    )
    return found
