"""The registry of commit-status providers: name -> the module that speaks its API.

The only place that dispatches on ``commit_status.provider``. Each module has the shape of
``edges.commit_status.Provider`` (type-checked below). Adding a provider: one module, one line
in ``_MODULES`` and its name in ``settings.CommitStatusSettings.provider``.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from reconciler.edges.commit_status import Provider, gitea, github, gitlab

__all__ = ["PROVIDERS", "get"]

_MODULES: tuple[Provider, ...] = (github, gitlab, gitea)

PROVIDERS: Mapping[str, Provider] = MappingProxyType({m.KIND: m for m in _MODULES})


def get(name: str) -> Provider:
    """The module of ``name``; ``KeyError`` naming the known providers for another."""
    try:
        return PROVIDERS[name]
    except KeyError:
        known = ", ".join(PROVIDERS)
        raise KeyError(f"unknown commit status provider {name!r} (known: {known})") from None
