"""Metrics scraped over HTTP equal the state after real reconciles; promtool; a real Prometheus."""

from __future__ import annotations

import json
import subprocess
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from reconciler.record.sqlite import SqliteStateStore
from reconciler.settings import Settings
from reconciler.testing.fleet import free_port
from tests.daemon.conftest import wait_for
from tests.tools import require_tool


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(metrics, name: str, **labels: str) -> float | None:
    return metrics.get((name, tuple(sorted(labels.items()))))


def test_metrics_equal_the_state_after_real_reconciles(converged):
    daemon = converged
    store = SqliteStateStore(Settings.load(daemon.config).database_path)
    text = daemon.get("/metrics").content
    checked = subprocess.run(
        [promtool(), "check", "metrics"], input=text, capture_output=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    m = samples(text.decode())
    for group, app, hosts, version in (("web", "shop", 4, "1.0.0"), ("worker", "jobs", 2, "3.0.0")):
        assert value(m, "reconciler_group_hosts", environment="prod", group=group) == hosts
        assert value(m, "reconciler_drift_hosts", environment="prod", group=group, app=app) == 0
        assert value(m, "reconciler_in_sync", environment="prod", group=group) == 1
        assert (
            value(
                m,
                "reconciler_desired_version_info",
                environment="prod",
                group=group,
                app=app,
                version=version,
            )
            == 1
        )
        assert (
            value(
                m, "reconciler_rollouts_total", environment="prod", group=group, result="succeeded"
            )
            == 1
        )
    steps = [s for r in store.rollouts("prod") for s in store.steps(r.id)]
    runs = sum(v for (n, _), v in m.items() if n == "reconciler_playbook_runs_total")
    assert runs == len(steps) == 2
    gates = sum(len(s.gate_results) for s in steps)
    checks = sum(v for (n, _), v in m.items() if n == "reconciler_health_checks_total")
    assert checks == gates
    assert value(m, "reconciler_source_up") == 1
    assert value(m, "reconciler_source_tip_valid") == 1
    assert value(m, "reconciler_suspended", environment="prod") == 0
    fetched = float(store.get_meta("source.last_fetch_at") or 0)
    assert value(m, "reconciler_source_last_fetch_timestamp_seconds") == fetched
    assert value(m, "reconciler_reconcile_duration_seconds_count", environment="prod") >= 1

    # Suspended, then a bump: drift shows every host, nothing changes.
    assert daemon.post("/api/v1/environments/prod/suspend").status_code == 200
    daemon.setup.commit_versions({"web": {"shop": "1.1.0"}, "worker": {"jobs": "3.0.0"}}, "bump")
    daemon.post("/api/v1/sync", {"wait": True, "timeout": 60})
    m = samples(daemon.get("/metrics").text)
    assert value(m, "reconciler_suspended", environment="prod") == 1
    assert value(m, "reconciler_drift_hosts", environment="prod", group="web", app="shop") == 4
    assert value(m, "reconciler_in_sync", environment="prod", group="web") == 0
    assert (
        value(
            m,
            "reconciler_desired_version_info",
            environment="prod",
            group="web",
            app="shop",
            version="1.1.0",
        )
        == 1
    )
    # An invalid commit: rejected, visible, the last valid one stays.
    daemon.setup.remote.commit("broken", {"environments/prod.yaml": "environment: prod\n"})
    daemon.post("/api/v1/sync", {"wait": True, "timeout": 60})
    m = samples(daemon.get("/metrics").text)
    assert value(m, "reconciler_source_tip_valid") == 0
    assert value(m, "reconciler_drift_hosts", environment="prod", group="web", app="shop") == 4


def promtool() -> str:
    return require_tool("promtool", "prometheus")


def test_a_real_prometheus_scrapes_the_daemon(converged, tmp_path):
    binary = require_tool("prometheus", "prometheus")
    promtool()
    target = converged.url.removeprefix("http://")
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: reconciler\n    static_configs: [{{targets: ['{target}']}}]\n"
    )
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        query = "sum by (group) (reconciler_group_hosts)"
        url = f"http://127.0.0.1:{port}/api/v1/query?query={urllib.request.quote(query)}"

        def scraped():
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    result = json.load(response)["data"]["result"]
            except OSError:
                return None
            return {r["metric"]["group"]: float(r["value"][1]) for r in result} or None

        assert wait_for(scraped, 60, "prometheus to scrape the daemon") == {"web": 4, "worker": 2}
        up_url = f"http://127.0.0.1:{port}/api/v1/query?query=up"
        with urllib.request.urlopen(up_url, timeout=2) as response:
            assert json.load(response)["data"]["result"][0]["value"][1] == "1"
    finally:
        proc.terminate()
        proc.wait(timeout=20)
