"""External tools some tests need: required under CI, a skip elsewhere when missing."""

from __future__ import annotations

import os
import shutil

import pytest


def require_tool(name: str, package: str) -> str:
    """Absolute path of ``name``; the calling test fails under ``$CI``, else it is skipped."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (Debian package {package})"
        if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
            pytest.fail(f"{message}; CI must run this test")
        pytest.skip(message)
    return path
