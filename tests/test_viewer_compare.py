"""``gym view A.jsonl --compare B.jsonl`` through Flask's test client.

The runs are tests/test_compare.py's: real ``gym collect`` runs over 200 weather tasks by
two replayed models, A right on ``i % 10 < 7`` and B on ``i % 10 in {0..5, 7, 8}`` (B - A =
+0.1; 20 regressions, 40 improvements). The pages must show what ``gym compare --json``
says on the same files."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import urllib.request

import orjson
import pytest

from gymcore.viewer.app import create_app

from .conftest import GYM, read_jsonl, run_gym
from .test_compare import N, RIGHT_A, RIGHT_B
from .viewer_data import XSS, Page, sample_rollouts, write_rollouts


@pytest.fixture(scope="module")
def runs(paired_runs):
    """tests/test_compare.py's runs: 200 tasks, A 70 % and B 80 % right (built once a session)."""
    return paired_runs


def cli_json(runs, a, b, *extra) -> dict:
    result = run_gym("compare", str(a), str(b), "--json", *extra, env=runs["env"])
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def get(client, url: str, status: int = 200) -> Page:
    response = client.get(url)
    assert response.status_code == status, (url, response.status_code, response.data[:800])
    return Page(response.get_data(as_text=True))


@pytest.fixture(scope="module")
def ab(runs):
    app = create_app(runs["a"], compare=runs["b"], wait=None)
    return app.test_client()


def test_api_is_gym_compare_json(runs, ab):
    data = ab.get("/api/ab").get_json()
    assert data == cli_json(runs, runs["a"].resolve(), runs["b"].resolve())
    assert data["difference"]["mean_reward"] == pytest.approx(0.1)


def test_page_shows_the_difference_interval_verdict_and_each_side(runs, ab):
    expected = cli_json(runs, runs["a"], runs["b"])
    d, a, b = expected["difference"], expected["a"], expected["b"]
    view = get(ab, "/ab")
    text = view.all_text
    assert "B is better" in text
    assert f"mean reward B − A: {d['mean_reward']:+.4f}" in text
    assert f"95% CI [{d['ci_low']:+.4f}, {d['ci_high']:+.4f}]" in text
    figures = {row[0]: row[1:] for row in view.rows if row and row[0] in ("mean reward", "pass@1", "pass@2")}
    for key, label in (("mean_reward", "mean reward"), ("pass@1", "pass@1"), ("pass@2", "pass@2")):
        assert figures[label] == [f"{a[key]:.4f}", f"{b[key]:.4f}", f"{b[key] - a[key]:+.4f}"]
    assert f"{expected['mcnemar']['improvements']} improved" in text and "20 regressed" in text
    assert f"McNemar exact p = {expected['mcnemar']['p_value']:.4g}" in text
    assert "200 matched by row content, 200 scored in both" in text
    # the scatter: one circle per (A mean, B mean) cell, linking to its tasks
    assert view.tags.count("circle") == 4 + 1  # four cells and the interval's estimate
    assert "/ab/tasks?cell=1.0,0.0" in view.links and "/ab/tasks?cell=0.0,1.0" in view.links


def test_flips_are_listed_worst_first_with_their_side_by_side_link(runs, ab):
    expected = cli_json(runs, runs["a"], runs["b"])["flips"]
    first = get(ab, "/ab")
    second = get(ab, "/ab?page=2")
    rows = [row for row in first.rows + second.rows if row and row[0] in ("regression", "improvement")]
    assert [(row[0], int(row[2])) for row in rows] == [(f["flip"], f["task_index_a"]) for f in expected]
    assert [row[0] for row in rows[:20]] == ["regression"] * 20
    pair_links = [link for link in first.links if link.startswith("/ab/pair?")]
    assert len(pair_links) == 50  # one per flip on the page


