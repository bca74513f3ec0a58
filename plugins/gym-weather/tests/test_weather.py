"""The weather environment's tool and verify, through gymcore.testing (in-process, scripted
model turns): every scoring case of the module docstring, and the fake weather's determinism."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import gym_weather
from gym_weather import weather_for
from gymcore.testing import assert_reward, call_tool, replay_examples, run_task, tool_call


def paris_task(**extra):
    return {"responses_create_params": {"input": "What's the weather in Paris?"},
            "verifier_metadata": {"expected_city": "Paris"}, **extra}


def report(city: str) -> str:
    w = weather_for(city)
    return f"In {w['city']} it is {w['temperature_c']}°C and {w['conditions']}."


@pytest.mark.parametrize("asked", ["Paris", "paris", "  PARIS! "])
def test_right_city_reported_scores_1(asked):
    rollout = run_task(gym_weather, paris_task(), [tool_call("get_weather", city=asked), report("Paris")])
    assert_reward(rollout, 1.0, called_tool=1, city_correct=1, reported_result=1, has_ground_truth=1)


def test_right_city_not_reported_scores_half():
    rollout = run_task(gym_weather, paris_task(), [tool_call("get_weather", city="Paris"), "Enjoy Paris!"])
    assert_reward(rollout, 0.5, called_tool=1, city_correct=1, reported_result=0)


def test_reporting_someone_else_s_weather_is_not_reporting():
    # the right city was looked up, but the answer gives London's figures
    rollout = run_task(gym_weather, paris_task(), [
        [tool_call("get_weather", city="Paris"), tool_call("get_weather", city="London")], report("London")])
    assert weather_for("London")["conditions"] != weather_for("Paris")["conditions"]
    assert_reward(rollout, 0.5, city_correct=1, reported_result=0)


def test_wrong_city_scores_0_even_when_reported():
    rollout = run_task(gym_weather, paris_task(), [tool_call("get_weather", city="Lyon"), report("Lyon")])
    assert_reward(rollout, 0.0, called_tool=1, city_correct=0, reported_result=0)


def test_no_tool_call_scores_0():
    rollout = run_task(gym_weather, paris_task(), [report("Paris")])  # right figures, but guessed
    assert_reward(rollout, 0.0, called_tool=0, city_correct=0)


@pytest.mark.parametrize("turns, reward, called, reported", [
    ([tool_call("get_weather", city="Oslo"), report("Oslo")], 1.0, 1, 1),
    ([tool_call("get_weather", city="Oslo"), "Dress warmly."], 0.5, 1, 0),
    (["Probably cold."], 0.0, 0, 0),
])
def test_without_ground_truth_it_scores_what_it_can(turns, reward, called, reported):
    task = {"responses_create_params": {"input": [{"role": "developer", "content": "Be helpful."},
                                                  {"role": "user", "content": "weather in oslo?"}]}}
    rollout = run_task(gym_weather, task, turns)
    assert_reward(rollout, reward, called_tool=called, reported_result=reported, has_ground_truth=0)
    assert "city_correct" not in rollout.metrics


def test_the_tool_returns_the_weather_and_refuses_a_missing_city():
    assert call_tool(gym_weather, "get_weather", {"city": "Paris"}).json() == weather_for("Paris")
    bad = call_tool(gym_weather, "get_weather", {"city": "  "})
    assert not bad.ok and "non-empty string" in bad.json()["error"]


def test_weather_for_is_deterministic_across_processes_and_spellings():
    cities = ["Paris", "San Francisco", "São Paulo", "Nairobi"]
    here = [weather_for(c) for c in cities]
    # pinned: these figures are in the recorded rollouts, so they must never change
    assert here[0] == {"city": "Paris", "temperature_c": 17, "conditions": "sunny"}
    assert weather_for(" san  francisco. ")["temperature_c"] == weather_for("San Francisco")["temperature_c"]
    code = f"import json, gym_weather; print(json.dumps([gym_weather.weather_for(c) for c in {cities!r}]))"
    for seed in ("1", "2"):  # another process, another str hash seed: same weather
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env={**os.environ, "PYTHONHASHSEED": seed}).stdout
        assert json.loads(out) == here


def test_the_recorded_examples_replay_with_their_known_scores():
    rollouts = replay_examples(gym_weather)
    assert [r.error for r in rollouts] == [None] * 24
    # The recording holds a few imperfect answers on purpose: 5 looks up "Newark"
    # for "NYC" (the wrong city), 9 and 17 do not report the result,
    # 13 never calls the tool.
    imperfect = {5: 0.0, 9: 0.5, 13: 0.0, 17: 0.5}
    assert [r.reward for r in rollouts] == [imperfect.get(i, 1.0) for i in range(24)]
    assert_reward(rollouts[0], 1.0, city_correct=1, reported_result=1)
    assert_reward(rollouts[13], 0.0, called_tool=0)
