"""``gym view A.jsonl --compare B.jsonl`` in a real headless browser (Debian's chromium via
Playwright, as tests/test_viewer_browser.py), over the two real runs of
tests/test_viewer_compare.py. Screenshots go to test-artifacts/viewer/ab_*.png."""

from __future__ import annotations

import threading

import pytest
from werkzeug.serving import make_server

from gymcore.viewer.app import create_app

from .test_compare import RIGHT_A, RIGHT_B
from .test_viewer_browser import ARTIFACTS, browser  # noqa: F401  (skips this module without chromium)
from .test_viewer_compare import cli_json, runs, xss_runs  # noqa: F401


def _serve(a, b):
    server = make_server("127.0.0.1", 0, create_app(a, compare=b, wait=None), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread


@pytest.fixture(scope="module")
def served(runs):  # noqa: F811
    server, thread = _serve(runs["a"], runs["b"])
    yield f"http://127.0.0.1:{server.port}"
    server.shutdown()
    thread.join(timeout=10)


@pytest.fixture
def page(browser, request):  # noqa: F811
    """A fresh tab recording dialogs and requests; a full-page screenshot after the test,
    and a check that nothing left 127.0.0.1."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    tab = context.new_page()
    tab.dialogs, tab.requests = [], []
    tab.on("dialog", lambda dialog: (tab.dialogs.append(dialog.message), dialog.dismiss()))
    tab.on("request", lambda req: tab.requests.append(req.url))
    yield tab
    tab.evaluate("window.scrollTo(0, 0)")
    tab.screenshot(path=str(ARTIFACTS / f"ab_{request.node.name.removeprefix('test_')}.png"), full_page=True)
    context.close()
    foreign = [url for url in tab.requests if not url.startswith("http://127.0.0.1:") and not url.startswith("data:")]
    assert not foreign, f"pages must work offline; requested {foreign}"


def test_compare_page(page, served, runs):  # noqa: F811
    expected = cli_json(runs, runs["a"], runs["b"])
    d = expected["difference"]
    page.goto(served + "/")
    page.get_by_role("link", name="A vs B").click()
    page.wait_for_url("**/ab")
    assert page.locator("h1.verdict").inner_text() == "B is better"
    assert page.locator(".diff-value").inner_text() == f"{d['mean_reward']:+.4f}"
    assert page.locator(".ci-text").inner_text() == f"[{d['ci_low']:+.4f}, {d['ci_high']:+.4f}]"
    mean_row = page.locator("table.figures tbody tr").first.locator("td").all_inner_texts()
    assert mean_row == [f"{expected['a']['mean_reward']:.4f}", f"{expected['b']['mean_reward']:.4f}", "+0.1000"]
    assert page.locator("figure.scatter svg circle").count() == 4
    assert page.locator("table.flips tbody tr").count() == 50  # of 60, worst first, paginated
    assert page.locator("table.flips tbody tr").first.locator("td").first.inner_text() == "regression"
    # a scatter circle lists its tasks: A wrong, B right
    page.locator("circle.pt-better").click()
    page.wait_for_url("**/ab/tasks?cell=*")
    tasks = page.locator("table.ab-tasks tbody tr td:first-child").all_inner_texts()
    assert sorted(map(int, tasks)) == sorted(RIGHT_B - RIGHT_A)
    page.goto(served + "/ab")  # the screenshot shows the compare page
    assert page.dialogs == []


def test_flipped_task_side_by_side(page, served, runs):  # noqa: F811
    page.goto(served + "/ab")
    first = page.locator("table.flips tbody tr").first
    task = int(first.locator("td").nth(2).inner_text())
    assert task in RIGHT_A - RIGHT_B  # the worst flip is a regression
    first.get_by_role("link", name="A ⇄ B").click()
    page.wait_for_url("**/compare?*b_run=B*")
    heads = page.locator(".cmp-grid.head-row h1").all_inner_texts()
    assert runs["a"].name in heads[0] and runs["b"].name in heads[1]
    assert heads[0].split()[-1] == "1" and heads[1].split()[-1] == "0"  # A passed, B failed
    assert page.locator(".step-row.first-diff").count() == 1
    # the task's other repeat in B is a click away, and stays a two-file compare
    page.locator(".run-b .repeats a.rep").first.click()
    page.wait_for_url("**/compare?*b_run=B*")
    assert page.locator(".run-b .repeats .rep.current").count() == 1
    page.locator(".run-b .repeats a.rep").first.click()  # back to repeat 0 for the screenshot
    page.wait_for_url("**/compare?*")


def test_model_text_is_inert(page, tmp_path):
    a, b = xss_runs(tmp_path)
    server, thread = _serve(a, b)
    try:
        base = f"http://127.0.0.1:{server.port}"
        for url in ("/ab/tasks", "/compare?a=7&b=7&b_run=B", "/ab"):
            page.goto(base + url)
            assert "<script>alert(1)</script>" in page.locator("main").inner_text()  # shown as text
        assert page.dialogs == []
    finally:
        server.shutdown()
        thread.join(timeout=10)
