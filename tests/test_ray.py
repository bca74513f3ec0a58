"""``gym collect --executor ray``: real runners as Ray actors on one local Ray instance,
shared by the whole module (started once: Ray's start-up is the slow part), driven by the
real ``gym`` CLI as a subprocess that joins it with ``--ray-address``."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import GYM, SECRET_KEY, read_jsonl, run_gym, weather_tasks
from .fake_openai import FakeOpenAI

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'gymcore[ray]'")

pytestmark = pytest.mark.timeout(300)

RUNNER_LINE = re.compile(r"^gym: ray runner (\d+)/(\d+) on node (\S+) \(id \w+\): (\d+) rollouts$", re.M)


@pytest.fixture(scope="module")
def fake_model():
    """One fake OpenAI server for the module; the runner actors reach it through the
    environment they inherit from the Ray instance started below."""
    server = FakeOpenAI(keep_requests=False)
    server.start_in_thread()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def ray_address(fake_model):
    """A local Ray instance (2 CPUs, a small object store, no dashboard) for the module."""
    saved = {k: os.environ.get(k) for k in ("OPENAI_BASE_URL", "OPENAI_API_KEY")}
    os.environ.update(OPENAI_BASE_URL=fake_model.url, OPENAI_API_KEY=SECRET_KEY)  # inherited by Ray's workers
    try:
        ray.init(address="local", num_cpus=2, object_store_memory=80 * 1024 * 1024, include_dashboard=False,
                 logging_level=logging.WARNING, namespace="gym-tests")
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def gym_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "GYM_", "RAY_ADDRESS"))}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def runner_actors() -> list[str]:
    """Names of the live gym runner actors in the cluster."""
    return sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                  if a["namespace"] == "gym" and a["name"].startswith("gym-runner-"))


def live_placement_groups() -> list[dict]:
    return [g for g in ray.util.placement_group_table().values() if g["state"] != "REMOVED"]


def assert_nothing_left() -> None:
    """No runner actor, no placement group, no runner process survives the run."""
    deadline = time.monotonic() + 30  # actor death is asynchronous: bounded wait, not a timing assertion
    while time.monotonic() < deadline:
        procs = runner_processes()
        if not runner_actors() and not live_placement_groups() and not procs:
            return
        time.sleep(0.2)
    assert runner_actors() == [] and live_placement_groups() == [] and runner_processes() == []


def runner_processes() -> list[int]:
    """Processes whose title says they are a RunnerActor (Ray renames its workers so)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"ray::RunnerActor" in cmdline:
                pids.append(int(entry.name))
    return pids


def comparable(line: dict) -> dict:
    """A rollout without what legitimately differs between two runs (timing, response id)."""
    line = dict(line)
    line.pop("timing")
    line["response"] = {k: v for k, v in line["response"].items() if k != "id"}
    return line


def by_key(lines: list[dict]) -> list[dict]:
    return sorted(lines, key=lambda l: (l["task_index"], l["rollout_index"]))


@pytest.fixture(scope="module")
def replay_runs(ray_address, tmp_path_factory):
    """The same replay collection embedded and through 2 Ray runners (shared by two tests)."""
    tmp = tmp_path_factory.mktemp("replay")
    embedded, through_ray = tmp / "embedded.jsonl", tmp / "ray.jsonl"
    common = ["--agent", "weather", "--model", "replay", "-n", "2", "-q"]
    r1 = run_gym("collect", *common, "-o", str(embedded), env=gym_env())
    r2 = run_gym("collect", *common, "-o", str(through_ray), "--executor", "ray", "--ray-address", ray_address,
                 "--workers", "2", env=gym_env(), timeout=240)
    assert r1.returncode == 0, r1.stderr
    assert r2.returncode == 0, r2.stderr
    return embedded, through_ray, r2


def test_rollouts_through_ray_equal_the_embedded_run(replay_runs):
    embedded, through_ray, _ = replay_runs
    a, b = by_key(read_jsonl(embedded)), by_key(read_jsonl(through_ray))
    assert len(a) == len(b) > 0
    assert [comparable(x) for x in a] == [comparable(x) for x in b]
    assert sorted({l["reward"] for l in b}) == [0.0, 0.5, 1.0]  # real verify on the runners
    ma = json.loads(embedded.with_suffix(".metrics.json").read_text())
    mb = json.loads(through_ray.with_suffix(".metrics.json").read_text())
    for field in ("mean_reward", "pass@2", "rollouts", "tool_calls", "model", "agent", "note"):
        assert ma[field] == mb[field], field


