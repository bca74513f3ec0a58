"""Plain ``def`` hooks that block: ``gym collect`` and ``gym serve`` as real processes with a
test environment (``tests/blocking_hooks.py``, loaded through an entry point) whose
``call_tool`` sleeps or never returns. The other rollouts go on, ``--timeout`` and Ctrl-C
still work, and the process exits when the run is done."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import GYM, ROOT, read_jsonl
from .test_resume import count_lines, wait_for


@pytest.fixture
def blocking_env(gym_env, tmp_path):
    """A ``gym`` environment where the ``blocking`` test plugin is installed (an entry point
    on PYTHONPATH) and only it and the openai backend load."""
    site = tmp_path / "site"
    dist = site / "gym_blocking_test-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: gym-blocking-test\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[gym.resources]\nblocking = tests.blocking_hooks\n"
                                           "loopblocker = tests.blocking_hooks:LOOP_BLOCKER\n")
    return dict(gym_env, PYTHONPATH=f"{site}:{ROOT}", GYM_LOAD_PLUGINS="blocking,loopblocker,openai",
                BLOCKING_HOOKS_LOG=str(tmp_path / "hooks.log"))


def write_tasks(path: Path, blocks: list) -> Path:
    """One task per entry of ``blocks``: how its get_weather call blocks (None: not at all)."""
    path.write_text("".join(json.dumps({"responses_create_params": {"input": "weather in Paris?"},
                                        "verifier_metadata": {"block": block}, "id": f"t{i}"}) + "\n"
                            for i, block in enumerate(blocks)))
    return path


def args(tasks: Path, out: Path, *extra: str, agent: str = "blocking") -> list[str]:
    return [GYM, "collect", "--agent", agent, "--model", "openai:m", "--input", str(tasks),
            "--output", str(out), "-q", *extra]


def hook_log(tmp_path: Path) -> list[str]:
    path = tmp_path / "hooks.log"
    return path.read_text().splitlines() if path.exists() else []


def started(tmp_path: Path) -> int:
    return sum(line.startswith("start") for line in hook_log(tmp_path))


def torn_down(tmp_path: Path) -> list[str]:
    return sorted(line.split()[1] for line in hook_log(tmp_path) if line.startswith("teardown"))


def test_timeout_fails_rollouts_stuck_in_threads_and_the_others_are_written(tmp_path, blocking_env):
    """8 tool calls that never return (more than the 6 threads asyncio's default pool has on
    2 cores) among 40: the other 32 are written, the 8 fail as ``timeout``, every session is
    torn down, and the process exits though 8 threads are still stuck."""
    blocks = ["forever" if i % 5 == 0 else None for i in range(40)]
    tasks, out = write_tasks(tmp_path / "tasks.jsonl", blocks), tmp_path / "out.jsonl"
    result = subprocess.run(args(tasks, out, "--parallel", "16", "--timeout", "3", "--max-retries", "0"),
                            env=blocking_env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    lines, failed = read_jsonl(out), read_jsonl(tmp_path / "out.failures.jsonl")
    assert sorted(line["task_index"] for line in lines) == [i for i, b in enumerate(blocks) if b is None]
    assert sorted(f["task_index"] for f in failed) == [i for i, b in enumerate(blocks) if b]
    assert {f["class"] for f in failed} == {"timeout"}
    assert torn_down(tmp_path) == sorted(f"t{i}" for i in range(40))  # stuck ones too
    metrics = json.loads((tmp_path / "out.metrics.json").read_text())
    assert metrics["hook_calls_stuck"] == 8 and "blocking.call_tool" in metrics["hook_calls_stuck_note"]
    assert "hook_calls_stuck: 8" in result.stdout and "Traceback" not in result.stderr


def test_a_run_whose_only_stuck_thread_never_returns_still_exits(tmp_path, blocking_env):
    tasks, out = write_tasks(tmp_path / "tasks.jsonl", [None, "forever", None]), tmp_path / "out.jsonl"
    result = subprocess.run(args(tasks, out, "--timeout", "1", "--max-retries", "0"), env=blocking_env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stderr  # the run's own status: one rollout failed
    assert len(read_jsonl(out)) == 2
    assert [f["class"] for f in read_jsonl(tmp_path / "out.failures.jsonl")] == ["timeout"]
    metrics = json.loads((tmp_path / "out.metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["hook_calls_stuck"] == 1
    assert "hook_calls_stuck: 1" in result.stdout


def test_ctrl_c_while_threads_are_stuck_exits_130_after_the_grace(tmp_path, blocking_env):
    """No --timeout: 8 rollouts hang in their tool call; the other 32 are written while they
    hang; Ctrl-C ends the run after the grace period and every session is torn down."""
    blocks = ["forever" if i % 5 == 0 else None for i in range(40)]
    tasks, out = write_tasks(tmp_path / "tasks.jsonl", blocks), tmp_path / "out.jsonl"
    proc = subprocess.Popen(args(tasks, out, "--parallel", "16", "--grace", "0.5"), env=blocking_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: count_lines(out) >= 32, proc, timeout=60)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    assert "cancelling 8 rollouts" in stderr and "Traceback" not in stderr
    assert len(read_jsonl(out)) == 32 and not (tmp_path / "out.failures.jsonl").exists()
    assert torn_down(tmp_path) == sorted(f"t{i}" for i in range(40))
    assert "hook_calls_stuck: 8" in stdout


def test_a_blocking_tool_runs_as_many_at_once_as_rollouts_in_flight(tmp_path, blocking_env):
    """A tool that blocks 2 s, 32 rollouts in flight: the plugin sees far more than the 6
    calls at once asyncio's default thread pool allows on 2 cores."""
    tasks, out = write_tasks(tmp_path / "tasks.jsonl", [2.0] * 32), tmp_path / "out.jsonl"
    result = subprocess.run(args(tasks, out, "--parallel", "32"), env=blocking_env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert len(read_jsonl(out)) == 32
    concurrency = [int(line.split()[1]) for line in hook_log(tmp_path) if line.startswith("start")]
    assert len(concurrency) == 32 and max(concurrency) > 6, concurrency


async def test_gym_serve_answers_beside_tool_calls_stuck_in_threads_and_still_stops(blocking_env):
    """A runner with 8 tool calls stuck (more than asyncio's 6 default threads) still answers
    another session's tool call, and SIGTERM still stops it after --shutdown-grace."""
    import asyncio

    import aiohttp

    from .test_serve import get_json, gym_serve

    def task(block):
        return {"responses_create_params": {"input": "weather in Paris?"}, "verifier_metadata": {"block": block}}

    with gym_serve("--agent", "blocking", "--model", "openai:m", "--shutdown-grace", "0.5",
                   env=blocking_env) as (proc, url):
        async with aiohttp.ClientSession() as http:
            sessions = url + "/agents/blocking/sessions"
            stuck = []
            for _ in range(8):
                status, opened = await get_json(http, "POST", sessions, task("forever"))
                assert status == 201
                stuck.append(asyncio.create_task(get_json(
                    http, "POST", f"{sessions}/{opened['session_id']}/tools/get_weather", {"arguments": {}})))
            status, opened = await get_json(http, "POST", sessions, task(None))
            assert status == 201
            status, answer = await asyncio.wait_for(get_json(
                http, "POST", f"{sessions}/{opened['session_id']}/tools/get_weather",
                {"arguments": {"city": "Oslo"}}), 60)
            assert status == 200 and answer["ok"] and "Oslo" in answer["output"]
            assert not any(call.done() for call in stuck)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(60) == 0
            for call in stuck:  # cut by the runner's shutdown, never answered
                with pytest.raises(aiohttp.ClientError):
                    await call
        assert "gym serve: stopped" in proc.stderr.read()


# --- signals: `gym collect` exits 130 whatever phase it is in -------------------------------


def start(argv: list[str], env: dict, **kwargs) -> subprocess.Popen:
    kwargs.setdefault("stdout", subprocess.PIPE)
    return subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True, **kwargs)


