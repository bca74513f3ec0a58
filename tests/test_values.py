"""Values that cannot be written as a JSON line, and input columns named like gymcore's own.

``gym collect`` and ``gym verify`` run as real subprocesses, with an environment plugin
(installed into a temporary directory through an entry point) whose ``verify`` returns a
set, an object, an int over 64 bits, NaN or infinity, and with the weather environment
against the fake OpenAI server. A bad value fails its rollout (never the run, never a
resume); a column named like a metric never replaces what ``verify`` returned.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gymcore.data import RESERVED_METRIC_NAMES, Rollout, as_verdict, converter
from gymcore.dataset import validate_row
from gymcore.runfiles import dumps

from .conftest import read_jsonl, run_gym, weather_tasks
from .test_serve import gym_serve, serve_env

PLUGIN = '''
"""An environment whose verify returns what the row's verifier_metadata.kind asks for."""
import os
from gymcore import hookimpl


class Thing:
    pass


BAD = {"set": lambda: {"a", "b"}, "object": Thing, "bigint": lambda: 2 ** 70,
       "nan_metric": lambda: float("nan"), "inf_metric": lambda: float("-inf"),
       "nested_set": lambda: {"x": [{1}]}}


def _log(what):
    with open(os.environ["BADVALUES_LOG"], "a") as fp:
        fp.write(what + "\\n")


@hookimpl
def setup_session(session):
    _log("open")


@hookimpl
def teardown_session(session):
    _log("close")


@hookimpl
def verify(session, response):
    kind = (session.task.verifier_metadata or {}).get("kind", "ok")
    if kind == "stash":  # a plugin that leaves a set in the task row
        session.task.extra["stash"] = {1, 2}
        return 1.0
    if kind == "nan_reward":
        return {"reward": float("nan")}
    if kind == "inf_reward":
        return float("inf")
    if kind in BAD:
        return {"reward": 1.0, "value": BAD[kind]()}
    return {"reward": 1.0, "value": 1}