def test_both_runners_are_used_and_released(replay_runs):
    _, through_ray, result = replay_runs
    counts = {int(m[0]): int(m[3]) for m in RUNNER_LINE.findall(result.stderr)}
    assert sorted(counts) == [1, 2], result.stderr
    assert all(n > 0 for n in counts.values()), counts
    assert sum(counts.values()) == len(read_jsonl(through_ray))
    assert_nothing_left()


@pytest.mark.parametrize("ending", ["ctrl-c", "max-failures"])
def test_a_killed_runner_loses_nothing_after_resume(ray_address, fake_model, tmp_path, ending):
    """One runner actor is killed mid-run (its rollouts in flight fail as server:runner), then
    the run ends by Ctrl-C or by --max-failures 0; everything is released either way, and
    --resume finishes every rollout exactly once."""
    fake_model.latency = 0.15
    tasks = weather_tasks(tmp_path / "tasks.jsonl", 40)
    out = tmp_path / "out.jsonl"
    argv = [GYM, "collect", "--agent", "weather", "--model", "openai:gpt-test", "-i", str(tasks), "-o", str(out),
            "--parallel", "4", "--grace", "10", "-q", "--executor", "ray", "--ray-address", ray_address,
            "--workers", "2"]
    ends = ["--max-failures", "0"] if ending == "max-failures" else []
    proc = subprocess.Popen(argv + ends, env=gym_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            if out.exists() and len(out.read_bytes().splitlines()) >= 4:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()
        names = runner_actors()
        assert len(names) == 2
        ray.kill(ray.get_actor(names[0], namespace="gym"))  # a runner dies mid-run
        while time.monotonic() < deadline and proc.poll() is None:
            failures = out.with_suffix(".failures.jsonl")
            if failures.exists() and failures.read_bytes().strip():
                break
            time.sleep(0.05)
        if ending == "ctrl-c":
            proc.send_signal(signal.SIGINT)  # the rollouts in flight finish, the rest are left
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    if ending == "ctrl-c":
        assert proc.returncode == 130 and "interrupted by SIGINT" in stderr, stderr
    else:
        assert proc.returncode == 1 and "stopped early" in stderr and "--max-failures" in stderr, stderr
    failed = read_jsonl(out.with_suffix(".failures.jsonl"))
    assert failed and {(f["error"]["type"], f["error"]["kind"]) for f in failed} == {("server", "runner")}, failed
    first = read_jsonl(out)
    assert 4 <= len(first) < 40
    assert_nothing_left()

    fake_model.latency = 0.0
    resumed = subprocess.run([*argv, "--resume"], env=gym_env(), capture_output=True, text=True, timeout=240)
    assert resumed.returncode == 0, resumed.stderr
    lines = read_jsonl(out)
    assert lines[:len(first)] == first  # nothing written is touched
    assert sorted(l["task_index"] for l in lines) == list(range(40))  # every rollout exactly once
    assert all(l["reward"] == 1.0 for l in lines)
    assert_nothing_left()


def test_without_ray_the_option_says_how_to_install_it(tmp_path):
    """A sitecustomize that hides Ray, as on a machine without it (no cluster needed)."""
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.modules['ray'] = None  # as if not installed\n")
    env = {**gym_env(), "PYTHONPATH": str(tmp_path)}
    result = run_gym("collect", "--agent", "weather", "--model", "replay", "-o", str(tmp_path / "o.jsonl"),
                     "--executor", "ray", env=env)
    assert result.returncode == 2
    assert "pip install 'gymcore[ray]'" in result.stderr
    assert not (tmp_path / "o.jsonl").exists()


@pytest.mark.parametrize("args, expected", [
    (["--workers", "2"], "--workers only apply with --executor ray"),
    (["--executor", "ray", "--server", "http://127.0.0.1:9"], "--executor ray starts its own runners: drop --server"),
])
def test_ray_options_are_checked_before_anything_starts(tmp_path, args, expected):
    result = run_gym("collect", "--agent", "weather", "--model", "replay", "-o", str(tmp_path / "o.jsonl"), *args,
                     env=gym_env())
    assert result.returncode == 2 and expected in result.stderr, result.stderr


class Extra:
    """A resource plugin installed on one "node" only."""

    from gymcore import hookimpl

    @hookimpl
    def list_tools(self):
        return [{"type": "function", "name": "extra_tool", "description": "only here", "parameters": {
            "type": "object", "properties": {}}}]


async def test_a_node_with_other_plugins_is_one_error_naming_it(plugins):
    """Two real runners, the second with one more plugin: the check at start names its node."""
    from gymcore.plugins import load_plugins
    from gymcore.ray_runners import RayOptions, RayRunner
    from gymcore.server import create_app, serving

    other = load_plugins()
    other.register(Extra(), "extra")
    runner = RayRunner(ray, RayOptions(), started_ray=False)
    async with serving(create_app(plugins, ["weather"], "replay", runner.token)) as url_a, \
            serving(create_app(other, ["weather"], "replay", runner.token)) as url_b:
        runner.infos = [{"url": url_a, "node_ip": "10.0.0.1", "node_id": "a" * 40},
                        {"url": url_b, "node_ip": "10.0.0.2", "node_id": "b" * 40}]
        with pytest.raises(Exception, match=r"the runner on node 10\.0\.0\.2 \(id bbbbbbbbbbbb\) differs from the one "
                                            r"on node 10\.0\.0\.1 .*: plugin extra there only"):
            await runner._check_alike("weather")
        runner.infos[1]["url"] = url_a  # the same inventory: no error
        await runner._check_alike("weather")


def test_ray_runners_spread_model_calls_over_model_url_replicas(ray_address, tmp_path):
    """--model-url reaches the runners on the nodes: each rollout's calls go to one replica."""
    from .test_model_replicas import tagged_tasks, tasks_by_replica

    replicas = [FakeOpenAI() for _ in range(2)]
    for server in replicas:
        server.start_in_thread()
    try:
        result = run_gym("collect", "--agent", "weather", "--model", "openai:gpt-test", "-q", "--parallel", "8",
                         "-i", str(tagged_tasks(tmp_path / "tasks.jsonl", 8)), "-o", str(tmp_path / "o.jsonl"),
                         "--executor", "ray", "--ray-address", ray_address, "--workers", "2",
                         *[a for s in replicas for a in ("--model-url", s.url)], env=gym_env(), timeout=240)
        assert result.returncode == 0, result.stderr
        seen = tasks_by_replica(replicas)
    finally:
        for server in replicas:
            server.stop()
    assert seen[0] and seen[1] and not seen[0] & seen[1] and seen[0] | seen[1] == set(range(8)), seen
    assert_nothing_left()


def test_the_loop_settings_reach_the_ray_runners(ray_address, tmp_path):
    """--return-tokens, --model-timeout and --judge-model are the runners' to apply, as
    `gym serve` takes them: a replay model has no token ids, so every rollout must fail as
    model:no_tokens on the runners, never be scored."""
    out = tmp_path / "o.jsonl"
    result = run_gym("collect", "--agent", "weather", "--model", "replay", "-q", "--limit", "2", "-o", str(out),
                     "--return-tokens", "--model-timeout", "30", "--executor", "ray", "--ray-address", ray_address,
                     "--workers", "1", env=gym_env(), timeout=240)
    assert result.returncode == 1, result.stderr
    failures = read_jsonl(tmp_path / "o.failures.jsonl")
    assert {f["class"] for f in failures} == {"model:no_tokens"} and len(failures) == 2
    assert read_jsonl(out) == []
    assert_nothing_left()


def test_a_run_that_fails_while_starting_releases_everything_and_writes_nothing(ray_address, tmp_path):
    """An error while the runners start (an agent no node has) is one line naming the node.
    (Errors after the start are released by the same ``finally`` as Ctrl-C and --max-failures.)"""
    out = tmp_path / "o.jsonl"
    result = run_gym("collect", "--agent", "no-such-env", "--model", "replay", "-o", str(out), "-q",
                     "--executor", "ray", "--ray-address", ray_address, "--workers", "2", env=gym_env(), timeout=240)
    assert result.returncode == 1
    assert re.search(r"^Error: the runner on node \S+ \(id \w+\) cannot start: .*no-such-env", result.stderr, re.M), \
        result.stderr
    assert not out.exists()
    assert_nothing_left()
