"""Two runs on one output: real ``gym collect`` (and ``gym verify``) processes started
against the same output while one is held mid-run by the fake model server's gate. The
second refuses at once, names the holder and touches nothing; a lock left by ``kill -9``
never blocks a resume."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path

from .conftest import run_gym
from .test_collect_faults import CITIES, collect_args, keys, write_tasks
from .test_resume import start, wait_for

ALL = [(t, 0) for t in range(len(CITIES))]


def wait_for_exit(procs: list[subprocess.Popen], timeout: float = 60.0) -> subprocess.Popen:
    """The first of ``procs`` to exit (bounded, only to stop a hang)."""
    deadline = time.monotonic() + timeout
    while True:
        for proc in procs:
            if proc.poll() is not None:
                return proc
        assert time.monotonic() < deadline, "no process exited"
        time.sleep(0.01)


def snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    """Every file's bytes and modification time: what a refused run must leave as it was."""
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(directory.iterdir()) if p.is_file()}


def assert_refused_by(result_stderr: str, returncode: int, holder: subprocess.Popen, output: Path) -> None:
    assert returncode == 1, result_stderr
    assert "Traceback" not in result_stderr
    assert f"{output} is in use by another gym run: pid {holder.pid} on {socket.gethostname()}" in result_stderr
    assert "gym collect" in result_stderr  # the holder's command line, so the user knows which run


def assert_intact(out: Path, expected: list[tuple[int, int]]) -> None:
    raw = out.read_bytes()
    assert raw.endswith(b"\n")
    lines = [json.loads(line) for line in raw.decode().splitlines()]  # every line parses
    assert keys(lines) == expected  # each rollout once: no duplicates, none missing
    assert all(line["reward"] == 1.0 for line in lines)


def test_two_fresh_runs_started_together_one_refuses_naming_the_other(tmp_path, gym_env, fake_openai):
    fake_openai.gate.clear()  # whichever run gets the output is held at its first model call
    tasks, out = write_tasks(tmp_path / "tasks.jsonl"), tmp_path / "out.jsonl"
    args = collect_args(tasks, out, "--parallel", "2")
    procs = [start(args, gym_env), start(args, gym_env)]
    try:
        loser = wait_for_exit(procs)
        winner = procs[1 - procs.index(loser)]
        _, stderr = loser.communicate(timeout=10)
        assert winner.poll() is None  # refused while the other still runs (held by the gate)
        assert_refused_by(stderr, loser.returncode, winner, out)
    finally:
        fake_openai.gate.set()
    _, stderr = winner.communicate(timeout=60)
    assert winner.returncode == 0, stderr
    assert_intact(out, ALL)
    assert not (tmp_path / "out.lock").exists()  # a run that ends removes its lock


def test_a_second_run_touches_nothing_while_the_first_holds_the_output(tmp_path, gym_env, fake_openai):
    # a rollouts file for `gym verify`, made before the held run starts
    rescorable = tmp_path / "earlier.jsonl"
    assert run_gym(*collect_args(write_tasks(tmp_path / "earlier_tasks.jsonl", CITIES[:2]), rescorable),
                   env=gym_env).returncode == 0
    made = len(fake_openai.requests)
    fake_openai.gate.clear()
    tasks, out = write_tasks(tmp_path / "tasks.jsonl"), tmp_path / "out.jsonl"
    args = collect_args(tasks, out, "--parallel", "2")
    first = start(args, gym_env)
    try:
        wait_for(lambda: len(fake_openai.requests) > made, first)
        assert first.poll() is None
        lock = tmp_path / "out.lock"
        holder = json.loads(lock.read_text().splitlines()[0])
        assert holder["pid"] == first.pid and holder["host"] == socket.gethostname()
        before = snapshot(tmp_path)
        for extra in ([], ["--overwrite"], ["--resume"]):
            result = run_gym(*args, *extra, env=gym_env, timeout=60)
            assert_refused_by(result.stderr, result.returncode, first, out)
            assert snapshot(tmp_path) == before, extra  # nothing truncated, no run record rewritten
        # gym verify writing over the held output is refused the same way
        result = run_gym("verify", str(rescorable), "--output", str(out), "--overwrite", env=gym_env, timeout=60)
        assert_refused_by(result.stderr, result.returncode, first, out)
        assert snapshot(tmp_path) == before
    finally:
        fake_openai.gate.set()
    _, stderr = first.communicate(timeout=60)
    assert first.returncode == 0, stderr
    assert_intact(out, ALL)


def test_two_resumes_at_once_one_refuses_and_nothing_is_written_twice(tmp_path, gym_env, fake_openai):
    tasks, out = write_tasks(tmp_path / "tasks.jsonl"), tmp_path / "out.jsonl"
    assert run_gym(*collect_args(tasks, out, "--limit", "3"), env=gym_env).returncode == 0
    fake_openai.gate.clear()
    args = collect_args(tasks, out, "--parallel", "2", "--resume")  # extends the run to every task
    procs = [start(args, gym_env), start(args, gym_env)]
    try:
        loser = wait_for_exit(procs)
        winner = procs[1 - procs.index(loser)]
        _, stderr = loser.communicate(timeout=10)
        assert winner.poll() is None
        assert_refused_by(stderr, loser.returncode, winner, out)
    finally:
        fake_openai.gate.set()
    _, stderr = winner.communicate(timeout=60)
    assert winner.returncode == 0, stderr
    assert_intact(out, ALL)


def test_the_lock_of_a_killed_run_never_blocks_its_resume(tmp_path, gym_env, fake_openai):
    fake_openai.gate.clear()
    tasks, out = write_tasks(tmp_path / "tasks.jsonl"), tmp_path / "out.jsonl"
    args = collect_args(tasks, out, "--parallel", "2")
    proc = start(args, gym_env)
    try:
        wait_for(lambda: len(fake_openai.requests) >= 1, proc)
        proc.kill()  # SIGKILL: the lock file stays, the kernel drops the lock
        proc.communicate(timeout=20)
    finally:
        fake_openai.gate.set()
    lock = tmp_path / "out.lock"
    assert lock.exists() and json.loads(lock.read_text().splitlines()[0])["pid"] == proc.pid
    result = run_gym(*args, "--resume", env=gym_env)
    assert result.returncode == 0, result.stderr
    assert "in use" not in result.stderr
    assert_intact(out, ALL)
    assert not lock.exists()
    # a fresh --overwrite after a kill -9 is not blocked either
    proc = start(args + ["--overwrite"], gym_env)
    wait_for(lock.exists, proc)
    proc.kill()
    proc.communicate(timeout=20)
    result = run_gym(*args, "--overwrite", env=gym_env)
    assert result.returncode == 0, result.stderr
    assert_intact(out, ALL)


def test_the_lock_file_never_holds_a_secret_from_the_command_line():
    from gymcore.runlock import masked_command

    argv = ["gym", "collect", "--token", "s3cret", "--api-key=k3y", "+responses_create_params.api_key=sk-1",
            "--set", "responses_create_params.metadata.password=pw", "--model", "openai:m", "-o", "out.jsonl"]
    command = masked_command(argv)
    for secret in ("s3cret", "k3y", "sk-1", "pw"):
        assert secret not in command.replace("password", "")
    assert command.startswith("gym collect --token '***'") and "--model openai:m -o out.jsonl" in command
