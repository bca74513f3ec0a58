"""``gym view`` in a real headless browser: Debian's chromium driven by Playwright (the
system binary; no browser download). The app runs in werkzeug's threaded server on an
ephemeral port. A full-page screenshot of each page visited is saved under
test-artifacts/viewer/ (one PNG per test, named after it)."""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from gymcore.viewer.app import create_app

from .conftest import ROOT
from .viewer_data import XSS, resumed_run, write_rollouts

#: Debian's chromium; GYM_TEST_CHROMIUM names another binary (a missing path skips these tests).
CHROMIUM = Path(os.environ.get("GYM_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts" / "viewer"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

if not CHROMIUM.is_file():
    pytest.skip(f"browser tests skipped: chromium not found at {CHROMIUM} (`make test` installs Debian's "
                "with apt-get when run as root; GYM_TEST_CHROMIUM=PATH names another)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="browser tests skipped: playwright is not installed "
                               "(pip install -e '.[test]')")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    path = write_rollouts(tmp_path_factory.mktemp("view") / "run.jsonl")
    server = make_server("127.0.0.1", 0, create_app(path, wait=None), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.port}", path
    server.shutdown()
    thread.join(timeout=10)


def _serve(path: Path):
    server = make_server("127.0.0.1", 0, create_app(path, wait=None), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread


@pytest.fixture
def resumed(tmp_path):
    """tests/viewer_data.resumed_run (a run resumed once, failures in its sidecar) served."""
    path = resumed_run(tmp_path)
    server, thread = _serve(path)
    yield f"http://127.0.0.1:{server.port}", path
    server.shutdown()
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser():
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, served, request):
    """A fresh tab that records dialogs and every request; after the test, a full-page
    screenshot, and a check that nothing left 127.0.0.1 (pages work offline)."""
    base, _ = served
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    tab = context.new_page()
    tab.dialogs, tab.requests = [], []
    tab.on("dialog", lambda dialog: (tab.dialogs.append(dialog.message), dialog.dismiss()))
    tab.on("request", lambda req: tab.requests.append(req.url))
    tab.base = base
    yield tab
    tab.evaluate("window.scrollTo(0, 0)")
    tab.screenshot(path=str(ARTIFACTS / f"{request.node.name.removeprefix('test_')}.png"), full_page=True)
    context.close()
    foreign = [url for url in tab.requests if not url.startswith("http://127.0.0.1:") and not url.startswith("data:")]
    assert not foreign, f"pages must work offline; requested {foreign}"


def test_overview(page):
    page.goto(page.base + "/")
    tiles = page.locator(".tile")
    assert tiles.filter(has_text="rollouts").first.inner_text().split()[0] == "12"
    assert "pass@2" in page.locator(".tiles").inner_text()
    assert page.locator("figure.chart svg rect.bar").count() == 3 + 4  # rewards 0/0.5/1; turns 0..3
    page.get_by_role("link", name="mixed results").click()
    page.wait_for_url("**/tasks?flag=mixed")
    assert page.locator("table.tasks tbody tr td:first-child").all_inner_texts() == ["1", "3"]
    page.goto(page.base + "/")  # the screenshot shows the overview


def test_filter_and_sort(page):
    page.goto(page.base + "/rollouts")
    assert page.locator("table.rollouts tbody tr").count() == 12
    page.fill("input[name=reward_max]", "0")
    page.select_option("select[name=tool]", "get_weather")
    page.click("form.filters button[type=submit]")
    page.wait_for_url("**/rollouts?*")
    assert "reward_max=0" in page.url and "tool=get_weather" in page.url
    rows = page.locator("table.rollouts tbody tr")
    assert rows.count() == 1 and "Parris is rainy." in rows.first.inner_text()
    page.goto(page.base + "/rollouts?task=3")
    page.get_by_role("link", name="reward").click()  # sort by reward, best first
    page.wait_for_url("**sort=-reward**")
    assert page.locator("table.rollouts tbody tr td:nth-child(2)").all_inner_texts() == ["12", "11", "10"]
    page.fill("input[name=q]", "garúa")
    page.press("input[name=q]", "Enter")
    page.wait_for_url("**q=gar**")
    assert page.locator("table.rollouts tbody tr td:nth-child(2)").all_inner_texts() == ["11"]
    page.goto(page.base + "/rollouts")


def test_one_rollout(page):
    page.goto(page.base + "/rollouts?task=3")
    page.get_by_role("link", name="11", exact=True).click()
    page.wait_for_url("**/rollouts/11")
    assert page.locator("section.step").count() == 3
    first_call = page.locator(".item.call").first
    assert '"query": "Lima climate"' in first_call.locator("pre").first.inner_text()
    assert page.locator(".msg.final").inner_text().endswith("Probably foggy.")
    raw = page.locator("details.raw pre")
    assert not raw.is_visible()
    page.click("details.raw summary")
    assert raw.is_visible() and json.loads(raw.inner_text())["rollout_index"] == 1


def test_compare(page):
    page.goto(page.base + "/rollouts?task=1")
    page.check("input[name=pick][value='4']")
    page.check("input[name=pick][value='5']")
    page.get_by_role("button", name="Compare checked").click()
    page.wait_for_url("**/compare?pick=4&pick=5")
    assert "First difference: step 1" in page.locator(".first-diff-note").inner_text()
    first = page.locator("#first-diff")
    assert first.is_visible() and first.locator(".item.hl").count() == 2
    assert '"city": "Parris"' in first.inner_text()


def test_tasks(page):
    page.goto(page.base + "/tasks")
    flags = page.locator("table.tasks tbody tr td:nth-child(8)").all_inner_texts()
    assert flags == ["zero variance all pass", "mixed", "zero variance all fail", "mixed errors"]
    page.get_by_role("link", name="best ⇄ worst").first.click()
    page.wait_for_url("**/compare?a=4&b=5")
    page.goto(page.base + "/tasks")


@pytest.mark.parametrize("where", ["rollout", "list", "compare"])
def test_script_in_model_output_is_shown_not_run(page, where):
    url = {"rollout": "/rollouts/7", "list": "/rollouts?q=alert", "compare": "/compare?a=7&b=8"}[where]
    page.goto(page.base + url)
    page.wait_for_load_state("load")
    assert page.dialogs == []
    assert page.evaluate("document.querySelectorAll('script').length") == 0
    shown = page.get_by_text(XSS, exact=False).first
    assert shown.is_visible()


def test_failures_tab(page, served):
    _, path = served
    sidecar = path.with_name(path.stem + ".failures.jsonl")
    sidecar.write_text(json.dumps({"task_index": 4, "rollout_index": 0, "class": "model:timeout",
                                   "message": "timed out after 3 attempts", "attempts": 3}) + "\n")
    try:
        page.goto(page.base + "/")
        page.get_by_role("link", name="Failures", exact=True).click()
        page.wait_for_url("**/failures")
        row = page.locator("table.failures tbody tr").first
        assert "model:timeout" in row.inner_text() and "timed out after 3 attempts" in row.inner_text()
        page.click("table.failures details summary")
        assert '"attempts": 3' in row.locator("pre").inner_text()
    finally:
        shutil.move(str(sidecar), str(sidecar) + ".done")


def test_overview_counts_the_failures_in_the_sidecar(page, resumed):
    base, _ = resumed
    page.goto(base + "/")
    tile = page.locator(".tile")
    assert tile.filter(has_text="rollouts").first.inner_text().split()[0] == "12"
    assert tile.filter(has_text="tasks").first.inner_text().split()[:4] == ["6", "tasks", "·", "2"]
    pass_at = dict(reversed(t.split("\n")) for t in page.locator(".tile.pass-at").all_inner_texts())
    assert pass_at == {"pass@1": "0.5", "pass@2": "0.75"}
    note = page.locator(".pass-note").inner_text()
    assert "over 4 tasks with every repeat scored; 2 tasks left out" in note and "pass: reward ≥ 1" in note
    assert page.get_by_text("all repeats fail (reward < 1)").is_visible()
    failed = page.locator(".tile.failed")
    assert failed.inner_text().split()[0] == "3"
    failed.click()
    page.wait_for_url("**/failures")
    rows = page.locator("table.failures tbody tr")
    assert rows.count() == 3
    assert [rows.nth(i).locator("td").nth(2).inner_text() for i in range(3)] == ["3", "4", "4"]
    assert page.locator("table.failures b").count() == 0  # "<b>not bold</b>" in a message stays text
    assert "<b>not bold</b>" in rows.first.locator("summary").inner_text()
    page.get_by_role("link", name="all 7 records").click()
    page.wait_for_url("**/failures?show=all")
    states = page.locator("table.failures tbody tr td:nth-child(6)").all_inner_texts()
    assert states[:2] == ["redone: output line 9", "retried: see line 5"] and states.count("outstanding") == 3
    page.get_by_role("link", name="output line 9").click()
    page.wait_for_url("**/rollouts/9")
    page.goto(base + "/")


def test_tasks_whose_repeats_all_failed(page, resumed):
    base, _ = resumed
    page.goto(base + "/tasks")
    assert page.locator("table.tasks tbody tr td:first-child").all_inner_texts() == ["0", "1", "2", "3", "4", "5"]
    assert "pass rate (≥ 1)" in page.locator("table.tasks thead").inner_text()
    task4 = page.locator("table.tasks tbody tr").nth(4)
    assert task4.locator("td").nth(2).inner_text() == "2"
    task4.get_by_role("link", name="2 failed").click()
    page.wait_for_url("**/failures?task=4")
    assert page.locator("table.failures tbody tr").count() == 2
    page.goto(base + "/tasks")


def test_a_deleted_file_is_named_not_a_server_error(page, resumed):
    base, path = resumed
    page.goto(base + "/rollouts")
    path.unlink()
    for url in ("/rollouts", "/", "/rollouts/3"):
        response = page.goto(base + url)
        assert response.status == 404
        assert str(path) in page.locator("main").inner_text()