def test_a_flipped_tasks_rollouts_side_by_side_one_from_each_file(runs, ab):
    task = min(RIGHT_A - RIGHT_B)  # a regression: A right, B wrong
    response = ab.get(f"/ab/pair?a_task={task}&b_task={task}")
    assert response.status_code == 302
    target = response.headers["Location"]
    assert target.startswith("/compare?") and "b_run=B" in target
    view = get(ab, target)
    lines_a = {line["task_index"]: line for line in read_jsonl(runs["a"])}
    lines_b = {line["task_index"]: line for line in read_jsonl(runs["b"])}
    text = view.all_text
    assert f"{runs['a'].name} line" in text and f"{runs['b'].name} line" in text
    # the two sides are the two runs' rollouts of that task: A's passes, B's fails
    answer = lambda line: line["response"]["output"][-1]["content"][0]["text"]  # noqa: E731
    assert answer(lines_a[task]) in view.pres and answer(lines_b[task]) in view.pres
    assert lines_a[task]["reward"] == 1.0 and lines_b[task]["reward"] == 0.0
    assert "First difference" in text
    # the other repeats of the task in each run are one click away
    assert sum(1 for link in view.links if link.startswith("/compare?") and "b_run=B" in link) == 2


def test_b_lines_open_from_the_second_file(runs, ab):
    raw = runs["b"].read_bytes().splitlines()[4]
    response = ab.get("/ab/b/rollouts/5.json")
    assert response.status_code == 200 and response.data == raw
    assert ab.get("/ab/b/rollouts/100000.json").status_code == 404


def test_task_table_filters_by_flip_and_scatter_cell(runs, ab):
    all_rows = get(ab, "/ab/tasks").rows + get(ab, "/ab/tasks?page=2").rows
    assert len(all_rows) == N
    improved = get(ab, "/ab/tasks?show=improvements").rows
    assert sorted(int(row[0]) for row in improved) == sorted(RIGHT_B - RIGHT_A)
    cell = get(ab, "/ab/tasks?cell=0.0,1.0").rows  # A wrong, B right
    assert sorted(int(row[0]) for row in cell) == sorted(RIGHT_B - RIGHT_A)
    worst = get(ab, "/ab/tasks").rows[0]
    assert worst[7] == "-1.0000" and worst[8] == "regression"
    best = get(ab, "/ab/tasks?sort=-difference").rows[0]
    assert best[7] == "+1.0000" and best[8] == "improvement"


def test_failures_are_shown_per_side_never_as_zero(runs):
    client = create_app(runs["b"], compare=runs["b_holes"], wait=None).test_client()
    expected = cli_json(runs, runs["b"], runs["b_holes"])
    assert client.get("/api/ab").get_json()["difference"] == expected["difference"]
    view = get(client, "/ab")
    failed = next(row for row in view.rows if row and row[0] == "failed rollouts (not counted)")
    assert failed[1:3] == ["0", "40"]
    assert "model:protocol 40" in view.all_text and "20 left out" in view.all_text
    assert "no difference shown at this confidence" in view.all_text
    left_out = get(client, "/ab/tasks?show=left_out").rows
    assert len(left_out) == 20 and all(row[6] == "—" for row in left_out)


def test_runs_over_different_tasks_are_refused_then_intersected(runs):
    client = create_app(runs["a"], compare=runs["a_first_150"], wait=None).test_client()
    response = client.get("/api/ab")
    assert response.status_code == 409 and "150 match" in response.get_json()["error"]
    view = get(client, "/ab")
    assert "cannot be compared" in view.all_text and "/ab?intersect=1" in view.links
    data = client.get("/api/ab?intersect=1").get_json()
    assert data == cli_json(runs, runs["a"].resolve(), runs["a_first_150"].resolve(), "--intersect")
    assert "150 matched" in get(client, "/ab?intersect=1").all_text


