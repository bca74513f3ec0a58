"""``gym verify``: re-scoring stored rollouts with no model call."""

from __future__ import annotations

import asyncio
import json

import pytest

from gymcore.errors import GymError
from gymcore.rescore import RescoreConfig, rescore

from .conftest import read_jsonl, run_gym
from .test_collect_faults import VerifyBreaksOnOslo, collect_args, write_tasks


@pytest.fixture
def collected(tmp_path, gym_env):
    tasks, out = write_tasks(tmp_path / "tasks.jsonl"), tmp_path / "out.jsonl"
    result = run_gym(*collect_args(tasks, out, "--num-repeats", "2"), env=gym_env)
    assert result.returncode == 0, result.stderr
    return out


def test_verify_rescores_and_counts_changed_rewards(collected, tmp_path, gym_env):
    lines = read_jsonl(collected)
    # an earlier, buggy verifier: some rewards and metrics were wrong
    stale = tmp_path / "stale.jsonl"
    for line in lines[:5]:
        line["reward"], line["city_correct"] = 0.0, 0
    stale.write_text("".join(json.dumps(line) + "\n" for line in lines))
    new = tmp_path / "new.jsonl"
    result = run_gym("verify", str(stale), "--output", str(new), env={"PATH": "/usr/bin:/bin"})  # no key, no server
    assert result.returncode == 0, result.stderr
    rescored = read_jsonl(new)
    assert rescored == read_jsonl(collected)  # exactly the lines the real verifier wrote, in order
    metrics = json.loads((tmp_path / "new.metrics.json").read_text())
    assert metrics["rescored"] == 20 and metrics["changed"] == 5 and metrics["increased"] == 5
    assert metrics["decreased"] == 0 and metrics["mean_reward"] == 1.0 and metrics["mean_reward_before"] == 0.75
    assert "changed: 5" in result.stdout

    # the output is never overwritten by accident, nor the input ever
    again = run_gym("verify", str(stale), "--output", str(new), env={"PATH": "/usr/bin:/bin"})
    assert again.returncode == 1 and "already exists: pass --overwrite" in again.stderr
    same = run_gym("verify", str(stale), "--output", str(stale), "--overwrite")
    assert same.returncode == 1 and f"{stale} is the input file {stale}: writing there would destroy it" in same.stderr


def test_verify_exceptions_go_to_the_failures_sidecar(collected, tmp_path, plugins):
    plugins.register(VerifyBreaksOnOslo(), name="strict")
    new = tmp_path / "new.jsonl"
    summary = asyncio.run(rescore(plugins, RescoreConfig(collected, new, agent="weather,strict")))
    failed = read_jsonl(tmp_path / "new.failures.jsonl")
    assert sorted((f["task_index"], f["rollout_index"]) for f in failed) == [(2, 0), (2, 1)]
    assert all(f["class"] == "plugin:verify" and "grader table has no Oslo" in f["message"] for f in failed)
    assert len(read_jsonl(new)) == 18 and summary["failed"] == 2 and summary["changed"] == 0


def test_verify_rejects_lines_that_are_not_rollouts(tmp_path, plugins):
    bad = tmp_path / "tasks.jsonl"
    write_tasks(bad)
    with pytest.raises(GymError, match=r"tasks.jsonl:1: field .task_index.: missing \(not a rollout as gym collect writes them"):
        asyncio.run(rescore(plugins, RescoreConfig(bad, tmp_path / "new.jsonl")))


CORRUPTIONS = [
    (lambda line: line.update(response="oops"), "field 'response': expected an object or null, got str"),
    (lambda line: line["response"].update(output={"a": 1}), "field 'response.output': expected a list"),
    (lambda line: line.update(reward="high"), "field 'reward': expected a number or null, got 'high'"),
    (lambda line: line.update(task_index="3"), "field 'task_index': expected a whole number >= 0, got '3'"),
    (lambda line: line.update(timing={"total_s": "slow"}), "field 'timing.total_s': expected a number"),
    (lambda line: line.update(agent=None), "field 'agent': missing; pass --agent NAME"),
    (lambda line: line.get("row_responses_create_params", line["responses_create_params"]).pop("input"),
     "field 'responses_create_params.input': missing"),  # the row's own params, when the sent ones differ
]


def test_a_line_that_is_not_a_rollout_is_named_before_anything_is_written(collected, tmp_path, plugins):
    for corrupt, where in CORRUPTIONS:  # one collection, every way a line can be wrong
        lines = read_jsonl(collected)
        corrupt(lines[6])
        bad = tmp_path / "bad.jsonl"
        bad.write_text("".join(json.dumps(line) + "\n" for line in lines))
        new = tmp_path / "new.jsonl"
        with pytest.raises(GymError) as info:
            asyncio.run(rescore(plugins, RescoreConfig(bad, new)))
        assert str(info.value).startswith(f"{bad}:7: {where}"), str(info.value)
        assert not new.exists() and not (tmp_path / "new.failures.jsonl").exists()


def test_an_unknown_agent_or_a_sidecar_over_the_source_fails_before_writing(collected, tmp_path):
    new = tmp_path / "new.jsonl"
    result = run_gym("verify", str(collected), "--output", str(new), "--agent", "nope")
    assert result.returncode == 2 and "Traceback" not in result.stderr  # a usage error
    assert "unknown agent 'nope'" in result.stderr and not new.exists()
    # the failures sidecar of OUTPUT would be truncated first: the source would be lost
    source = tmp_path / "run.failures.jsonl"
    source.write_bytes(collected.read_bytes())
    result = run_gym("verify", str(source), "--output", str(tmp_path / "run.jsonl"), "--overwrite")
    assert result.returncode == 1 and f"{source} is the input file" in result.stderr, result.stderr
    assert source.read_bytes() == collected.read_bytes() and not (tmp_path / "run.jsonl").exists()
