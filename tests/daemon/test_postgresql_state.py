"""The real daemon with its state in PostgreSQL (``state.url``): it converges the fleet, and
when the database goes away it keeps running (a warning per interrupted reconcile, the API
answers 503) and carries on by itself once the database is back (its lease trusted again)."""

from __future__ import annotations

from reconciler.record.postgresql import PostgresStateStore
from reconciler.settings import Settings
from reconciler.testing.postgres import PostgresCluster
from tests.daemon.conftest import wait_for

V1 = {"web": {"shop": "1.0.0"}, "worker": {"jobs": "3.0.0"}}
V2 = {"web": {"shop": "1.1.0"}, "worker": {"jobs": "3.0.0"}}


def test_the_daemon_on_postgresql_converges_and_rides_out_an_outage(
    setup, make_daemon, postgres_cluster
):
    cluster = PostgresCluster.start(postgres_cluster.bin_dir)  # its own: the test stops it
    try:
        url = cluster.create_database("daemon")
        setup.commit_versions(V1, "initial")
        daemon = make_daemon(state={"url": url, "connect_timeout": "2s"}).start()
        daemon.wait_converged("1.0.0", "the initial convergence")
        state_dir = Settings.load(daemon.config).state_dir
        assert not (state_dir / "state.db").exists(), "no SQLite beside PostgreSQL"
        with PostgresStateStore.open(url, read_only=True) as store:
            assert {r.group for r in store.rollouts("prod")} == {"web", "worker"}

        cluster.stop_server()
        setup.commit_versions(V2, "bump during the outage")
        daemon.post("/api/v1/sync", {"wait": False})
        wait_for(
            lambda: any(e.get("event") == "store_unavailable" for e in daemon.events()),
            60,
            "the reconcile to end on the unreachable store",
        )
        assert daemon.get("/healthz").status_code == 200, "the daemon is alive"
        unavailable = daemon.get("/api/v1/status")
        assert unavailable.status_code == 503 and unavailable.headers["retry-after"]
        assert daemon.proc is not None and daemon.proc.poll() is None
        # A failed lease round (every 5 s, ending on the 2 s connect timeout): the next round
        # comes more than the lease's trusted 10 s after its last renewal, so ``prod`` has no
        # token until it renews, and a sync asked for meanwhile is skipped (and was lost
        # before ``lease_trusted_again``). Had the database stayed away 15 s, the lease lapses
        # and is acquired anew.
        wait_for(
            lambda: any(e.get("event") == "lease_round_failed" for e in daemon.events()),
            60,
            "a failed lease round",
        )

        cluster.start_server()
        wait_for(lambda: daemon.get("/api/v1/status").status_code == 200, 60, "reads again")
        # No request from here on: the lease gives a token again (renewed, or lapsed in the
        # database after 15 s and acquired anew), and that reconciles ``prod`` by itself.
        wait_for(lambda: daemon.converged("1.1.0"), 180, "convergence after the outage")
        told = [e for e in daemon.events() if e.get("environment") == "prod"]
        assert any(
            e["event"] == "lease_trusted_again"
            or (e["event"] == "lease_acquired" and e.get("fence", 0) > 1)
            for e in told
        ), "the lease came back"
        with PostgresStateStore.open(url, read_only=True) as store:
            assert store.unfinished_rollouts() == []
            stored = store.events(limit=500, oldest_first=True)  # commits: no environment
        # The event log lives in PostgreSQL too: both bumps are told, in order, over the API.
        page = daemon.get("/api/v1/events?environment=prod&kind=rollout_succeeded&limit=50")
        told = [e["group"] for e in page.json()["events"]]
        assert told.count("web") >= 2 and told.count("worker") >= 1, told
        ids = [e.id for e in stored]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        assert {e.kind for e in stored} >= {"commit_accepted", "rollout_started", "step_finished"}
        assert daemon.stop() == 0
        assert not any(e.get("event") == "reconcile_crashed" for e in daemon.events())
        # The outage was the store's, not Git's: no traceback, no backoff of the fetches.
        assert not any(
            e.get("event") in ("refresh_failed", "source_backoff") for e in daemon.events()
        )
    finally:
        cluster.stop()
