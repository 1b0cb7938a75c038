"""External tools some tiers need (sshd, promtool, prometheus, systemd-analyze): a missing one
fails the test under ``$CI`` (CI must run every tier) and skips it elsewhere."""

from __future__ import annotations

import os
import shutil
from typing import NoReturn

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def missing_tool(message: str) -> NoReturn:
    """Fail under ``$CI``, else skip, saying what is missing."""
    if in_ci():
        pytest.fail(f"{message}; CI must run this test")
    pytest.skip(message)


def require_tool(name: str, package: str) -> str:
    """Absolute path of ``name`` on PATH, or :func:`missing_tool`."""
    path = shutil.which(name)
    if path is None:
        missing_tool(f"{name} is not installed (Debian package {package})")
    return path