def test_computed_once_per_change_of_either_file(runs, tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    shutil.copy(runs["a"], a)
    shutil.copy(runs["b"], b)
    app = create_app(a, compare=b, wait=None)
    client = app.test_client()
    comparison = app.extensions["gym_view_b"].comparison
    for url in ("/ab", "/api/ab", "/ab/tasks", "/ab?page=2"):
        client.get(url)
    assert comparison.computations == 1
    assert client.get("/api/ab").get_json()["difference"]["mean_reward"] == pytest.approx(0.1)
    shutil.copy(runs["a"], b.with_suffix(".tmp"))
    os.replace(b.with_suffix(".tmp"), b)  # B is now A's rollouts: no difference
    data = client.get("/api/ab").get_json()
    assert data["difference"]["mean_reward"] == 0 and data["flips"] == []
    assert comparison.computations == 2


def test_pages_never_wait_for_the_comparison(runs):
    """With no time to wait (wait=0), the first answers say the comparison is being made and
    refresh themselves; the figures come once the background thread has read both runs."""
    app = create_app(runs["a"], compare=runs["b"], wait=0)
    client = app.test_client()
    first = client.get("/api/ab")
    assert first.status_code == 202 and first.get_json() == {"computing": True}
    page = client.get("/ab")
    assert page.status_code == 202
    body = page.get_data(as_text=True)
    assert "Comparing the runs" in body and '<meta http-equiv="refresh"' in body
    comparison = app.extensions["gym_view_b"].comparison
    comparison.get(False, None)  # wait for the one computation the requests started
    assert client.get("/api/ab").get_json() == cli_json(runs, runs["a"].resolve(), runs["b"].resolve())
    assert comparison.computations == 1


def xss_runs(tmp_path):
    """Two small runs of the viewer's sample tasks whose ids and answers carry a <script> tag;
    B gets task 0 wrong where A had it right."""
    lines = sample_rollouts()
    for line in lines:
        line["id"] = f"{XSS}-{line['task_index']}"
    a = write_rollouts(tmp_path / "xa.jsonl", lines)
    b_lines = [dict(line) for line in lines]
    for line in b_lines:
        if line["task_index"] == 0:
            line["reward"] = 0.0
    b = write_rollouts(tmp_path / "xb.jsonl", b_lines)
    return a, b


def test_model_text_is_escaped(tmp_path):
    a, b = xss_runs(tmp_path)
    client = create_app(a, compare=b, wait=None).test_client()
    for url in ("/ab", "/ab/tasks", "/compare?a=7&b=7&b_run=B"):
        response = client.get(url)
        assert response.status_code == 200, url
        body = response.get_data(as_text=True)
        assert XSS not in body and "&lt;script&gt;" in body, url
        assert Page(body).handlers == []


def test_the_single_file_viewer_is_unchanged(tmp_path):
    client = create_app(write_rollouts(tmp_path / "run.jsonl"), wait=None).test_client()
    for url in ("/ab", "/ab/tasks", "/api/ab", "/ab/pair?a_task=0&b_task=0", "/compare?a=1&b=2&b_run=B"):
        assert client.get(url).status_code == 404, url
    view = get(client, "/compare?a=1&b=2")
    assert "A vs B" not in view.all_text and "/ab" not in view.links


def _serve(*args: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([GYM, "view", *args, "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    line = proc.stdout.readline()
    assert "http://127.0.0.1:" in line, (line, proc.stderr.read() if proc.poll() is not None else "")
    return proc, line.split("at ", 1)[1].split()[0]


@pytest.mark.parametrize("spelling", ["two files", "--compare"])
def test_gym_view_serves_two_runs(runs, spelling):
    args = [str(runs["a"]), str(runs["b"])] if spelling == "two files" else [str(runs["a"]), "--compare",
                                                                              str(runs["b"])]
    proc, url = _serve(*args)
    try:
        assert url.endswith("/ab")
        for _ in range(600):  # the page never waits long for the comparison: ask until it is there
            with urllib.request.urlopen(url.removesuffix("/ab") + "/api/ab", timeout=60) as response:
                status, data = response.status, orjson.loads(response.read())
            if status != 202:
                break
        assert status == 200 and data == cli_json(runs, runs["a"].resolve(), runs["b"].resolve())
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)


def test_gym_view_refuses_three_files_and_a_missing_second(runs, tmp_path):
    three = run_gym("view", str(runs["a"]), str(runs["b"]), str(runs["b_holes"]), env=runs["env"])
    assert three.returncode == 2 and "two runs to compare" in three.stderr
    missing = run_gym("view", str(runs["a"]), "--compare", str(tmp_path / "nope.jsonl"), env=runs["env"])
    assert missing.returncode == 1 and "nope.jsonl: no such file" in missing.stderr
