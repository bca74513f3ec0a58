"""The reasoning environment: its generators through ``gym dataset make`` (real subprocesses),
and ``verify`` with reasoning-gym's real scorers on right, wrong and unparsable answers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import gym_reasoning
from gym_reasoning import generator, last_answer
from gymcore.testing import assert_reward, replay_examples, run_task

GYM = str(Path(sys.executable).parent / "gym")


def gym(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([GYM, *args], capture_output=True, text=True, timeout=120)


def one_task(name: str, seed: int = 3, **config) -> dict:
    return next(iter(generator(name)(size=1, seed=seed, **config)))


def answer(text: str) -> str:
    return f"Let me think.\n<answer>{text}</answer>"


@pytest.mark.parametrize("name", ["leg_counting", "basic_arithmetic", "spell_backward", "letter_counting",
                                  "gsm_symbolic", "word_sorting"])
def test_right_wrong_and_unparsable_answers(name):
    task = one_task(name)
    truth = str(task["verifier_metadata"]["answer"])
    assert_reward(run_task(gym_reasoning, task, [answer(truth)]), 1.0, answer_found=1)
    wrong = run_task(gym_reasoning, task, [answer(truth + "0 nonsense")])
    assert wrong.reward < 1.0 and wrong.metrics["answer_found"] == 1
    assert_reward(run_task(gym_reasoning, task, [f"It is {truth}."]), 0.0, answer_found=0)  # no tags


def test_the_last_answer_tag_counts():
    assert last_answer("<answer>1</answer> no wait <answer> 2 </answer>") == "2"
    assert last_answer("<answer>unclosed") is None
    task = one_task("basic_arithmetic")
    truth = str(task["verifier_metadata"]["answer"])
    assert run_task(gym_reasoning, task, [f"<answer>{truth}</answer> hmm, <answer>-1{truth}</answer>"]).reward < 1


def test_a_row_without_its_generator_fails_the_rollout_not_scores_it():
    rollout = run_task(gym_reasoning, {"responses_create_params": {"input": "2+2?"}}, [answer("4")])
    assert rollout.reward is None and rollout.error["hook"] == "verify"


def test_dataset_make_is_reproducible_and_takes_options(tmp_path):
    listed = gym("datasets", "--json")
    assert listed.returncode == 0, listed.stderr
    names = {entry["name"] for entry in json.loads(listed.stdout)}
    assert {"reasoning:leg_counting", "reasoning:gsm_symbolic"} <= names and "reasoning:composite" not in names
    paths = [tmp_path / f"{i}.jsonl" for i in range(3)]
    for path, seed in zip(paths, ("1", "1", "2")):
        made = gym("dataset", "make", "reasoning:leg_counting", "--size", "40", "--seed", seed, "-o", str(path),
                   "min_animals=3", "max_animals=3", "-q")
        assert made.returncode == 0, made.stderr
    assert paths[0].read_bytes() == paths[1].read_bytes() != paths[2].read_bytes()
    rows = [json.loads(line) for line in paths[0].read_text().splitlines()]
    assert len(rows) == 40 and len({row["id"] for row in rows}) == 40
    assert all(row["verifier_metadata"]["metadata"]["num_animals"] == 3 for row in rows)


def test_dataset_make_names_a_bad_option(tmp_path):
    made = gym("dataset", "make", "reasoning:leg_counting", "--size", "5", "-o", str(tmp_path / "x.jsonl"),
               "legs_per_animal=7")
    assert made.returncode == 2 and "legs_per_animal" in made.stderr
    assert not (tmp_path / "x.jsonl").exists()


def test_the_offline_examples_replay_with_known_rewards():
    rollouts = replay_examples(gym_reasoning)
    assert len(rollouts) == 24 and all(r.error is None for r in rollouts)
    # make_examples.py scripted: no tags every 8th task, a wrong answer every 3rd
    for i, rollout in enumerate(sorted(rollouts, key=lambda r: r.task_index)):
        if i % 8 == 7:
            assert rollout.metrics["answer_found"] == 0 and rollout.reward == 0
        elif i % 3 == 2:
            assert rollout.reward < 1
        else:
            assert rollout.reward == 1.0, (i, rollout.task.extra["id"])