'''

#: The documented depth limit of an input row (docs/architecture.md, Data).
MAX_ROW_DEPTH = 250
BAD_KINDS = ["set", "object", "bigint", "nan_metric", "inf_metric", "nested_set", "nan_reward", "inf_reward"]


@pytest.fixture
def badvalues_env(gym_env, tmp_path):
    """``gym_env`` with the ``badvalues`` environment installed (an entry point on PYTHONPATH)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "gym_badvalues.py").write_text(PLUGIN)
    dist = site / "gym_badvalues-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: gym-badvalues\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[gym.resources]\nbadvalues = gym_badvalues\n")
    return {**gym_env, "PYTHONPATH": str(site), "BADVALUES_LOG": str(tmp_path / "sessions.log"),
            "GYM_LOAD_PLUGINS": gym_env.get("GYM_LOAD_PLUGINS", "") + ",badvalues"}


def runner_env(env: dict) -> dict:
    """A ``gym serve`` environment with ``badvalues`` installed and the fake model's URL."""
    passed = ("OPENAI_", "BADVALUES", "PYTHON", "GYM_LOAD")
    return {**serve_env(), **{k: v for k, v in env.items() if k.startswith(passed)}}


def row(kind: str, city: str = "Paris", **extra) -> dict:
    return {"responses_create_params": {"input": f"weather in {city}?"},
            "verifier_metadata": {"kind": kind, "expected_city": city}, "id": f"t-{kind}", **extra}


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def collect(tasks: Path, out: Path, *extra: str, agent: str = "badvalues", env: dict):
    return run_gym("collect", "--agent", agent, "--model", "openai:m", "--input", str(tasks), "--output", str(out),
                   "-q", "--parallel", "4", *extra, env=env)


def sessions(env: dict) -> tuple[int, int]:
    log = Path(env["BADVALUES_LOG"]).read_text().split()
    return log.count("open"), log.count("close")


def nested(depth: int):
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


# --- break 4: one unserialisable value ----------------------------------------------


def test_unwritable_verdicts_fail_their_rollout_and_resume_goes_on(tmp_path, badvalues_env):
    tasks = write_rows(tmp_path / "tasks.jsonl", [row("ok"), *(row(k) for k in BAD_KINDS), row("ok")])
    out, failures = tmp_path / "out.jsonl", tmp_path / "out.failures.jsonl"
    result = collect(tasks, out, env=badvalues_env)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines, failed = read_jsonl(out), read_jsonl(failures)
    assert sorted(line["id"] for line in lines) == ["t-ok", "t-ok"]
    assert all(line["value"] == 1 and line["metric_names"] == ["value"] for line in lines)
    assert sorted(f["id"] for f in failed) == sorted(f"t-{k}" for k in BAD_KINDS)
    assert {f["class"] for f in failed} == {"plugin:verify"}
    messages = {f["id"][2:]: f["message"] for f in failed}
    for kind, words in {"set": ["'value'", "set"], "object": ["'value'", "Thing"], "bigint": ["'value'", "64-bit"],
                        "nan_metric": ["'value'", "nan"], "inf_metric": ["'value'", "-inf"],
                        "nested_set": ["'value'", "set"], "nan_reward": ["reward", "nan"],
                        "inf_reward": ["reward", "inf"]}.items():
        assert all(w in messages[kind] for w in words), (kind, messages[kind])
    opened, closed = sessions(badvalues_env)
    assert opened == closed == 10
    summary = json.loads((tmp_path / "out.metrics.json").read_text())
    assert summary["failures"] == {"plugin:verify": 8} and summary["scored"] == 2

    # every resume retries them: they fail again, as failures, and the run ends normally
    for attempt in (2, 3):
        result = collect(tasks, out, "--resume", env=badvalues_env)
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        assert "2 rollouts done, 8 failed before" in result.stderr
        assert len(read_jsonl(out)) == 2
        assert len(read_jsonl(failures)) == 8 * attempt
    assert sessions(badvalues_env) == (26, 26)


def test_served_runs_fail_the_same_rollouts_the_same_way(tmp_path, badvalues_env):
    tasks = write_rows(tmp_path / "tasks.jsonl", [row("ok"), row("set"), row("bigint"), row("nan_reward")])
    out = tmp_path / "out.jsonl"
    with gym_serve("--agent", "badvalues", "--model", "openai:m", env=runner_env(badvalues_env)) as (_proc, url):
        result = run_gym("collect", "--agent", "badvalues", "--server", url, "--input", str(tasks),
                         "--output", str(out), "-q", env=badvalues_env)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert [line["id"] for line in read_jsonl(out)] == ["t-ok"]
    failed = {f["id"]: f for f in read_jsonl(tmp_path / "out.failures.jsonl")}
    assert sorted(failed) == ["t-bigint", "t-nan_reward", "t-set"]
    assert {f["class"] for f in failed.values()} == {"plugin:verify"}
    assert "'value'" in failed["t-set"]["message"] and "set" in failed["t-set"]["message"]


def test_gym_verify_files_unwritable_verdicts_as_failures(tmp_path, badvalues_env):
    rows = [row("ok"), row("set"), row("object"), row("bigint"), row("nan_metric"), row("nan_reward")]
    tasks, out = write_rows(tmp_path / "tasks.jsonl", rows), tmp_path / "out.jsonl"
    assert collect(tasks, out, agent="weather", env=badvalues_env).returncode == 0
    rescored = tmp_path / "rescored.jsonl"
    result = run_gym("verify", str(out), "--agent", "badvalues", "--output", str(rescored), env=badvalues_env)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert [line["id"] for line in read_jsonl(rescored)] == ["t-ok"]
    failed = read_jsonl(tmp_path / "rescored.failures.jsonl")
    assert sorted(f["id"] for f in failed) == sorted(f"t-{k}" for k in ("set", "object", "bigint", "nan_metric",
                                                                        "nan_reward"))
    assert {f["class"] for f in failed} == {"plugin:verify"}

    # a line nested too deep (not one gym collect wrote) is refused before anything is written
    lines = out.read_text().splitlines()
    deep = json.loads(lines[0]) | {"deep": nested(600)}
    edited = tmp_path / "edited.jsonl"
    edited.write_text("\n".join([lines[1], json.dumps(deep), *lines[2:]]) + "\n")
    result = run_gym("verify", str(edited), "--agent", "badvalues", "--output", str(tmp_path / "re2.jsonl"),
                     env=badvalues_env)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"{edited}:2: field 'deep': nested deeper than {MAX_ROW_DEPTH} levels" in result.stderr
    assert not (tmp_path / "re2.jsonl").exists()


def test_a_row_nested_too_deep_is_an_input_error_with_its_line(tmp_path, badvalues_env):
    rows = [row("ok"), row("ok", deep=nested(600)), row("ok", city="London", edge=nested(MAX_ROW_DEPTH - 1))]
    tasks, out = write_rows(tmp_path / "tasks.jsonl", rows), tmp_path / "out.jsonl"
    result = collect(tasks, out, env=badvalues_env)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"{tasks}:2: field 'deep': nested deeper than {MAX_ROW_DEPTH} levels" in result.stderr
    assert not out.exists()  # refused before anything ran

    result = collect(tasks, out, "--skip-invalid", env=badvalues_env)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    lines = read_jsonl(out)
    assert sorted(line["task_index"] for line in lines) == [0, 2]
    assert next(line for line in lines if line["task_index"] == 2)["edge"] == nested(MAX_ROW_DEPTH - 1)
    result = collect(tasks, out, "--skip-invalid", "--resume", env=badvalues_env)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert len(read_jsonl(out)) == 2


@pytest.mark.parametrize("served", [False, True], ids=["embedded", "served"])
def test_what_can_only_fail_at_write_time_is_a_failure_not_a_crash(tmp_path, badvalues_env, fake_openai, served):
    """Nothing gymcore checks up front: a model reply nested too deep, a plugin that puts a
    set into the task row. Each still ends as a failure record, and the run (and its resume)
    goes on; embedded or served alike."""
    rows = [row("ok"), row("ok", city="Oslo"), row("stash"), row("ok", city="London")]
    tasks, out = write_rows(tmp_path / "tasks.jsonl", rows), tmp_path / "out.jsonl"
    deep_reply = {"output": [{"type": "message", "id": "m1", "role": "assistant", "status": "completed",
                              "content": [{"type": "output_text", "text": "hi", "annotations": []}]}],
                  "metadata": {"deep": nested(400)}}
    fake_openai.rules = [{"match": "Oslo", "times": 1, "json_body": deep_reply}]
    with contextlib.ExitStack() as stack:
        where = ["--model", "openai:m"]
        if served:
            _proc, url = stack.enter_context(gym_serve("--agent", "badvalues", "--model", "openai:m",
                                                       env=runner_env(badvalues_env)))
            where = ["--server", url]

        def run(*extra: str):
            return run_gym("collect", "--agent", "badvalues", *where, "--input", str(tasks), "--output", str(out),
                           "-q", *extra, env=badvalues_env)

        result = run()
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        assert sorted(line["task_index"] for line in read_jsonl(out)) == [0, 3]
        failed = {f["task_index"]: f for f in read_jsonl(tmp_path / "out.failures.jsonl")}
        assert sorted(failed) == [1, 2]
        assert failed[1]["class"] == "unwritable:response" and failed[2]["class"] == "unwritable:stash"
        assert "'response'" in failed[1]["message"] and "Recursion limit" in failed[1]["message"]
        assert "'stash'" in failed[2]["message"] and "set" in failed[2]["message"]
        assert failed[2]["id"] == "t-stash" and "stash" not in failed[2]  # the row, less what could not be written
        result = run("--resume")  # the rule is used up: the reply is fine now; the plugin is not
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        assert sorted(line["task_index"] for line in read_jsonl(out)) == [0, 1, 3]
        assert [f["class"] for f in read_jsonl(tmp_path / "out.failures.jsonl")][2:] == ["unwritable:stash"]


# --- break 5: input columns named like gymcore's own keys ---------------------------


def test_verify_wins_over_an_input_column_of_the_same_name(tmp_path, gym_env):
    # asked about London, expected Paris: verify says city_correct 0, the row says 1
    rows = [row("ok", city="London", city_correct=1) | {"verifier_metadata": {"expected_city": "Paris"}},
            row("ok", city="Paris", city_correct=1)]
    tasks, out = write_rows(tmp_path / "tasks.jsonl", rows), tmp_path / "out.jsonl"
    result = collect(tasks, out, agent="weather", env=gym_env)
    assert result.returncode == 0, result.stderr
    lines = sorted(read_jsonl(out), key=lambda line: line["task_index"])
    assert [line["reward"] for line in lines] == [0.0, 1.0]
    assert [line["city_correct"] for line in lines] == [0, 1]
    assert all("city_correct" in line["metric_names"] for line in lines)
    warnings = [w for w in result.stderr.splitlines() if "city_correct" in w]
    assert len(warnings) == 1 and "verify" in warnings[0], result.stderr


def test_a_previous_output_fed_back_as_input_reproduces_its_tasks(tmp_path, gym_env):
    tasks, first = weather_tasks(tmp_path / "tasks.jsonl", 4), tmp_path / "first.jsonl"
    assert collect(tasks, first, agent="weather", env=gym_env).returncode == 0
    second = tmp_path / "second.jsonl"
    result = collect(first, second, agent="weather", env=gym_env)
    assert result.returncode == 0, result.stderr
    warnings = [w for w in result.stderr.splitlines() if "warning" in w]
    assert len(warnings) == 1, result.stderr
    for name in ("reward", "metric_names", "task_index", "response", "timing", "city_correct"):
        assert name in warnings[0]
    old = {line["task_index"]: line for line in read_jsonl(first)}
    new = {line["task_index"]: line for line in read_jsonl(second)}
    assert sorted(new) == sorted(old) == [0, 1, 2, 3]
    originals = [json.loads(text) for text in tasks.read_text().splitlines()]
    for index, line in new.items():
        assert line["metric_names"] == old[index]["metric_names"] != []
        for name in line["metric_names"]:
            assert line[name] == old[index][name]
        # the task row is the original row: nothing of the first run's output is left over
        row_keys = set(line) - set(line["metric_names"]) - {
            "reward", "metric_names", "task_index", "rollout_index", "agent", "model", "response", "turns",
            "tool_calls", "tool_errors", "stop_reason", "timing", "error",
            "_ng_task_index", "_ng_rollout_index", "agent_ref",  # NeMo Gym's keys, written beside ours
            "row_responses_create_params"}  # the row's own params, when the sent ones differ (tools filled in)
        row = {k: line[k] for k in row_keys}
        row["responses_create_params"] = line.get("row_responses_create_params", line["responses_create_params"])
        assert row == originals[index]
    assert new[0]["response"]["id"] != old[0]["response"]["id"]  # run again, not copied


# --- the converter: what as_verdict accepts is written and read back exactly --------

names = st.sampled_from(["a", "b", "id", "score", "reward", "turns", "response", "metric_names",
                         "responses_create_params"])
leaves = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5)
unwritable_leaves = st.sets(st.integers(), max_size=2) | st.builds(object)
values = st.recursive(leaves | unwritable_leaves, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=3), inner, max_size=3), max_leaves=8)
row_values = st.recursive(st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1)
                          | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=5),
                          lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner,
                                                                                      max_size=3), max_leaves=8)


def strictly_writable(value) -> bool:
    """An oracle apart from gymcore's: orjson writes it, and the stdlib finds no NaN or infinity."""
    try:
        orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
        json.dumps(value, allow_nan=False, default=str)
    except (TypeError, ValueError):
        return False
    return True


@settings(max_examples=300, deadline=None)
@given(metrics=st.dictionaries(names, values, max_size=3), extra=st.dictionaries(names, row_values, max_size=3))
def test_a_verdict_is_refused_or_written_and_read_back_exactly(metrics, extra):
    metrics.pop("reward", None)
    try:
        verdict = as_verdict({"reward": 0.5, **metrics}, where="v.verify")
    except (ValueError, TypeError):  # refused: then something in it could not have been written as it is
        assert any(name in RESERVED_METRIC_NAMES or not strictly_writable(value) for name, value in metrics.items())
        return
    assert verdict is not None and verdict.metrics == metrics
    task = validate_row({**extra, "responses_create_params": {"input": "hi"}}, "<row>", 1)
    rollout = Rollout(task=task, task_index=3, rollout_index=1, agent="v", model="m", response={"output": []},
                      reward=verdict.reward, metrics=verdict.metrics)
    line = orjson.loads(dumps(converter.unstructure(rollout)))
    back = converter.structure(line, Rollout)
    assert back.metrics == metrics  # what verify returned wins ...
    assert back.reward == 0.5 and back.task_index == 3 and back.rollout_index == 1
    # ... over a column of the same name; gymcore's own keys never reach the task
    assert back.task.extra == {k: v for k, v in extra.items() if k not in metrics and k not in RESERVED_METRIC_NAMES}


def test_a_failures_file_fed_back_as_input_reruns_its_tasks(tmp_path, gym_env, fake_openai):
    tasks = write_rows(tmp_path / "tasks.jsonl", [row("ok", city="Paris"), row("ok", city="Oslo"),
                                                   row("ok", city="Oslo", id="t-2")])
    fake_openai.rules = [{"match": "Oslo", "status": 400, "times": 2}]  # a 400 is not retried
    out = tmp_path / "out.jsonl"
    assert collect(tasks, out, agent="weather", env=gym_env).returncode == 1
    failures = tmp_path / "out.failures.jsonl"
    assert sorted(f["task_index"] for f in read_jsonl(failures)) == [1, 2]
    again = tmp_path / "again.jsonl"
    result = collect(failures, again, agent="weather", env=gym_env)
    assert result.returncode == 0, result.stderr
    warnings = [w for w in result.stderr.splitlines() if "warning" in w]
    assert len(warnings) == 1 and all(k in warnings[0] for k in ("class", "invocation", "error")), result.stderr
    originals = [json.loads(text) for text in tasks.read_text().splitlines()]
    rows_again = [{k: v for k, v in line.items() if k not in line["metric_names"] and k not in (
        "reward", "metric_names", "task_index", "rollout_index", "agent", "model", "response", "turns",
        "tool_calls", "tool_errors", "stop_reason", "timing", "error", "_ng_task_index", "_ng_rollout_index",
        "agent_ref", "responses_create_params", "row_responses_create_params")}
        # the row's own params (the line's responses_create_params is what was sent: tools filled in)
        | {"responses_create_params": line.get("row_responses_create_params", line["responses_create_params"])}
        for line in read_jsonl(again)]
    # the rows as they were: no stale failure fields
    assert sorted(rows_again, key=json.dumps) == sorted(originals[1:], key=json.dumps)
