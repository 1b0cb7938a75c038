"""Replicas on one PostgreSQL: the local fleet of tests/end_to_end for the real daemons."""

from __future__ import annotations

from tests.end_to_end.conftest import fleet  # noqa: F401 (fixture)
