"""``gym view`` through Flask's test client: every route and filter, live reload, safety.

The rollout file is written with gymcore's own converter (tests/viewer_data.py): 12
rollouts, 4 tasks x 3 repeats, lines 1-12 in task order."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.parse
import urllib.request

import orjson
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from gymcore.viewer import index as index_module
from gymcore.viewer.app import create_app
from gymcore.viewer.index import RolloutIndex

from .conftest import GYM, ROOT, run_gym
from .viewer_data import (XSS, Page, call, message, output, reasoning, resumed_run, rollout, sample_rollouts,
                          weather_turn, write_rollouts)


@pytest.fixture
def rollouts_path(tmp_path):
    return write_rollouts(tmp_path / "run.jsonl")


@pytest.fixture
def client(rollouts_path):
    return create_app(rollouts_path, wait=None).test_client()


def page(client, url: str, status: int = 200) -> Page:
    response = client.get(url)
    assert response.status_code == status, (url, response.status_code, response.data[:500])
    return Page(response.get_data(as_text=True))


def listed(client, url: str) -> list[int]:
    """The line numbers a rollout list page shows, in order."""
    return page(client, url).picks


# -- overview ----------------------------------------------------------------------------

def test_overview_figures(client):
    data = client.get("/api/overview").get_json()
    assert data["lines"] == data["parsed"] == 12
    assert (data["rollouts"], data["scored"], data["failed"], data["tasks"]) == (12, 11, 1, 4)
    assert data["failures"] == {"model:timeout": 1}
    assert data["mean_reward"] == pytest.approx((3 + 2 + 0 + 1.5) / 11)
    # per task (n scored, passed): (3, 3), (3, 2), (3, 0), (2, 1) + a failure; pass@k over the
    # tasks with every repeat scored: task 3 is left out
    assert data["pass_at"] == pytest.approx({"pass@1": (1 + 2 / 3 + 0) / 3, "pass@2": 2 / 3, "pass@3": 2 / 3})
    assert (data["pass_at_k_tasks"], data["pass_at_k_left_out"]) == (3, 1)
    assert data["tools"] == {"get_weather": 8, "search_docs": 1}
    assert data["tokens"]["total"] == 120 * 9 + 350 + 980
    assert data["task_flags"] == {"zero_variance": 2, "all_pass": 1, "mixed": 2, "all_fail": 1, "errors": 1}
    assert dict((name, mean) for name, mean, _ in data["metrics"]) == pytest.approx(
        {"called_tool": 8 / 11, "city_correct": 6 / 11})


def test_overview_page(client):
    view = page(client, "/")
    text = view.all_text
    assert "12 rollouts" in text and "4 tasks · 3 repeats" in text and "pass@2" in text
    assert "model:timeout" in text and "zero reward variance" in text
    # histogram bars link to the list filtered to that bar: rewards 0, 0.5, 1 stay exact
    assert {"/rollouts?reward_min=0.0&reward_max=0.0", "/rollouts?reward_min=0.5&reward_max=0.5",
            "/rollouts?reward_min=1.0&reward_max=1.0"} <= set(view.links)
    assert "/rollouts?turns_min=3&turns_max=3" in view.links
    assert "svg" in view.tags and "/tasks?flag=mixed" in view.links and "/rollouts?error=model:timeout" in view.links


def test_overview_agrees_with_collect_summary(tmp_path):
    out = tmp_path / "weather.jsonl"
    result = run_gym("collect", "--agent", "weather", "--model", "replay", "--output", str(out),
                     "--num-repeats", "3", "--quiet")
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "weather.metrics.json").read_text())
    data = create_app(out, wait=None).test_client().get("/api/overview").get_json()
    assert data["rollouts"] == summary["rollouts"] and data["tasks"] == summary["tasks"]
    assert data["mean_reward"] == pytest.approx(summary["mean_reward"])
    for k in (1, 2, 3):
        assert data["pass_at"][f"pass@{k}"] == pytest.approx(summary[f"pass@{k}"])
    assert data["failures"] == summary["failures"] and data["tool_calls"] == summary["tool_calls"]
    assert data["mean_turns"] == pytest.approx(summary["mean_turns"])


# -- honest numbers: failures in the sidecar, resumes, the pass threshold --------------------

@pytest.fixture
def resumed(tmp_path):
    return create_app(resumed_run(tmp_path), wait=None).test_client()


def test_overview_counts_the_sidecars_outstanding_failures(resumed):
    """A gymcore output holds only scored rollouts: the failures are in the sidecar, and a
    record redone by a later --resume, or retried and failed again, counts once or not at all."""
    data = resumed.get("/api/overview").get_json()
    assert (data["rollouts"], data["scored"], data["failed"], data["tasks"]) == (12, 9, 3, 6)
    assert data["failures"] == {"timeout": 1, "model:500": 2}
    assert data["failure_history"] == {"records": 7, "outstanding": 3, "redone": 1, "retried": 3}
    assert data["mean_reward"] == pytest.approx(6.5 / 9)


def test_pass_at_k_is_over_tasks_with_every_repeat_scored(resumed):
    data = resumed.get("/api/overview").get_json()
    assert data["pass_at"] == pytest.approx({"pass@1": 0.5, "pass@2": 0.75})
    assert (data["pass_at_k_tasks"], data["pass_at_k_left_out"], data["pass_threshold"]) == (4, 2, 1.0)
    text = page(resumed, "/").all_text
    assert "over 4 tasks with every repeat scored; 2 tasks left out" in text
    assert "pass: reward ≥ 1" in text


def test_failed_tile_links_to_the_outstanding_failures(resumed):
    overview = page(resumed, "/")
    assert "3 failed" in overview.all_text and "0 failed" not in overview.all_text
    assert "no failed rollouts" not in overview.all_text
    assert "/failures" in overview.links and "/rollouts?error=any" not in overview.links
    listed = page(resumed, "/failures")
    assert [(row[1], row[2], row[3]) for row in listed.rows] == [("timeout", "3", "0"), ("model:500", "4", "0"),
                                                                 ("model:500", "4", "1")]
    assert "3 outstanding failures" in listed.all_text


def test_failures_history_marks_redone_and_retried_records(resumed):
    view = page(resumed, "/failures?show=all")
    assert [row[0] for row in view.rows] == [str(n) for n in range(1, 8)]
    states = [row[-2] for row in view.rows]
    assert states == ["redone: output line 9", "retried: see line 5", "retried: see line 6",
                      "retried: see line 7", "outstanding", "outstanding", "outstanding"]
    assert "<b>not bold</b>" in view.rows[0][-1]  # the message is text, not markup
    assert [row[1] for row in page(resumed, "/failures?class=model:500").rows] == ["model:500"] * 2


def test_tasks_whose_repeats_all_failed_are_listed(resumed):
    view = page(resumed, "/tasks")
    assert [row[0] for row in view.rows] == ["0", "1", "2", "3", "4", "5"]
    task4 = view.rows[4]
    assert task4[2] == "2" and "2 failed" in task4[3] and "errors" in task4[7]
    assert "errors" in view.rows[3][7] and "errors" not in view.rows[2][7]  # task 2's failure was redone
    assert "all repeats fail (reward < 1)" in page(resumed, "/").all_text
    assert "pass: reward ≥ 1" in view.all_text


def test_overview_figures_are_over_scored_rollouts(tmp_path):
    rows = sample_rollouts()
    rows[9] = rollout(3, 0, "Lima", [call("get_weather", "x", city="Lima")] * 4, None, turns=4, tokens=(400, 40),
                      error={"type": "model", "kind": "timeout", "message": "timed out"})
    data = create_app(write_rollouts(tmp_path / "run.jsonl", rows), wait=None).test_client().get(
        "/api/overview").get_json()
    assert data["tool_calls"] == 9 and data["failed_figures"]["tool_calls"] == 4
    assert data["tokens"]["total"] == 120 * 9 + 350 + 980 and data["failed_figures"]["tokens"] == 440
    assert data["tokens"]["cached"] == 0


def test_a_deleted_file_is_a_404_naming_it(tmp_path):
    path = resumed_run(tmp_path)
    client = create_app(path, wait=None).test_client()
    for url in ("/", "/rollouts", "/tasks", "/failures"):
        page(client, url)
    path.unlink()
    for url in ("/", "/rollouts", "/rollouts/3", "/tasks", "/compare?a=1&b=2", "/failures", "/api/overview"):
        response = client.get(url)
        assert response.status_code == 404, url
        assert str(path) in response.get_data(as_text=True), url
    path.with_name("run.failures.jsonl").unlink()
    write_rollouts(path)  # back again: served again
    assert client.get("/rollouts").status_code == 200 and client.get("/failures").status_code == 404


def test_overview_agrees_with_a_resumed_collect(tmp_path, gym_env, fake_openai):
    """A real `gym collect` whose Oslo rollouts always fail and one Paris repeat fails once,
    then `--resume`: the viewer's headline and the run's summary say the same."""
    cities = ["Paris", "London", "Oslo", "Tokyo"]
    tasks, out = tmp_path / "tasks.jsonl", tmp_path / "out.jsonl"
    tasks.write_text("".join(json.dumps({"responses_create_params": {"input": f"weather in {city}?"},
                                         "verifier_metadata": {"expected_city": city}}) + "\n" for city in cities))
    args = ["collect", "--agent", "weather", "--model", "openai:m", "--input", str(tasks), "--output", str(out),
            "--num-repeats", "2", "--parallel", "1", "-q"]
    fake_openai.rules = [{"match": "Oslo", "status": 400, "message": "no Oslo here"},
                         {"match": "Paris", "status": 400, "times": 1}]
    fake_openai.cached_tokens = 4
    assert run_gym(*args, env=gym_env).returncode == 1
    resumed = run_gym(*args, "--resume", env=gym_env)
    assert resumed.returncode == 1
    summary = json.loads((tmp_path / "out.metrics.json").read_text())
    assert "status: completed with 2 failures" in resumed.stdout
    assert (summary["status"], summary["failed"], summary["tasks"], summary["rollouts"]) == ("completed", 2, 4, 8)
    data = create_app(out, wait=None).test_client().get("/api/overview").get_json()
    for key in ("rollouts", "scored", "failed", "tasks", "failures", "tool_calls", "pass_at_k_tasks",
                "pass_at_k_left_out"):
        assert data[key] == summary[key], key
    assert data["pass_at"] == {f"pass@{k}": summary[f"pass@{k}"] for k in (1, 2)}
    # 6 scored rollouts of two model calls each, 4 cached input tokens a call
    assert summary["cached_tokens"] == data["tokens"]["cached"] == 6 * 2 * 4
    assert (summary["pass_at_k_tasks"], summary["pass_at_k_left_out"]) == (3, 1)  # Oslo left out
    # Oslo failed twice on each invocation; Paris's one failure was redone by the resume
    assert data["failure_history"] == {"records": 5, "outstanding": 2, "redone": 1, "retried": 2}


# -- the rollout list ----------------------------------------------------------------------

@pytest.mark.parametrize("query, lines", [
    ("", list(range(1, 13))),
    ("reward_min=1", [1, 2, 3, 4, 6, 12]),
    ("reward_max=0", [5, 7, 8, 9]),
    ("reward_min=0.25&reward_max=0.75", [11]),
    ("task=1", [4, 5, 6]),
    ("task=weather-002", [7, 8, 9]),
    ("repeat=2", [3, 6, 9, 12]),
    ("error=any", [10]),
    ("error=model:timeout", [10]),
    ("error=none", [1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12]),
    ("error=no-such-class", []),
    ("tool=search_docs", [11]),
    ("tool=get_weather&reward_max=0", [5]),
    ("turns_min=3", [11]),
    ("turns_max=1", [7, 8, 9, 10]),
    ("q=parris", [5]),
    ("q=garúa", [11]),
    ('q="quoted"', [7]),  # found as it is stored, JSON-escaped
    ("q=alert(1)", [7]),
    ("q=rainy&task=0", [1, 2, 3]),
    ("q=nothing-matches-this", []),
    ("sort=-reward&task=1", [4, 6, 5]),
    ("sort=reward&task=3", [11, 12, 10]),  # no reward sorts last either way
    ("sort=-duration&repeat=1", [11, 2, 5, 8]),
    ("sort=-tokens&reward_min=0.5", [11, 3, 1, 2, 4, 6, 12]),
    ("sort=-turns&task=3", [11, 12, 10]),
    ("sort=-line&task=2", [9, 8, 7]),
    ("sort=-line", list(range(12, 0, -1))),
    ("sort=task&repeat=0", [1, 4, 7, 10]),
    ("sort=-tool_calls&task=3", [11, 12, 10]),
])
def test_list_filters_and_sorts(client, query, lines):
    assert listed(client, f"/rollouts?{query}") == lines


def test_list_pagination_keeps_filters_in_links(client):
    view = page(client, "/rollouts?per_page=4&page=2&error=none&sort=-line")
    assert view.picks == [7, 6, 5, 4]
    assert "page 2 of 3" in view.all_text and "11 rollouts" in view.all_text
    next_links = [link for link in view.links if "page=3" in link]
    assert next_links and all("error=none" in link and "sort=-line" in link for link in next_links)
    assert listed(client, next_links[0]) == [3, 2, 1]
    assert "Nothing on page 9" in page(client, "/rollouts?per_page=4&page=9").all_text


def test_search_pages_through_matches(client):
    first = page(client, "/rollouts?q=weather&per_page=5")
    assert first.picks == [1, 2, 3, 4, 5]
    assert "/rollouts?q=weather&per_page=5&page=2" in first.links
    assert listed(client, "/rollouts?q=weather&per_page=5&page=3") == [11, 12]


def test_list_reports_bad_parameters_and_ignores_them(client):
    view = page(client, "/rollouts?reward_min=abc&repeat=-1&sort=nonsense&turns_max=2")
    assert "ignored reward_min='abc'" in view.all_text and "ignored repeat='-1'" in view.all_text
    assert "ignored sort='nonsense'" in view.all_text
    assert view.picks == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12]


def test_list_rows_show_the_rollout(client):
    view = page(client, "/rollouts?task=3")
    error_row, three_turns = view.rows[0], view.rows[1]
    assert "model:timeout" in error_row and "model timed out" in " ".join(error_row)
    assert "search_docs" in " ".join(three_turns) and "0.5" in three_turns and "980" in three_turns
    assert "what's the weather in Lima? → Probably foggy." in " ".join(three_turns)


# -- tasks ---------------------------------------------------------------------------------

def task_column(client, url: str) -> list[str]:
    return [row[0] for row in page(client, url).rows]


@pytest.mark.parametrize("query, tasks", [
    ("", ["0", "1", "2", "3"]),
    ("flag=zero_variance", ["0", "2"]),
    ("flag=mixed", ["1", "3"]),
    ("flag=all_pass", ["0"]),
    ("flag=all_fail", ["2"]),
    ("flag=errors", ["3"]),
    ("task=weather-001", ["1"]),
    ("sort=-mean", ["0", "3", "1", "2"]),
    ("sort=pass_rate", ["2", "3", "1", "0"]),
    ("sort=-spread", ["1", "3", "0", "2"]),
    ("sort=-task&per_page=2&page=2", ["1", "0"]),
])
def test_tasks_flags_and_sorts(client, query, tasks):
    assert task_column(client, f"/tasks?{query}") == tasks


def test_tasks_rows(client):
    view = page(client, "/tasks")
    mixed = view.rows[1]
    assert mixed[2] == "3" and mixed[3] == "1 0 1" and "mixed" in mixed[7]
    assert "/compare?a=4&b=5" in view.links  # best vs worst repeat of the mixed task
    assert "/compare?a=1&b=2" in view.links  # first two repeats otherwise
    assert page(client, "/tasks?flag=bogus").all_text.count("ignored flag='bogus'") == 1


# -- one rollout ---------------------------------------------------------------------------

def test_rollout_page_shows_every_part(client):
    view = page(client, "/rollouts/11")
    text = view.all_text
    assert "You are a helpful assistant." in text and "what's the weather in Lima?" in text
    assert "Tools offered (2)" in text and "Search the travel guide." in text
    assert "Step 3 of 3" in text and "Step 4" not in text  # 3 steps: search, weather, answer
    assert '"query": "Lima climate"' in text  # arguments pretty-printed
    assert "Lima: mild, dry, foggy in winter (garúa)." in text  # plain-text output as it is
    assert '"city": "Lima"' in text and "final answer" in text and "Probably foggy." in text
    assert "called_tool" in text and "city_correct" in text and "reward" in text
    assert "input_tokens" in text and "output_tokens_details.reasoning_tokens" in text and "total_s" in text
    assert "temperature" in text and "expected_city" in text  # request params and row fields
    assert "Raw JSON" in text and "details" in view.tags
    assert "/rollouts/11.json" in view.links
    assert "/compare?a=11&b=10" in view.links and "/compare?a=11&b=12" in view.links  # the task's repeats


def test_rollout_arguments_and_json_outputs_are_pretty_printed(client):
    """Stored as one-line JSON strings; shown indented. Text that is not JSON stays as it is."""
    pres = page(client, "/rollouts/11").pres
    assert '{\n  "query": "Lima climate"\n}' in pres  # arguments of the first call
    assert '{\n  "city": "Lima"\n}' in pres  # the second call's arguments and its JSON output
    assert pres.count('{\n  "city": "Lima"\n}') == 2
    assert "Lima: mild, dry, foggy in winter (garúa)." in pres


def test_rollout_steps_follow_the_episode(client):
    view = page(client, "/rollouts/7")
    text = view.all_text
    assert text.index("reasoning") < text.index("The user wants Oslo") < text.index("final answer")


def test_rollout_with_error(client):
    text = page(client, "/rollouts/10").all_text
    assert "model:timeout" in text and "model timed out after 60s" in text and "The model produced no output" in text


def test_rollout_json_is_the_line(client, rollouts_path):
    response = client.get("/rollouts/5.json")
    assert response.mimetype == "application/json"
    assert response.get_json() == json.loads(rollouts_path.read_text().splitlines()[4])


def test_unknown_lines_are_404(client):
    assert "has no rollout on line 13" in page(client, "/rollouts/13", 404).all_text
    page(client, "/rollouts/0", 404)
    page(client, "/rollouts/abc", 404)


# -- compare -------------------------------------------------------------------------------

def test_compare_highlights_first_difference(client):
    view = page(client, "/compare?a=4&b=5")
    text = view.all_text
    assert "First difference: step 1" in text and "first-diff" in view.ids
    assert '"city": "Paris"' in text and '"city": "Parris"' in text
    metrics = {row[0]: row[1:] for row in view.rows}
    assert metrics["reward"] == ["1", "0"] and metrics["called_tool"] == ["1", "1"]


def test_compare_later_difference_and_identical(client, tmp_path):
    rows = sample_rollouts()[:2]
    rows[1] = rollout(0, 1, "San Francisco", weather_turn("San Francisco", "c00", "Different words."), 1.0)
    client = create_app(write_rollouts(tmp_path / "two.jsonl", rows), wait=None).test_client()
    assert "First difference: step 2" in page(client, "/compare?a=1&b=2").all_text
    assert "identical step by step" in page(client, "/compare?a=1&b=1").all_text


def test_compare_picks_and_form(client):
    assert "First difference: step 1" in page(client, "/compare?pick=4&pick=5").all_text
    assert "Line 1" in page(client, "/compare?a=1&b=10").all_text  # error rollout: no steps
    form = page(client, "/compare")
    assert "Compare" in form.all_text and not form.rows
    page(client, "/compare?a=1&b=99", 404)


# -- failures sidecar ----------------------------------------------------------------------

def test_failures_tab_only_with_sidecar(client, rollouts_path):
    assert "/failures" not in page(client, "/").links
    page(client, "/failures", 404)
    sidecar = rollouts_path.with_name("run.failures.jsonl")
    records = [
        {"id": "weather-003", "responses_create_params": {"input": "hi"}, "task_index": 3, "rollout_index": 0,
         "class": "model:timeout", "message": "timed out 3 times", "attempts": 3},
        {"task_index": 1, "error": {"type": "plugin", "kind": "KeyError", "message": "boom"}},
        [1, 2, 3],
        {"something": "else entirely"},
    ]
    sidecar.write_text("\n".join(json.dumps(r) for r in records) + "\nnot json\n")
    overview = page(client, "/")
    assert "/failures" in overview.links and "/failures?class=plugin:KeyError" in overview.links
    # task 3 repeat 0 has a (failed) line in the output itself: counted there, not twice
    assert [row[1] for row in page(client, "/failures").rows] == [
        "plugin:KeyError", "invalid JSON line", "unknown", "invalid JSON line"]
    view = page(client, "/failures?show=all")
    classes = [row[1] for row in view.rows]
    assert classes == ["model:timeout", "plugin:KeyError", "invalid JSON line", "unknown", "invalid JSON line"]
    assert view.rows[0][2:6] == ["3", "0", "3", "failed again: output line 10"]
    assert "timed out 3 times" in view.rows[0][6]
    assert [row[1] for row in page(client, "/failures?class=plugin:KeyError").rows] == ["plugin:KeyError"]
    assert client.get("/api/status").get_json()["failures"]["lines"] == 5


# -- live files ----------------------------------------------------------------------------

def test_new_rollouts_appear_on_reload_and_torn_line_waits(client, rollouts_path):
    extra = orjson.dumps(rollout(4, 0, "Rome", weather_turn("Rome", "c40", "Rome: sunny."), 1.0))
    with open(rollouts_path, "ab") as fp:
        fp.write(extra + b"\n" + extra[:40])  # one finished line, one being written
    view = page(client, "/rollouts")
    assert view.picks[-1] == 13
    assert "Line 14 is incomplete" in view.all_text
    assert client.get("/api/status").get_json()["torn_line"] == {"line": 14, "bytes": 40}
    with open(rollouts_path, "ab") as fp:
        fp.write(extra[40:] + b"\n")
    view = page(client, "/rollouts")
    assert view.picks[-2:] == [13, 14] and "incomplete" not in view.all_text
    assert client.get("/api/overview").get_json()["rollouts"] == 14


def test_rewritten_file_is_indexed_again(client, rollouts_path):
    assert len(listed(client, "/rollouts")) == 12
    write_rollouts(rollouts_path, sample_rollouts()[6:9])  # `gym collect` run again, same path
    assert listed(client, "/rollouts") == [1, 2, 3]
    assert client.get("/api/overview").get_json()["rollouts"] == 3
    # rewritten again, longer and with the same first line: still noticed
    write_rollouts(rollouts_path, sample_rollouts()[6:7] + sample_rollouts()[:6])
    assert listed(client, "/rollouts?sort=-reward&task=2") == [1]
    assert client.get("/api/overview").get_json()["rollouts"] == 7


def test_blank_and_bad_lines(tmp_path):
    rows = [orjson.dumps(r) for r in sample_rollouts()[:3]]
    path = tmp_path / "messy.jsonl"
    path.write_bytes(rows[0] + b"\n\n   \n{not json}\n" + rows[1] + b"\n[1, 2]\n" + rows[2])  # no final newline
    client = create_app(path, wait=None).test_client()
    view = page(client, "/rollouts")
    assert view.picks == [1, 4, 5, 6, 7]
    assert "2 line(s) are not JSON objects" in view.all_text and "lines 4, 6" in view.all_text
    data = client.get("/api/overview").get_json()
    assert (data["rollouts"], data["bad_lines"]) == (3, 2)
    assert "is not valid JSON" in page(client, "/rollouts/4").all_text
    assert listed(client, "/rollouts?error=invalid JSON line") == [4, 6]
    with open(path, "ab") as fp:  # the unterminated last line gets its newline, then more
        fp.write(b"\n" + rows[0] + b"\n")
    assert listed(client, "/rollouts") == [1, 4, 5, 6, 7, 8]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(st.just("row"), st.just("blank"), st.just("bad")), min_size=1, max_size=12),
       st.lists(st.integers(min_value=1, max_value=4000), min_size=1, max_size=6))
def test_index_matches_a_plain_parse_whatever_the_write_pattern(tmp_path_factory, kinds, cuts):
    """Written in arbitrary pieces (torn lines included) and refreshed after each piece, the
    index ends up with exactly the complete lines, with their line numbers."""
    samples = [orjson.dumps(r) for r in sample_rollouts()]
    lines = [samples[i % len(samples)] if kind == "row" else b"" if kind == "blank" else b"{oops"
             for i, kind in enumerate(kinds)]
    data = b"".join(line + b"\n" for line in lines)
    path = tmp_path_factory.mktemp("idx") / "live.jsonl"
    path.write_bytes(b"")
    index = RolloutIndex(path)
    written = 0
    for cut in sorted(set(cuts)) + [len(data)]:
        with open(path, "ab") as fp:
            fp.write(data[written:cut])
        written = max(written, min(cut, len(data)))
        index.refresh(wait=None)
        complete = data[:written].count(b"\n")
        expected = [n + 1 for n, line in enumerate(lines[:complete]) if line]
        assert list(index.cols.lineno)[: len(expected)] == expected
    assert list(index.cols.lineno) == [n + 1 for n, line in enumerate(lines) if line]
    assert index.totals.rollouts == kinds.count("row") and index.n_bad == kinds.count("bad")


def test_index_across_chunk_boundaries(tmp_path, monkeypatch):
    monkeypatch.setattr(index_module, "SCAN_CHUNK", 1000)
    monkeypatch.setattr(index_module, "PARSE_CHUNK", 3000)
    rows = sample_rollouts() * 5
    index = RolloutIndex(write_rollouts(tmp_path / "many.jsonl", rows))
    index.refresh(wait=None)
    assert index.cols.lines == index.cols.parsed == 60 and index.totals.rollouts == 60
    assert [orjson.loads(raw)["task_index"] for raw in index.read(range(60))] == [r["task_index"] for r in rows]


# -- safety --------------------------------------------------------------------------------

@pytest.mark.parametrize("url", ["/rollouts/7", "/rollouts?task=2", "/compare?a=7&b=8", "/rollouts?q=alert"])
def test_model_output_is_escaped(client, url):
    response = client.get(url)
    html = response.get_data(as_text=True)
    assert "<script" not in html.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert XSS in Page(html).all_text
    assert "script-src" not in response.headers["Content-Security-Policy"]  # no script allowed at all
    assert response.headers["X-Content-Type-Options"] == "nosniff"


HOSTILE = XSS + '"><img src=x onerror=alert(2)>'


def hostile_rollouts() -> list[dict]:
    """Model output (and a hand-edited file) with markup in every field a page shows."""
    h = HOSTILE
    first = rollout(0, 0, "Oslo", [reasoning(h), call("get_" + h, "c1", city=h), output("c1", h),
                                   {"type": "function_call", "call_id": "c2", "name": h, "arguments": h},
                                   {"type": h, "payload": h}, message(h)], 0.5)
    params = first["responses_create_params"]
    params["instructions"] = params[h] = h
    params["input"].append({"role": h, "content": [{"type": "input_text", "text": h}]})
    params["tools"][0].update(name=h, description=h)
    first.update({"id": h, "agent": h, "model": h, "stop_reason": h, "metric_names": [h, "note"], h: 1, "note": h})
    first["timing"][h] = 1.0
    first["response"]["usage"][h] = {h: 3}
    failed = rollout(0, 1, "Oslo", None, None, error={"type": h, "kind": h, "status": h, "message": h})
    return [first, failed, rollout(1, 0, h, [message(h)], 1.0)]


def test_markup_in_any_field_is_shown_as_text_on_every_page(tmp_path):
    path = write_rollouts(tmp_path / "hostile.jsonl", hostile_rollouts())
    path.with_name("hostile.failures.jsonl").write_text(
        json.dumps({"class": HOSTILE, "message": HOSTILE, "task_index": 0, "attempts": HOSTILE}) + "\n"
        + json.dumps({"error": {"type": HOSTILE, "kind": HOSTILE, "message": HOSTILE}}) + "\n")
    client = create_app(path, wait=None).test_client()
    q = urllib.parse.quote(HOSTILE)
    shown = ["/", "/rollouts", "/rollouts/1", "/rollouts/2", "/compare?a=1&b=3", "/tasks", "/failures",
             f"/rollouts?q={q}", f"/rollouts?reward_min={q}", f"/tasks?flag={q}", f"/failures?class={q}",
             "/failures?show=all"]
    quiet = [f"/rollouts?task={q}", f"/rollouts?tool={q}", f"/rollouts?sort={q}", f"/compare?a={q}&b=1",
             f"/{q}", "/rollouts/99", f"/failures?task={q}", f"/failures?show={q}"]
    for url in shown + quiet:
        response = client.get(url)
        view = Page(response.get_data(as_text=True))
        assert not {"script", "img", "iframe", "object", "embed"} & set(view.tags), url
        assert view.handlers == [], url
        if url in shown:
            assert XSS in view.all_text, url
    text = Page(client.get("/rollouts/1").get_data(as_text=True)).all_text
    assert text.count(HOSTILE) >= 12  # id, agent, model, stop, input, tools, steps, metrics, usage, timing


def test_only_the_named_file_is_served(client):
    for url in ("/rollouts/../../etc/passwd", "/static/../app.py", "/static/%2e%2e/app.py", "/file?path=/etc/passwd"):
        assert client.get(url).status_code == 404, url
    assert client.get("/static/style.css").status_code == 200


def test_foreign_host_header_is_refused(client):
    assert client.get("/", headers={"Host": "attacker.example"}).status_code == 400
    assert client.get("/", headers={"Host": "127.0.0.1:7860"}).status_code == 200
    assert client.get("/", headers={"Host": "[::1]:7860"}).status_code == 200  # IPv6 loopback, as gym serve


# -- the command ---------------------------------------------------------------------------

def _serve(*args: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([GYM, "view", *args, "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    line = proc.stdout.readline()
    match = re.search(r"http://127\.0\.0\.1:\d+/", line)
    if not match:
        proc.kill()
        pytest.fail(f"no URL in {line!r}")
    return proc, match.group(0)


@pytest.mark.parametrize("spelling", ["plain", "seed"])
def test_gym_view_serves_the_file(rollouts_path, spelling):
    arg = str(rollouts_path) if spelling == "plain" else f"+jsonl_fpath={rollouts_path}"
    proc, url = _serve(arg)
    try:
        for _ in range(100):  # bounded wait for the background index
            with urllib.request.urlopen(url + "api/status", timeout=10) as response:
                status = json.load(response)
            if status["done"]:
                break
        assert status["lines"] == status["parsed"] == 12 and status["path"] == str(rollouts_path)
        with urllib.request.urlopen(url + "rollouts/7", timeout=10) as response:
            assert "&lt;script&gt;" in response.read().decode()
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0


def test_gym_view_errors(tmp_path):
    missing = run_gym("view", str(tmp_path / "nope.jsonl"))
    assert missing.returncode != 0 and "nope.jsonl: no such file" in missing.stderr
    assert "give one FILE.jsonl" in run_gym("view").stderr
    assert "unknown argument +jsonl" in run_gym("view", "+jsonl=x").stderr


def test_browser_tests_skip_saying_why_without_chromium(tmp_path):
    """Where chromium cannot be had, the run still passes and says why the browser tests did
    not run (one other test runs alongside, as in the full suite)."""
    env = {**os.environ, "GYM_TEST_CHROMIUM": str(tmp_path / "no-chromium")}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             "tests/test_viewer_browser.py", "tests/test_viewer.py::test_unknown_lines_are_404"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"browser tests skipped: chromium not found at {tmp_path / 'no-chromium'}" in result.stdout
    assert re.match(r"1 passed, 1 skipped in ", result.stdout.strip().splitlines()[-1]), result.stdout
