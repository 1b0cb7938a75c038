"""The page behind the API's guard (in process, a fake daemon; no browser): the read-token
rule covers every page and asset, and the pure renderers escape what comes from Git."""

from __future__ import annotations

import httpx

from reconciler.report import event_routes, server, web
from reconciler.report.history import Rollout, Step
from reconciler.report.status import (
    CommitView,
    EnvironmentDetail,
    GroupView,
    HostApp,
    SourceView,
    StatusView,
)
from tests.daemon.test_api_limits import READ, _serve

PAGES = ("/", "/history", "/source", "/environments/prod", "/static/web-2.js")


def test_a_read_token_closes_the_page_too(tmp_path):
    secrets = tmp_path / "secrets"
    for served in _serve(tmp_path, server.Limits(), read_token_file=str(secrets / "read")):
        with httpx.Client(base_url=served.url, timeout=10) as http:
            for path in (*PAGES, "/rollouts/nope"):
                assert http.get(path).status_code == 401, path
            token = {"Authorization": f"Bearer {READ}"}
            fleet = http.get("/", headers=token)
            assert fleet.status_code == 200 and "<h1>Fleet</h1>" in fleet.text
            assert "script-src 'self'" in fleet.headers["content-security-policy"]
            assert http.get("/static/web-2.js", headers=token).status_code == 200
            assert http.get("/rollouts/nope", headers=token).status_code == 404
            assert http.get("/environments/nope", headers=token).status_code == 404


def test_without_a_read_token_the_page_is_open_like_the_api(tmp_path):
    for served in _serve(tmp_path, server.Limits()):
        with httpx.Client(base_url=served.url, timeout=10) as http:
            for path in ("/", "/history", "/source", "/static/web-1.css"):
                assert http.get(path).status_code == 200, path


HOSTILE = '<script>alert("x")</script>'


def test_everything_from_git_is_escaped():
    status = StatusView(
        version="0",
        daemon=None,
        source=SourceView(
            url="u",
            branch="main",
            up=True,
            error="",
            valid_commit="a" * 40,
            commit=CommitView(sha="a" * 40, author=HOSTILE, subject=HOSTILE, committed_at=0),
            rejected_commit="b" * 40,
            problems=[f"environments/prod.yaml:3: {HOSTILE}"],
            last_fetch_at=1.0,
        ),
        environments=[],
        quarantines=[],
    )
    group = GroupView(
        name="web",
        apps={"shop": HOSTILE},
        hosts=1,
        drifted_hosts=1,
        in_sync=False,
        quarantined=False,
        after=[],
    )
    environment = EnvironmentDetail(
        name="prod",
        suspended=True,
        reconciling=False,
        last_result="",
        last_error=HOSTILE,
        last_attempted_commit=None,
        last_applied_commit=None,
        updated_at=None,
        groups=[group],
        hosts=[
            HostApp(
                group="web",
                host="h1",
                app="shop",
                desired=HOSTILE,
                deployed=HOSTILE,
                in_sync=False,
                drift="pending",
            )
        ],
    )
    rollout = Rollout(
        id="r1",
        environment="prod",
        group="web",
        commit=None,
        apps={"shop": HOSTILE},
        state="rolled_back",
        reason=HOSTILE,
        started_at=0,
        finished_at=1,
        revert=HOSTILE,
        steps=[],
    )
    pages = [
        web.render_fleet(status, [environment], [rollout]),
        web.render_rollout(rollout),
        web.render_source(status),
        web.render_history(status, [rollout], {"environment": "", "group": "", "result": ""}),
    ]
    for page in pages:
        assert "<script>alert" not in page
        assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page
    assert "suspended" in pages[0] and "environments/prod.yaml:3" in pages[0]


def test_a_baking_step_counts_down_to_its_bake_end_and_then_says_when_it_ended():
    def rollout(state: str, checkpoints: list[str]) -> Rollout:
        step = Step(
            phase="deploy", index=1, percent=50, hosts=["web-01"], state="succeeded",
            host_results={}, started_at=0, finished_at=10, bake_until=1_900_000_000.0,
            gate_results=[
                {"gate": "http", "host": "web-01", "passed": True, "checkpoint": c}
                for c in checkpoints
            ],
        )  # fmt: skip
        return Rollout(
            id="r1", environment="prod", group="web", commit=None, apps={"shop": "2"},
            state=state, reason="", started_at=0, finished_at=None, revert=None, steps=[step],
        )  # fmt: skip

    baking = web.render_rollout(rollout("running", ["after_step"]))
    assert "baking" in baking and "data-countdown" in baking
    assert 'datetime="2030-03-17T17:46:40Z" data-countdown' in baking
    baked = web.render_rollout(rollout("running", ["after_step", "after_bake"]))
    assert "Baked until" in baked and "data-countdown" not in baked
    plain = Step(
        phase="deploy", index=1, percent=50, hosts=["web-01"], state="succeeded",
        host_results={}, gate_results=[], started_at=0, finished_at=10,
    )  # fmt: skip
    unbaked = web.render_rollout(rollout("succeeded", []).model_copy(update={"steps": [plain]}))
    assert "Bake" not in unbaked and "baking" not in unbaked


def test_the_page_follows_the_events_stream_and_with_replicas_polls_as_well():
    status = StatusView(
        version="0", daemon=None, environments=[], quarantines=[],
        source=SourceView(
            url="u", branch="main", up=True, error="", valid_commit=None, rejected_commit=None,
            problems=[], last_fetch_at=None,
        ),
    )  # fmt: skip
    alone = web.render_source(status, events=web.Live(event_routes.STREAM))
    assert f'data-events="{event_routes.STREAM}"' in alone and "data-backup-poll" not in alone
    assert "rollout_rolled_back" in alone, "the stream's event names are listed for the script"
    shared = web.render_source(status, events=web.Live(event_routes.STREAM, 10_000))
    assert 'data-backup-poll="10000"' in shared
    assert "data-events" not in web.render_source(status), "no stream: the script polls"
