"""``gym collect --estimate N``: a pilot that is the start of the run, and a projection whose
intervals hold the full run it predicts. Real subprocesses, the fake server with jitter."""

from __future__ import annotations

import json

from gymcore.estimate import pilot_ranks, wilson

from .conftest import read_jsonl, run_gym

CITIES = ["Paris", "Oslo", "Tokyo", "Denver", "London"]


def tasks_file(path, n):
    path.write_text("".join(json.dumps({"id": i, "responses_create_params": {
        "input": f"What is the weather in {CITIES[i % len(CITIES)]}? ({i})"}}) + "\n" for i in range(n)))
    return path


def within(value, interval):
    return interval["low"] <= value <= interval["high"]


def test_pilot_is_spread_over_the_tasks():
    assert pilot_ranks(4, 40, 2) == [{0, 10, 20, 30}, set()]
    assert pilot_ranks(5, 3, 2) == [{0, 1, 2}, {0, 1}]
    low, high = wilson(0, 20)
    assert low == 0 and 0.1 < high < 0.2  # 0 failures in 20 still leaves room for some


def test_projection_holds_the_full_run_and_resume_continues_the_pilot(tmp_path, gym_env, fake_openai):
    # latency well above the collector's own CPU per rollout, so a loaded machine moves the wall time little
    fake_openai.latency, fake_openai.jitter = 0.15, 0.1
    fake_openai.keep_requests = False
    fake_openai.rules = [{"match": "Oslo", "status": 500}]  # a fifth of the rollouts fail
    tasks = tasks_file(tmp_path / "tasks.jsonl", 40)
    common = ["--agent", "weather", "--model", "openai:fake", "--input", str(tasks), "--parallel", "4",
              "--max-retries", "0", "-q"]
    pilot_out = tmp_path / "run.jsonl"
    result = run_gym("collect", *common, "--output", str(pilot_out), "--estimate", "10",
                     "--price-in", "2", "--price-out", "8", env=gym_env)
    assert result.returncode == 0, result.stderr
    assert "wall time" in result.stdout and "failure rate" in result.stdout and "cost" in result.stdout
    summary = json.loads((tmp_path / "run.metrics.json").read_text())
    assert summary["status"] == "estimated" and summary["rollouts"] == 10
    projection = summary["estimate"]
    assert projection["rollouts"] == 40 and projection["pilot_rollouts"] == 10
    pilot_lines = read_jsonl(pilot_out)
    assert len(pilot_lines) + len(read_jsonl(tmp_path / "run.failures.jsonl")) == 10
    continue_with = result.stderr.strip().splitlines()[-1].split("continue the run with: ", 1)[1]
    assert "--estimate" not in continue_with and "--price-in" not in continue_with
    assert continue_with.endswith("--resume")

    # the full run the projection predicts
    full_out = tmp_path / "full.jsonl"
    result = run_gym("collect", *common, "--output", str(full_out), env=gym_env)
    assert result.returncode == 1, result.stderr  # the Oslo rollouts failed
    full = json.loads((tmp_path / "full.metrics.json").read_text())
    assert full["rollouts"] == 40
    assert within(full["wall_s"], projection["wall_s"]), (full["wall_s"], projection["wall_s"])
    assert within(full["mean_turns"] * full["rollouts"], projection["model_calls"]), projection
    assert within(full["input_tokens"], projection["input_tokens"]), projection
    assert within(full["output_tokens"], projection["output_tokens"]), projection
    assert within(full["failed"] / full["rollouts"], projection["failure_rate"]), projection
    cost = (full["input_tokens"] * 2 + full["output_tokens"] * 8) / 1e6
    assert within(round(cost, 4), projection["cost"]), projection

    # --resume continues from the pilot: the pilot's lines stay, the rest is added
    argv = continue_with.split()[1:]
    result = run_gym(*argv, env=gym_env)
    assert result.returncode == 1, result.stderr  # Oslo still fails
    lines = read_jsonl(pilot_out)
    assert lines[:len(pilot_lines)] == pilot_lines
    assert len(lines) == 32  # every non-Oslo task once
    assert sorted(l["task_index"] for l in lines) == [i for i in range(40) if i % 5 != 1]