def wait_for_file(path: Path, proc: subprocess.Popen) -> None:
    wait_for(path.exists, proc, timeout=60)
    assert proc.poll() is None, proc.communicate()


def finish(proc: subprocess.Popen) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=25)  # the grace is 30 s: 130 before it means "at once"
    finally:
        proc.kill()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
def test_a_signal_while_plugins_load_exits_130(tmp_path, blocking_env, sig):
    mark = tmp_path / "importing"
    tasks, out = write_tasks(tmp_path / "tasks.jsonl", [None]), tmp_path / "out.jsonl"
    proc = start(args(tasks, out), dict(blocking_env, BLOCKING_HOOKS_IMPORT_MARK=str(mark)))
    wait_for_file(mark, proc)
    proc.send_signal(sig)
    _, stderr = finish(proc)
    assert proc.returncode == 130, stderr
    assert f"{sig.name}: stopped before the run started" in stderr
    assert "Traceback" not in stderr and "Aborted!" not in stderr and not out.exists()


def test_a_signal_while_the_environment_is_built_stops_before_any_rollout(tmp_path, blocking_env):
    """In the event loop, before the first rollout (a slow ``list_tools``): the first SIGINT
    lets start-up finish and runs nothing; exit 130, an empty output to resume."""
    mark = tmp_path / "listing"
    tasks, out = write_tasks(tmp_path / "tasks.jsonl", [None] * 4), tmp_path / "out.jsonl"
    proc = start(args(tasks, out), dict(blocking_env, BLOCKING_HOOKS_LIST_TOOLS_MARK=str(mark),
                                        BLOCKING_HOOKS_LIST_TOOLS_SLEEP="3"))
    wait_for_file(mark, proc)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = finish(proc)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "Aborted!" not in stderr
    assert read_jsonl(out) == [] and started(tmp_path) == 0
    assert json.loads((tmp_path / "out.metrics.json").read_text())["status"] == "interrupted"
    assert "resume with: gym collect" in stderr


