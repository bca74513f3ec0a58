"""Tasks that arrive through a pipe, ``/dev/stdin`` or a FIFO: real ``gym collect``
processes fed by a shell pipeline or another process. A stream can be read once, so it is
copied beside the output, and the run (and its ``--resume``) reads that copy."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path

from .conftest import GYM, read_jsonl, weather_tasks

ARGS = ["collect", "--agent", "weather", "--model", "replay", "-q"]


def offline_env() -> dict:
    return {"PATH": os.environ["PATH"], "PYTHONUNBUFFERED": "1"}


def gym(*args: str, stdin=None, input: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([GYM, *ARGS, *args], env=offline_env(), capture_output=True, text=True, timeout=120,
                          stdin=stdin, input=input)


def assert_scored(out: Path, tasks: list[dict]) -> None:
    lines = read_jsonl(out)
    assert sorted((l["task_index"], l["rollout_index"]) for l in lines) == [(i, 0) for i in range(len(tasks))]
    for line in lines:
        assert line["id"] == tasks[line["task_index"]]["id"] and line["reward"] is not None


def test_a_pipe_into_input_dash_is_spooled_and_every_task_runs(tmp_path):
    tasks = weather_tasks(tmp_path / "tasks.jsonl", 8)
    out = tmp_path / "out.jsonl"
    command = f"head -3 {shlex.quote(str(tasks))} | {shlex.quote(GYM)} " \
              + shlex.join([*ARGS, "--input", "-", "--output", str(out)])
    result = subprocess.run(command, shell=True, env=offline_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert_scored(out, read_jsonl(tasks)[:3])
    copy = tmp_path / "out.input.jsonl"
    assert copy.read_bytes() == b"".join(tasks.read_bytes().splitlines(keepends=True)[:3])
    assert f"reading standard input into {copy}" in result.stderr
    record = json.loads((tmp_path / "out.run.json").read_text())
    assert record["input"] == "<stdin>" and record["input_copy"] == "out.input.jsonl"
    metrics = json.loads((tmp_path / "out.metrics.json").read_text())
    assert metrics["rollouts"] == 3 and metrics["status"] == "completed"


def test_dev_stdin_is_spooled_too(tmp_path):
    tasks = weather_tasks(tmp_path / "tasks.jsonl", 3)
    out = tmp_path / "out.jsonl"
    result = gym("--input", "/dev/stdin", "--output", str(out), input=tasks.read_text())  # stdin is a pipe
    assert result.returncode == 0, result.stderr
    assert_scored(out, read_jsonl(tasks))
    assert (tmp_path / "out.input.jsonl").read_bytes() == tasks.read_bytes()


def test_a_fifo_written_by_another_process(tmp_path):
    tasks = weather_tasks(tmp_path / "tasks.jsonl", 4)
    fifo, out = tmp_path / "tasks.fifo", tmp_path / "out.jsonl"
    os.mkfifo(fifo)
    proc = subprocess.Popen([GYM, *ARGS, "--input", str(fifo), "--output", str(out)], env=offline_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    writer = subprocess.run(["sh", "-c", f"cat {shlex.quote(str(tasks))} > {shlex.quote(str(fifo))}"], timeout=60)
    assert writer.returncode == 0
    try:
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    assert_scored(out, read_jsonl(tasks))
    assert f"reading {fifo} (not a regular file) into {tmp_path / 'out.input.jsonl'}" in stderr
    assert json.loads((tmp_path / "out.run.json").read_text())["input"] == str(fifo)


def test_a_piped_run_resumes_from_its_copy_without_reading_stdin(tmp_path):
    tasks = weather_tasks(tmp_path / "tasks.jsonl", 5)
    out = tmp_path / "out.jsonl"
    result = gym("--input", "-", "--output", str(out), "--limit", "2", input=tasks.read_text())
    assert result.returncode == 0, result.stderr
    assert len(read_jsonl(out)) == 2
    # The same data cannot be piped again: whatever stdin holds now is not read.
    result = gym("--input", "-", "--output", str(out), "--resume", input="this is not the input\n")
    assert result.returncode == 0, result.stderr
    copy = tmp_path / "out.input.jsonl"
    assert f"resuming from {copy}, the copy of the input spooled when the run started" in result.stderr
    assert_scored(out, read_jsonl(tasks))
    assert copy.read_bytes() == tasks.read_bytes()
    # from a terminal-less shell (stdin /dev/null), and naming the copy itself, all the same
    for given in ("/dev/stdin", str(copy)):
        result = gym("--input", given, "--output", str(out), "--resume", "--num-repeats", "2",
                     stdin=subprocess.DEVNULL)
        assert result.returncode == 0, (given, result.stderr)
    lines = read_jsonl(out)
    assert sorted((l["task_index"], l["rollout_index"]) for l in lines) == [(t, r) for t in range(5) for r in range(2)]


def test_a_piped_run_whose_copy_is_gone_resumes_only_from_the_same_data(tmp_path):
    tasks = weather_tasks(tmp_path / "tasks.jsonl", 3)
    out, copy = tmp_path / "out.jsonl", tmp_path / "out.input.jsonl"
    assert gym("--input", "-", "--output", str(out), "--limit", "1", input=tasks.read_text()).returncode == 0
    copy.unlink()
    other = "".join(tasks.read_text().splitlines(keepends=True)[1:])  # valid tasks, not the same ones
    result = gym("--input", "-", "--output", str(out), "--resume", input=other)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"{copy}, the copy of the input spooled when the run started, is gone" in result.stderr
    assert "<stdin> is not the input the run started with" in result.stderr and len(read_jsonl(out)) == 1
    assert not copy.exists()  # the wrong data never passes for the run's input
    result = gym("--input", "-", "--output", str(out), "--resume", input=tasks.read_text())
    assert result.returncode == 0, result.stderr
    assert_scored(out, read_jsonl(tasks))
