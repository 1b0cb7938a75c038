"""PostgreSQL for the tests: one throwaway server per test session, a fresh database per test.

``postgres_cluster`` (session) starts ``reconciler.testing.postgres.PostgresCluster`` the first
time a test asks for it; without PostgreSQL the test fails under ``$CI`` and is skipped
elsewhere (``tests.tools.missing_tool``). ``postgres_url`` is a new empty database, dropped
after the test (its connections forced out). Registered for every tier by ``tests/conftest.py``;
the multi-replica tests start their daemons on ``postgres_url``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from reconciler.testing.postgres import PostgresCluster, server_bin
from tests.tools import missing_tool

_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    found = server_bin()
    if found is None:
        missing_tool("PostgreSQL is not installed (Debian package postgresql)")
    cluster = PostgresCluster.start(found)
    yield cluster
    cluster.stop()


class Database:
    """A database of the session's cluster, made for one test."""

    def __init__(self, cluster: PostgresCluster) -> None:
        self.cluster = cluster
        self.name = f"test_{next(_numbers)}"
        self.url = cluster.create_database(self.name)

    def drop(self) -> None:
        self.cluster.drop_database(self.name)


@pytest.fixture
def postgres_database(postgres_cluster: PostgresCluster) -> Iterator[Database]:
    database = Database(postgres_cluster)
    yield database
    database.drop()


@pytest.fixture
def postgres_url(postgres_database: Database) -> str:
    return postgres_database.url
