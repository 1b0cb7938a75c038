"""Who owns what, in the status read model (``report.status``): the live leases of the
leases table with replicas (``record.LeaseHolders``), the daemon itself with SQLite, nobody
when the store is read without a daemon; shown by ``reconciler status``."""

from __future__ import annotations

import io

from rich.console import Console

from reconciler.record import Lease, LeaseHolders
from reconciler.record.sqlite import SqliteStateStore
from reconciler.report import status as read_model
from reconciler.report import terminal
from reconciler.report.terminal import Output


class Holders:
    def __init__(self, leases: list[Lease]) -> None:
        self.found = leases

    def leases(self) -> list[Lease]:
        return self.found


def test_each_environment_names_its_owner(tmp_path):
    store = SqliteStateStore(tmp_path / "state.db")
    for name in ("env-a", "env-b", "env-c"):
        store.update_environment(name, 1.0, last_error="")
    holders: LeaseHolders = Holders(
        [
            Lease("env-a", "replica-a", 7, 2000.0, live=True),
            Lease("env-b", "replica-b", 3, 1000.0, live=False),  # lapsed: nobody now
        ]
    )
    view = read_model.build(
        store, None, url="", branch="main", owners=read_model.lease_owners(holders)
    )
    owner = {e.name: e.owner for e in view.environments}
    assert owner["env-a"] == read_model.OwnerView(
        replica="replica-a", expires_at=2000.0, fencing_token=7
    )
    assert owner["env-b"] is None and owner["env-c"] is None

    alone = read_model.build(
        store, None, url="", branch="main", owners=read_model.sole_owner("host-1")
    )
    assert {e.owner.replica for e in alone.environments if e.owner} == {"host-1"}
    assert all(e.owner and e.owner.fencing_token is None for e in alone.environments)
    offline = read_model.build(store, None, url="", branch="main")
    assert [e.owner for e in offline.environments] == [None, None, None]

    out = io.StringIO()
    terminal.status(Console(file=out, width=120), view, Output.TABLE, "daemon")
    table = out.getvalue()
    assert "owner" in table and "replica-a" in table
    store.close()
