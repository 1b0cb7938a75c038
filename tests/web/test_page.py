"""Issue 15 in a real browser: the fleet in sync, a bad version rolling out and back live
(without a reload), a rejected commit's ``file:line`` problem. Every test also checks the page:
no console error, no request off loopback, no serious axe-core violation; and saves a
screenshot under its tmp dir.

The tests share one daemon and one browser (``conftest.py``) and run in file order: each
starts from the state the previous one left (converged; rolled back and reverted).
"""

from __future__ import annotations

from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from tests.end_to_end.test_rollout import env_text


def test_the_fleet_page_shows_every_host_in_sync(page, daemon, tmp_path):
    page.open("/")
    cells = page.wait(
        lambda d: len(found := d.find_elements(By.CSS_SELECTOR, "table.matrix td")) == 4 and found,
        what="4 host x app cells",
    )
    assert [c.text for c in cells].count("1.0.0 in sync") == 2
    assert [c.text for c in cells].count("3.0.0 in sync") == 2
    groups = page.text(".environment")
    assert "web in sync" in groups and "2/2 hosts in sync" in groups
    assert "worker in sync" in groups and "after web" in groups
    # The commit message comes from Git: shown as text, never as markup.
    summary = page.text(".summary")
    assert "“initial <em>fleet</em>”" in summary
    assert page.driver.find_elements(By.CSS_SELECTOR, ".summary em") == []
    # Times are rendered in the viewer's zone, relative and absolute.
    stamp = page.driver.find_element(By.CSS_SELECTOR, ".summary time")
    assert "ago" in stamp.text and stamp.get_attribute("title")
    page.checks()
    page.screenshot(tmp_path, "fleet")

    # Keyboard: the first Tab reaches the skip link, Enter moves to the content.
    body = page.driver.find_element(By.TAG_NAME, "body")
    body.send_keys(Keys.TAB)
    assert page.driver.switch_to.active_element.text == "Skip to content"
    page.driver.switch_to.active_element.send_keys(Keys.ENTER)
    assert page.driver.switch_to.active_element.get_attribute("id") == "main"

    # Deep link to one group; dark theme; 375 px wide without sideways scrolling of the page.
    page.open("/environments/prod/web")
    assert page.text("h1") == "prod / web"
    assert len(page.driver.find_elements(By.CSS_SELECTOR, "table.matrix tbody tr")) == 2
    page.dark(True)
    page.driver.set_window_size(375, 800)
    page.wait(
        lambda d: d.execute_script(
            "return document.documentElement.scrollWidth <= window.innerWidth;"
        ),
        what="no horizontal overflow at 375 px",
    )
    assert page.axe() == []
    page.screenshot(tmp_path, "group-dark-375", full=False)
    page.dark(False)
    page.driver.set_window_size(1920, 1080)
    page.open("/")
    page.screenshot(tmp_path, "fleet-1080p", full=False)
    page.checks()


def test_a_bad_version_rolls_out_and_back_live(page, daemon, tmp_path):
    setup = daemon.setup
    setup.fleet.build("shop", "1.2.0", "unhealthy")
    page.open("/")
    page.mark()
    bad = setup.remote.commit(
        "bump shop to a bad build",
        {"environments/prod.yaml": env_text("1.2.0", canary="[50, 100]")},
    )
    assert daemon.github_push().status_code == 202

    # The fleet page notices the rollout by itself (no reload) and links to it.
    link = page.wait(
        lambda d: next(
            (
                row.find_element(By.CSS_SELECTOR, "th a")
                for row in d.find_elements(By.CSS_SELECTOR, "table.rollouts tbody tr")
                if "running" in row.text and "shop 1.2.0" in row.text
            ),
            None,
        ),
        timeout=120,
        what="the rollout of shop 1.2.0 running on the fleet page",
    )
    assert page.same_document()
    link.click()
    page.wait(lambda d: "/rollouts/" in d.current_url)
    first = page.text("h1")
    page.mark()
    title = page.wait_text("rolled back", "h1", timeout=180)
    assert "running" in first and "prod/web" in title
    assert page.same_document(), "the rollout page updated itself"
    # ... from the events stream (each kind is a named SSE event), never falling back to polling
    mode = page.driver.execute_script("return document.body.dataset.liveMode;")
    assert mode == "events"

    revert = setup.remote.remote_head()
    assert revert != bad
    page.wait_text(revert[:12], "#revert", timeout=60)
    failing = page.text("#failed-h + ul")
    assert "http" in failing and "500" in failing
    timeline = page.text(".timeline")
    assert "Deploy step 1 (50%) succeeded" in timeline
    assert "Rollback step 1 succeeded" in timeline
    assert "gate http failed" in page.text("#reason")
    page.checks()
    page.screenshot(tmp_path, "rollout-rolled-back")

    # History, filtered by result, lists it; the fleet is back in sync on the revert.
    page.open("/history?environment=prod&group=web&result=rolled_back")
    rows = page.driver.find_elements(By.CSS_SELECTOR, "table.rollouts tbody tr")
    row = page.text("table.rollouts tbody tr")
    assert len(rows) == 1 and "shop 1.2.0" in row and "rolled back" in row
    page.checks()
    page.open("/")
    assert revert[:12] in page.text(".summary")
    assert page.text(".environment").count("in sync") >= 4


def test_a_rejected_commit_shows_its_file_line_problem(page, daemon, tmp_path):
    remote = daemon.setup.remote
    remote.git(remote.work, "fetch", "--quiet", "origin")  # the daemon pushed its revert
    remote.git(remote.work, "reset", "--quiet", "--hard", "origin/main")
    page.open("/source")
    page.mark()
    text = env_text("1.0.0").replace(
        "environment: prod\n", 'environment: prod\n"<img src=x onerror=alert(1)>": 1\n'
    )
    rejected = remote.commit("hostile", {"environments/prod.yaml": text})
    assert daemon.github_push(secret="not-the-secret").status_code == 401
    assert daemon.github_push().status_code == 202
    problems = page.wait_text("environments/prod.yaml:2", ".problems", timeout=60)
    deliveries = page.text("table.webhooks tbody")  # newest first, since the daemon started
    assert deliveries.index("triggered") < deliveries.index("unauthorized")
    assert "<img src=x onerror=alert(1)>" in problems
    assert page.driver.find_elements(By.CSS_SELECTOR, "main img") == []
    assert rejected[:12] in page.text(".rejected")
    assert page.same_document()
    page.checks()
    page.screenshot(tmp_path, "source-rejected")
    page.open("/")
    assert "environments/prod.yaml:2" in page.text("#rejected")
    page.checks()
