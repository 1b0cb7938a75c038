"""Fixtures of the systemd tier."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _no_reconciler_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    """RECONCILER_* variables of the caller must not change what the config example says."""
    for name in list(os.environ):
        if name.startswith("RECONCILER_"):
            monkeypatch.delenv(name)
