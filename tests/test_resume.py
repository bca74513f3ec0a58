"""Runs that are killed, interrupted, refused and resumed: ``gym collect`` as a real
process, ``kill -9`` and SIGINT/SIGTERM sent to it mid-run, then ``--resume``."""

from __future__ import annotations

import json
import random
import shlex
import signal
import subprocess
import time
from pathlib import Path

from .conftest import GYM, read_jsonl, run_gym
from .test_collect_faults import collect_args, keys, write_tasks

LIMIT, REPEATS = 8, 3
ALL = [(t, r) for t in range(LIMIT) for r in range(REPEATS)]


def start(args: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen([GYM, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def count_lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    """Poll until ``predicate()`` or the process exits; bounded."""
    deadline = time.monotonic() + timeout
    while not predicate() and proc.poll() is None:
        assert time.monotonic() < deadline, "timed out waiting for the run"
        time.sleep(0.01)


def assert_complete(out: Path) -> None:
    """Every line whole and valid, each rollout exactly once."""
    raw = out.read_bytes()
    assert raw.endswith(b"\n")
    lines = [json.loads(line) for line in raw.decode().splitlines()]
    assert keys(lines) == ALL  # sorted and complete: no duplicates, none missing
    assert all(line["reward"] == 1.0 for line in lines)


def test_kill_9_at_random_moments_then_resume(tmp_path, gym_env, fake_openai):
    fake_openai.latency = 0.05
    tasks, out = write_tasks(tmp_path / "tasks.jsonl"), tmp_path / "out.jsonl"
    args = collect_args(tasks, out, "--limit", str(LIMIT), "--num-repeats", str(REPEATS), "--parallel", "4")
    rng = random.Random()
    killed_mid_run = 0
    for attempt in range(3):
        before = count_lines(out)
        proc = start(args + (["--resume"] if attempt else []), gym_env)
        wait_for(lambda: count_lines(out) > before, proc)
        time.sleep(rng.uniform(0, 0.15))
        if proc.poll() is None:
            proc.kill()  # SIGKILL: no handler, no flush, no goodbye
            killed_mid_run += 1
        proc.communicate(timeout=20)
        assert count_lines(out) >= before  # nothing written is ever lost
    assert killed_mid_run >= 1, "every run finished before it could be killed: the test tested nothing"
    result = run_gym(*args, "--resume", env=gym_env)
    assert result.returncode == 0, result.stderr
    assert_complete(out)
    assert not (tmp_path / "out.failures.jsonl").exists()


def test_torn_last_line_is_cut_off_on_resume(tmp_path, gym_env):
    tasks, out = write_tasks(tmp_path / "tasks.jsonl"), tmp_path / "out.jsonl"
    args = collect_args(tasks, out, "--limit", str(LIMIT), "--num-repeats", str(REPEATS))
    assert run_gym(*args, env=gym_env).returncode == 0
    raw = out.read_bytes().splitlines(keepends=True)
    torn = raw[-1][: len(raw[-1]) // 2]  # what a write cut short by kill -9 leaves
    out.write_bytes(b"".join(raw[:-1]) + torn)
    result = run_gym(*args, "--resume", env=gym_env)
    assert result.returncode == 0, result.stderr
    assert f"{out}:{len(raw)}: the last line is incomplete" in result.stderr and "removed it" in result.stderr
    assert_complete(out)


def test_sigint_finishes_in_flight_and_prints_the_resume_command(tmp_path, gym_env, fake_openai):
    fake_openai.latency = 0.05
    tasks, out = write_tasks(tmp_path / "tasks.jsonl"), tmp_path / "out.jsonl"
    args = collect_args(tasks, out, "--limit", str(LIMIT), "--num-repeats", str(REPEATS), "--parallel", "4")
    proc = start(args, gym_env)
    wait_for(lambda: count_lines(out) >= 1, proc)
    assert proc.poll() is None, "the run finished before the signal"
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 130, stderr
    assert "SIGINT: starting no new rollouts" in stderr and "Traceback" not in stderr
    done = read_jsonl(out)
    assert 1 <= len(done) < len(ALL) and out.read_bytes().endswith(b"\n")
    assert not (tmp_path / "out.failures.jsonl").exists()  # in-flight rollouts finished, none was cut
    # the requests that were in flight got answered and written: no model call was wasted
    assert len(fake_openai.requests) == 2 * len(done)
    metrics = json.loads((tmp_path / "out.metrics.json").read_text())
    assert metrics["status"] == "interrupted" and metrics["rollouts"] == len(done)
    command = stderr.split("resume with: ", 1)[1].splitlines()[0]
    argv = shlex.split(command)
    assert argv[0] == "gym" and argv[-1] == "--resume"
    result = subprocess.run([GYM, *argv[1:]], env=gym_env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert_complete(out)


def test_second_signal_cancels_at_once(tmp_path, gym_env, fake_openai):
    fake_openai.latency = 2.0
    tasks, out = write_tasks(tmp_path / "tasks.jsonl"), tmp_path / "out.jsonl"
    proc = start(collect_args(tasks, out, "--parallel", "2"), gym_env)
    wait_for(lambda: len(fake_openai.requests) >= 2, proc)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=1.5)  # well before the 2 s answers (and the 30 s grace)
    assert proc.returncode == 130, stderr
    assert "SIGINT again: cancelling 2 rollouts in flight now" in stderr
    assert read_jsonl(out) == [] and "resume with: gym collect" in stderr


def test_sigterm_waits_the_grace_period_then_cancels(tmp_path, gym_env, fake_openai):
    fake_openai.latency = 2.0
    tasks, out = write_tasks(tmp_path / "tasks.jsonl"), tmp_path / "out.jsonl"
    proc = start(collect_args(tasks, out, "--parallel", "2", "--grace", "0.3"), gym_env)
    wait_for(lambda: len(fake_openai.requests) >= 2, proc)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=1.5)
    assert proc.returncode == 130, stderr
    assert "SIGTERM: starting no new rollouts; waiting up to 0.3s for the 2 in flight" in stderr
    assert json.loads((tmp_path / "out.metrics.json").read_text())["stop_reason"] == "interrupted by SIGTERM"


def test_existing_output_is_never_overwritten_and_resume_refuses_another_run(tmp_path, gym_env):
    tasks, out = write_tasks(tmp_path / "tasks.jsonl"), tmp_path / "out.jsonl"
    args = collect_args(tasks, out, "--limit", "2")
    assert run_gym(*args, env=gym_env).returncode == 0
    original = out.read_bytes()

    result = run_gym(*args, env=gym_env)
    assert result.returncode == 1
    assert f"{out} already exists: pass --resume to continue that run, or --overwrite" in result.stderr

    result = run_gym(*args, "--model", "openai:other", "--resume", env=gym_env)
    assert result.returncode == 1 and "it is another run: model: 'openai:m' then, 'openai:other' now" in result.stderr
    result = run_gym(*args, "--temperature", "0.5", "--resume", env=gym_env)
    assert result.returncode == 1 and "request overrides: {} then, {'temperature': 0.5} now" in result.stderr
    with open(tasks, "a") as fp:
        fp.write(json.dumps({"responses_create_params": {"input": "weather in Oslo?"}}) + "\n")
    result = run_gym(*args, "--resume", env=gym_env)
    assert result.returncode == 1 and "the input file differs (sha256" in result.stderr
    assert "Use another --output for a new run, or --overwrite" in result.stderr
    result = run_gym(*args, "--resume", "--overwrite", env=gym_env)
    assert result.returncode == 2 and "contradict" in result.stderr
    assert out.read_bytes() == original  # every refusal left the output as it was

    (tmp_path / "out.run.json").unlink()
    result = run_gym(*args, "--resume", env=gym_env)
    assert result.returncode == 1 and "no run record out.run.json" in result.stderr

    result = run_gym(*args, "--overwrite", "--num-repeats", "2", env=gym_env)
    assert result.returncode == 0, result.stderr
    assert keys(read_jsonl(out)) == [(0, 0), (0, 1), (1, 0), (1, 1)]


def test_resume_may_raise_limit_and_repeats(tmp_path, gym_env, fake_openai):
    tasks, out = write_tasks(tmp_path / "tasks.jsonl"), tmp_path / "out.jsonl"
    assert run_gym(*collect_args(tasks, out, "--limit", "2"), env=gym_env).returncode == 0
    first = out.read_bytes()
    result = run_gym(*collect_args(tasks, out, "--limit", "3", "--num-repeats", "2", "--resume"), env=gym_env)
    assert result.returncode == 0, result.stderr
    assert out.read_bytes().startswith(first)  # appended, never rewritten
    assert keys(read_jsonl(out)) == [(t, r) for t in range(3) for r in range(2)]
    assert len(fake_openai.requests) == 2 * 6
    record = json.loads((tmp_path / "out.run.json").read_text())
    assert record["limit"] == 3 and record["num_repeats"] == 2 and record["invocations"] == 2
    metrics = json.loads((tmp_path / "out.metrics.json").read_text())
    assert metrics["rollouts"] == 6 and metrics["resumed"] == 2 and metrics["pass@2"] == 1.0
    result = run_gym(*collect_args(tasks, out, "--limit", "3", "--resume"), env=gym_env)
    assert result.returncode == 1 and "with --num-repeats 1: the run has 2 per task" in result.stderr
    # a finished run resumed again does nothing and says so in its counts
    result = run_gym(*collect_args(tasks, out, "--limit", "3", "--num-repeats", "2", "--resume"), env=gym_env)
    assert result.returncode == 0 and len(fake_openai.requests) == 12
    metrics = json.loads((tmp_path / "out.metrics.json").read_text())
    assert metrics["rollouts"] == metrics["resumed"] == 6 and metrics["invocation"] == 3


def test_the_input_is_never_written_over(tmp_path, gym_env):
    """``--overwrite`` says the output may be replaced, not the tasks: an output that is the
    input file (or whose failures sidecar is) is refused before anything is written."""
    tasks = write_tasks(tmp_path / "tasks.jsonl")
    original = tasks.read_bytes()
    link = tmp_path / "link.jsonl"
    link.symlink_to(tasks)
    sidecar_named = tmp_path / "run.failures.jsonl"  # the failures sidecar of run.jsonl
    sidecar_named.write_bytes(original)
    for tasks_path, output, flag in ((tasks, tasks, "--overwrite"), (tasks, link, "--overwrite"),
                                     (tasks, tasks, "--resume"), (sidecar_named, tmp_path / "run.jsonl", "--overwrite")):
        result = run_gym(*collect_args(tasks_path, output, flag), env=gym_env)
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        assert f"is the input file {tasks_path}: writing there would destroy it" in result.stderr
        assert tasks_path.read_bytes() == original
    assert not (tmp_path / "run.jsonl").exists() and not (tmp_path / "tasks.run.json").exists()


def test_resume_names_an_edited_line_instead_of_crashing(tmp_path, gym_env):
    tasks, out = write_tasks(tmp_path / "tasks.jsonl"), tmp_path / "out.jsonl"
    args = collect_args(tasks, out, "--limit", "3")
    assert run_gym(*args, env=gym_env).returncode == 0
    lines = read_jsonl(out)
    lines[1]["reward"] = "1.0"  # hand-edited: a string where the trainer expects a number
    edited = "".join(json.dumps(line) + "\n" for line in lines)
    out.write_text(edited)
    result = run_gym(*args, "--resume", env=gym_env)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"{out}:2: field 'reward': expected a number or null, got '1.0'" in result.stderr
    assert out.read_text() == edited
