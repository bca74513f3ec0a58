"""Tests for the {{ cookiecutter.name }} environment, with gymcore.testing: the plugin is registered
in-process and the model is scripted, so they need no installation, no API key, no network."""

import json

import pytest

import {{ cookiecutter.__package }} as env
from gymcore.testing import assert_reward, call_tool, replay_examples, run_task, tool_call

TOOL = env.TOOL_NAME
TASK = {"responses_create_params": {"input": "What is 2 + 3.5?"}, "verifier_metadata": {"expected_answer": 5.5}}


def test_the_tool_adds_numbers():
    result = call_tool(env, TOOL, {"numbers": [2, 3.5, -1]})
    assert result.ok and result.json() == {"sum": 4.5}


@pytest.mark.parametrize("arguments", [{}, {"numbers": []}, {"numbers": ["2", 3]}, {"numbers": [True]}])
def test_bad_arguments_become_an_error_the_model_can_read(arguments):
    result = call_tool(env, TOOL, arguments)
    assert not result.ok and "'numbers' must be a non-empty list of numbers" in result.json()["error"]


def test_right_answer_after_using_the_tool_scores_1():
    rollout = run_task(env, TASK, model_turns=[tool_call(TOOL, numbers=[2, 3.5]), "2 + 3.5 = 5.5"])
    assert_reward(rollout, 1.0, answer_correct=1, used_tool=1)
    # the model was shown the tool's real output before it answered
    assert json.loads(rollout.response["output"][1]["output"]) == {"sum": 5.5}


def test_wrong_answer_scores_0():
    rollout = run_task(env, TASK, model_turns=[tool_call(TOOL, numbers=[2, 3]), "2 + 3.5 = 5"])
    assert_reward(rollout, 0.0, answer_correct=0, used_tool=1)


def test_right_answer_without_the_tool_still_counts_and_the_metric_says_so():
    rollout = run_task(env, TASK, model_turns=["It is 5.5."])
    assert_reward(rollout, 1.0, answer_correct=1, used_tool=0)


def test_without_ground_truth_it_scores_what_it_can():
    task = {"responses_create_params": {"input": "Add 1 and 2."}}
    assert_reward(run_task(env, task, model_turns=[tool_call(TOOL, numbers=[1, 2]), "3"]), 1.0,
                  used_tool=1, has_ground_truth=0)
    assert_reward(run_task(env, task, model_turns=["3"]), 0.0, used_tool=0, has_ground_truth=0)


def test_the_recorded_examples_replay_and_score_1():
    rollouts = replay_examples(env)
    with open(env.example_dataset(), encoding="utf-8") as fp:
        assert len(rollouts) == sum(1 for line in fp if line.strip())
    for rollout in rollouts:
        assert_reward(rollout, 1.0, answer_correct=1, used_tool=1)