@pytest.mark.parametrize("second", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
def test_two_signals_while_the_environment_is_built_exit_130_at_once(tmp_path, blocking_env, second):
    mark = tmp_path / "listing"
    tasks, out = write_tasks(tmp_path / "tasks.jsonl", [None]), tmp_path / "out.jsonl"
    proc = start(args(tasks, out), dict(blocking_env, BLOCKING_HOOKS_LIST_TOOLS_MARK=str(mark)))
    wait_for_file(mark, proc)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.2)
    proc.send_signal(second)
    _, stderr = finish(proc)  # list_tools sleeps 30 s: it was cut
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "Aborted!" not in stderr


@pytest.mark.parametrize("second", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
def test_two_signals_while_threads_are_stuck_exit_130_at_once(tmp_path, blocking_env, second):
    tasks, out = write_tasks(tmp_path / "tasks.jsonl", ["forever"] * 8 + [None] * 8), tmp_path / "out.jsonl"
    proc = start(args(tasks, out, "--parallel", "16"), blocking_env)
    wait_for(lambda: count_lines(out) >= 8 and started(tmp_path) >= 16, proc, timeout=60)
    assert proc.poll() is None
    proc.send_signal(signal.SIGINT)
    time.sleep(0.2)
    proc.send_signal(second)
    stdout, stderr = finish(proc)
    assert proc.returncode == 130, stderr
    assert "again: cancelling 8 rollouts in flight now" in stderr and "Traceback" not in stderr
    assert len(read_jsonl(out)) == 8 and "hook_calls_stuck: 8" in stdout


@pytest.mark.parametrize("count", [1, 2])
def test_a_signal_while_the_summary_is_written_exits_130(tmp_path, blocking_env, count):
    """The summary goes to a pipe that is full, so ``gym`` is stuck writing it when the signal
    comes: one signal lets it finish the summary, a second stops it at once; 130 either way."""
    import os

    tasks, out = write_tasks(tmp_path / "tasks.jsonl", [None] * 3), tmp_path / "out.jsonl"
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    try:
        while True:
            os.write(write_end, b"x" * 4096)
    except BlockingIOError:
        pass
    os.set_blocking(write_end, True)
    proc = start(args(tasks, out), blocking_env, stdout=write_end)
    os.close(write_end)
    try:
        wait_for_file(tmp_path / "out.metrics.json", proc)
        for _ in range(count):
            proc.send_signal(signal.SIGINT)
            time.sleep(0.2)
        with os.fdopen(read_end, "rb") as pipe:
            stdout = pipe.read().lstrip(b"x").decode()  # until gym exits
        stderr = proc.stderr.read()
        proc.wait(25)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    assert len(read_jsonl(out)) == 3 and "Traceback" not in stderr and "Aborted!" not in stderr
    assert json.loads((tmp_path / "out.metrics.json").read_text())["status"] == "completed"
    if count == 1:
        assert "status: completed" in stdout and "rollouts_per_s" in stdout  # the whole summary
        assert "SIGINT came as the run ended: nothing was cut" in stderr


def test_signals_stop_a_run_whose_event_loop_is_blocked(tmp_path, blocking_env):
    """An ``async def`` tool that calls ``time.sleep``: the event loop itself is stuck, so the
    run's own signal handling never runs. The third Ctrl-C raises where the loop is stuck;
    the next tool call blocks the loop again, and the fourth ends the process: 130."""
    tasks, out = write_tasks(tmp_path / "tasks.jsonl", [None] * 2), tmp_path / "out.jsonl"
    proc = start(args(tasks, out, agent="loopblocker"), blocking_env)
    wait_for(lambda: started(tmp_path) >= 1, proc, timeout=60)
    sent = 0
    while proc.poll() is None and sent < 6:
        proc.send_signal(signal.SIGINT)
        sent += 1
        time.sleep(0.3)
    _, stderr = finish(proc)
    assert proc.returncode == 130, stderr
    assert sent >= 3 and "SIGINT again: stopping now" in stderr and "Traceback" not in stderr
    assert out.read_text() == ""


def test_gym_verify_with_a_verify_stuck_in_a_thread_exits_130_on_ctrl_c(tmp_path, blocking_env):
    tasks, out = write_tasks(tmp_path / "tasks.jsonl", [None] * 3), tmp_path / "out.jsonl"
    assert subprocess.run(args(tasks, out), env=blocking_env, capture_output=True, timeout=60).returncode == 0
    rescored = tmp_path / "rescored.jsonl"
    proc = start([GYM, "verify", str(out), "--output", str(rescored)],
                 dict(blocking_env, BLOCKING_HOOKS_VERIFY="forever"))
    wait_for(lambda: sum(line.startswith("verify") for line in hook_log(tmp_path)) >= 3 + 3, proc, timeout=60)
    assert proc.poll() is None
    proc.send_signal(signal.SIGINT)
    _, stderr = finish(proc)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "Aborted!" not in stderr
    assert rescored.read_text() == ""  # nothing was scored, nothing half-written


# --- the pool itself (in-process, real threads) ---------------------------------------------


async def test_a_given_up_call_frees_its_place_and_is_counted_stuck_until_it_returns():
    import asyncio
    import threading

    from gymcore.hook_threads import HookThreads

    pool = HookThreads(1)
    release, ran = threading.Event(), []
    stuck = asyncio.create_task(pool.run("env.call_tool", release.wait))
    queued = asyncio.create_task(pool.run("env.verify", lambda: ran.append("queued")))
    await asyncio.sleep(0.1)
    assert not stuck.done() and not queued.done()  # one place, taken
    queued.cancel()  # given up while waiting: never runs
    stuck.cancel()  # given up while running: its place is free at once
    assert await pool.run("env.teardown_session", lambda: "torn down") == "torn down"
    assert pool.stuck() == {"env.call_tool": 1}
    release.set()
    for _ in range(500):  # bounded: until the released thread has returned
        if not pool.stuck():
            break
        await asyncio.sleep(0.01)
    assert pool.stuck() == {} and ran == []
    with pytest.raises(ZeroDivisionError):  # a hook's exception reaches its caller
        await pool.run("env.verify", lambda: 1 / 0)


async def test_gym_serve_shows_the_def_hook_calls_left_stuck_by_clients_that_hung_up(blocking_env, tmp_path):
    """The collector's summary reports stuck calls of its own process only; a runner's are
    in its ``GET /``, per agent, so whoever runs ``gym serve`` can see threads it will never get back."""
    import asyncio

    import aiohttp

    from .test_serve import get_json, gym_serve

    with gym_serve("--agent", "blocking", "--model", "openai:m", "--shutdown-grace", "0.5",
                   env=blocking_env) as (_proc, url):
        async with aiohttp.ClientSession() as http:
            _, index = await get_json(http, "GET", url + "/")
            assert index["agents"][0]["hook_calls_stuck"] == 0
            sessions = url + "/agents/blocking/sessions"
            status, opened = await get_json(http, "POST", sessions, {
                "responses_create_params": {"input": "weather in Paris?"}, "verifier_metadata": {"block": "forever"}})
            assert status == 201
            call = asyncio.create_task(get_json(
                http, "POST", f"{sessions}/{opened['session_id']}/tools/get_weather", {"arguments": {}}))
            log = tmp_path / "hooks.log"
            for _ in range(600):  # until the tool call runs in its thread
                if log.exists() and "start 1" in log.read_text().splitlines():
                    break
                await asyncio.sleep(0.1)
            call.cancel()  # the client hangs up: the runner cancels the request, the thread runs on
            for _ in range(600):
                _, index = await get_json(http, "GET", url + "/")
                if index["agents"][0]["hook_calls_stuck"]:
                    break
                await asyncio.sleep(0.1)
            assert index["agents"][0]["hook_calls_stuck"] == 1
