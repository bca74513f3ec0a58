"""The math environment: the sandbox stops hostile code cleanly (real processes, real
limits), math-verify scores right, wrong and unparsable answers honestly, and the offline
examples replay with the rewards their script implies."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import gym_math
from gym_math.sandbox import UID_BASE, UID_SLOTS, Limits, Sandbox
from gymcore.testing import assert_reward, replay_examples, run_task, tool_call

GYM = str(Path(sys.executable).parent / "gym")
LIMITS = Limits(wall_s=4, cpu_s=2, memory_mb=256, output_bytes=4096)


def run(code: str, limits: Limits = LIMITS):
    return asyncio.run(Sandbox(limits).run(code))


def processes_of(uid: int) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        try:
            status = Path(f"/proc/{name}/status").read_text()
        except OSError:
            continue
        uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()
        state = next(line for line in status.splitlines() if line.startswith("State:"))
        if int(uids[1]) == uid and "zombie" not in state:
            found.append(int(name))
    return found


def test_a_program_prints_its_result():
    result = run("import math\nprint(math.comb(10, 3))")
    assert (result.stdout, result.exit_code, result.limit) == ("120\n", 0, None)


@pytest.mark.parametrize("code", ["while True: pass", "import time\ntime.sleep(60)"])
def test_an_endless_program_is_stopped(code):
    result = run(code)
    assert result.limit in ("cpu", "wall") and result.exit_code != 0
    assert "[sandbox]" in result.for_model(LIMITS) and "stopped" in result.for_model(LIMITS)


def test_a_fork_bomb_is_contained():
    code = "import os\nwhile True:\n    os.fork()"
    result = run(code)
    assert result.exit_code != 0  # its forks failed (BlockingIOError) or the group was killed
    box = Sandbox(LIMITS)
    if box.drop_privileges:  # each call had a uid of its own: nothing of it is left
        assert not [uid for uid in range(UID_BASE, UID_BASE + UID_SLOTS) if processes_of(uid)]


def test_a_process_left_behind_is_killed_with_its_uid():
    box = Sandbox(LIMITS)
    if not box.drop_privileges:
        pytest.skip("not root: the sandbox cannot give calls a uid of their own")
    uid = box._free_uids[0]
    code = "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(120)\nprint('left a child')"
    result = asyncio.run(box.run(code))
    assert result.stdout == "left a child\n"
    assert processes_of(uid) == []


def test_a_big_allocation_is_a_memory_error_the_model_can_read():
    result = run("x = bytearray(1024 ** 3)\nprint('allocated')")
    assert result.limit == "memory" and "MemoryError" in result.stderr and "allocated" not in result.stdout
    assert "more than 256 MB" in result.for_model(LIMITS)


def test_a_huge_print_is_cut_and_stopped():
    result = run("while True:\n    print('x' * 1000)")
    assert result.limit == "output" and len(result.stdout) + len(result.stderr) <= LIMITS.output_bytes
    assert "output cut" in result.for_model(LIMITS)


def test_no_secret_of_ours_reaches_the_code(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-must-not-leak")
    result = run("import os\nprint(sorted(os.environ))\nprint(open('/proc/self/environ').read())")
    assert "sk-must-not-leak" not in result.stdout and "OPENAI_API_KEY" not in result.stdout


def test_a_slow_call_does_not_stall_the_event_loop():
    async def main():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        await Sandbox(LIMITS).run("import time\ntime.sleep(1)")
        task.cancel()
        return ticks

    assert asyncio.run(main()) > 10  # the loop kept turning while the child slept


def test_the_tool_through_the_environment():
    task = {"responses_create_params": {"input": "17*23?"}, "verifier_metadata": {"expected_answer": "391"}}
    rollout = run_task(gym_math, task, [tool_call("python", code="print(17*23)"), "So \\boxed{391}."])
    assert rollout.response["output"][1]["output"] == "391\n"
    assert_reward(rollout, 1.0, answer_parsed=1, used_python=1, python_calls=1)
    bad = run_task(gym_math, task, [tool_call("python", code="1/0"), "\\boxed{391}"])
    assert "ZeroDivisionError" in bad.response["output"][1]["output"]


@pytest.mark.parametrize("expected, answer, reward, parsed", [
    ("391", "The answer is \\boxed{391}.", 1.0, 1),
    ("391", "It is 391 apples.", 1.0, 1),
    ("0.5", "\\boxed{\\frac{1}{2}}", 1.0, 1),
    ("$\\dfrac{242}{311}$", "\\boxed{242/311}", 1.0, 1),
    ("391", "\\boxed{392}", 0.0, 1),
    ("$\\dfrac{242}{311}$", "\\boxed{\\frac{311}{242}}", 0.0, 1),
    ("391", "I do not know.", 0.0, 0),
])
def test_math_verify_scores_honestly(expected, answer, reward, parsed):
    task = {"responses_create_params": {"input": "?"}, "verifier_metadata": {"expected_answer": expected}}
    assert_reward(run_task(gym_math, task, [answer]), reward, answer_parsed=parsed, used_python=0)


def test_a_row_without_ground_truth_fails_not_scores():
    rollout = run_task(gym_math, {"responses_create_params": {"input": "?"}}, ["\\boxed{1}"])
    assert rollout.reward is None and rollout.error["hook"] == "verify"


def test_the_offline_examples_replay_with_known_rewards():
    rollouts = sorted(replay_examples(gym_math), key=lambda r: r.task_index)
    assert len(rollouts) == 24 and all(r.error is None for r in rollouts)
    for i, rollout in enumerate(rollouts):  # the rules of make_examples.py
        assert rollout.metrics["used_python"] == int(i % 4 != 3)
        if i % 8 == 7:
            assert rollout.metrics["answer_parsed"] == 0 and rollout.reward == 0
        else:
            assert rollout.reward == (0.0 if i % 3 == 2 else 1.0), i


def test_a_thousand_gsm_tasks_can_be_made(tmp_path):
    out = tmp_path / "gsm.jsonl"
    made = subprocess.run([GYM, "dataset", "make", "math:gsm_symbolic", "--size", "1000", "--seed", "1", "-o",
                           str(out), "-q"], capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 1000 and len({row["id"] for row in rows}) == 1000
    assert all(row["verifier_metadata"]["expected_answer"] for row in rows)
