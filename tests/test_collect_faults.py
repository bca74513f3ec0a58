"""Fault injection: ``gym collect`` (a real subprocess) against a fake model server that
answers 429/500/503, drops connections, hangs and sends malformed JSON on schedule; and
resource plugins that raise. Failures land in the failures sidecar, never in the output."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest

from gymcore import hookimpl
from gymcore.collector import CollectConfig, collect
from gymcore.retry import RetryPolicy
from gymcore.agent import AgentConfig

from .fake_openai import FakeOpenAI
from .conftest import GYM, SECRET_KEY, open_file_limit, read_jsonl, run_gym, weather_tasks

CITIES = ["Paris", "London", "Oslo", "Tokyo", "Denver", "Madrid", "Lisbon", "Berlin", "Sydney", "Toronto"]


def write_tasks(path: Path, cities: list[str] = CITIES) -> Path:
    path.write_text("".join(json.dumps({"responses_create_params": {"input": f"weather in {city}?"},
                                        "verifier_metadata": {"expected_city": city}, "id": f"t-{city}"}) + "\n"
                            for city in cities))
    return path


def collect_args(tasks: Path, out: Path, *extra: str) -> list[str]:
    return ["collect", "--agent", "weather", "--model", "openai:m", "--input", str(tasks), "--output", str(out),
            "-q", *extra]


def keys(lines: list[dict]) -> list[tuple[int, int]]:
    return sorted((line["task_index"], line["rollout_index"]) for line in lines)


def test_scheduled_faults_retries_failures_and_resume(tmp_path, gym_env, fake_openai):
    tasks, out = write_tasks(tmp_path / "tasks.jsonl", CITIES[:6]), tmp_path / "out.jsonl"
    failures = tmp_path / "out.failures.jsonl"
    # The reset comes first, so it is some rollout's first failure: its jittered wait stays
    # under 0.5 s; the other retryable faults name their (short) wait. So no rollout comes
    # near --timeout but the one whose request hangs.
    fake_openai.faults = [{"reset": True}, {"status": 429, "retry_after": 0.05}, {"status": 503, "retry_after_ms": 50},
                          {"malformed": True}, {"hang": 3}, {"status": 500, "retry_after": 0}]
    result = run_gym(*collect_args(tasks, out, "--parallel", "2", "--timeout", "1.5", "--max-retries", "3"),
                     env=gym_env)
    assert result.returncode == 1, result.stderr
    lines, failed = read_jsonl(out), read_jsonl(failures)
    # the retryable faults cost nothing; the malformed body and the hang each lost one rollout
    assert len(lines) == 4 and len(failed) == 2
    assert sorted(f["class"] for f in failed) == ["model:protocol", "timeout"]
    assert all(line["reward"] == 1.0 and line["error"] is None for line in lines)
    assert set(keys(lines)).isdisjoint(keys(failed)) and len(set(keys(lines + failed))) == 6
    for f in failed:  # a failure line carries its task row, so it can be read on its own
        assert f["id"] == f"t-{CITIES[f['task_index']]}" and f["invocation"] == 1
        assert f["responses_create_params"]["input"].startswith("weather in")
    timeout = next(f for f in failed if f["class"] == "timeout")
    assert "--timeout 1.5s" in timeout["message"] and timeout["attempts"] == 1
    # the malformed body may have answered a retry of an earlier fault; it was not retried itself
    protocol = next(f for f in failed if f["class"] == "model:protocol")
    assert 1 <= protocol["attempts"] <= 4 and "not JSON" in protocol["message"]
    metrics = json.loads((tmp_path / "out.metrics.json").read_text())
    assert metrics["failures"] == {"model:protocol": 1, "timeout": 1} and metrics["rollouts"] == 6
    assert metrics["scored"] == 4 and metrics["status"] == "completed"
    assert "2 rollouts failed (model:protocol=1, timeout=1)" in result.stderr
    assert "resume with: gym collect" in result.stderr and "Traceback" not in result.stderr

    # --resume retries exactly the failed ones
    before = len(fake_openai.requests)
    result = run_gym(*collect_args(tasks, out, "--parallel", "2", "--resume"), env=gym_env)
    assert result.returncode == 0, result.stderr
    assert "4 rollouts done, 2 failed before" in result.stderr
    lines = read_jsonl(out)
    assert keys(lines) == [(t, 0) for t in range(6)]
    assert len(fake_openai.requests) - before == 2 * 2  # two rollouts, two model calls each
    assert len(read_jsonl(failures)) == 2  # the failure history stays
    metrics = json.loads((tmp_path / "out.metrics.json").read_text())
    assert metrics["rollouts"] == 6 and metrics["resumed"] == 4 and metrics["failed"] == 0
    assert metrics["mean_reward"] == 1.0 and metrics["invocation"] == 2
    record = json.loads((tmp_path / "out.run.json").read_text())
    assert record["invocations"] == 2 and SECRET_KEY not in (tmp_path / "out.run.json").read_text()


def test_auth_failure_stops_the_run_at_once(tmp_path, gym_env, fake_openai):
    tasks, out = write_tasks(tmp_path / "tasks.jsonl"), tmp_path / "out.jsonl"
    fake_openai.rules = [{"match": "", "status": 401, "message": "Incorrect API key provided",
                          "type": "invalid_request_error"}]
    result = run_gym(*collect_args(tasks, out, "--parallel", "2", "--num-repeats", "3"), env=gym_env)
    assert result.returncode == 1
    assert "refused the credentials" in result.stderr and "Incorrect API key provided" in result.stderr
    assert len(fake_openai.requests) <= 2  # not 30 rollouts each failing on its own
    assert read_jsonl(out) == []
    failed = read_jsonl(tmp_path / "out.failures.jsonl")
    assert 1 <= len(failed) <= 2 and {f["class"] for f in failed} == {"model:auth"}
    metrics = json.loads((tmp_path / "out.metrics.json").read_text())
    assert metrics["status"] == "stopped"
    assert SECRET_KEY not in result.stderr + result.stdout


def test_a_hopeless_request_fails_at_once_and_others_go_on(tmp_path, gym_env, fake_openai):
    tasks, out = write_tasks(tmp_path / "tasks.jsonl", CITIES[:4]), tmp_path / "out.jsonl"
    fake_openai.rules = [{"match": "Oslo", "status": 400, "message": "context too long"}]
    result = run_gym(*collect_args(tasks, out, "--num-repeats", "2"), env=gym_env)
    assert result.returncode == 1
    failed = read_jsonl(tmp_path / "out.failures.jsonl")
    assert keys(failed) == [(2, 0), (2, 1)]
    assert all(f["class"] == "model:400" and f["attempts"] == 1 and "context too long" in f["message"]
               for f in failed)
    assert sum("Oslo" in json.dumps(r["body"]) for r in fake_openai.requests) == 2  # never retried
    assert keys(read_jsonl(out)) == [(t, r) for t in (0, 1, 3) for r in (0, 1)]


@pytest.mark.parametrize("limit", ["2", "0.1"])
def test_max_failures_stops_early(tmp_path, gym_env, fake_openai, limit):
    tasks, out = write_tasks(tmp_path / "tasks.jsonl"), tmp_path / "out.jsonl"
    fake_openai.rules = [{"match": "", "status": 500}]
    result = run_gym(*collect_args(tasks, out, "--num-repeats", "2", "--parallel", "1", "--max-retries", "0",
                                   "--max-failures", limit), env=gym_env)
    assert result.returncode == 1
    # 20 rollouts: both limits tolerate 2 failures and stop at the 3rd
    assert len(read_jsonl(tmp_path / "out.failures.jsonl")) == 3 and len(fake_openai.requests) == 3
    assert f"more than --max-failures {limit}" in result.stderr and "stopped early" in result.stderr


def test_bad_max_failures_is_a_usage_error(tmp_path, gym_env):
    tasks = write_tasks(tmp_path / "tasks.jsonl")
    result = run_gym(*collect_args(tasks, tmp_path / "o.jsonl", "--max-failures", "1.5"), env=gym_env)
    assert result.returncode == 2 and "--max-failures" in result.stderr and "1.5" in result.stderr


# --- resource plugins that raise (in-process: test plugins registered by name) ----------------


class StationDown:
    """get_weather always raises; verify checks that the model was told."""

    @hookimpl
    def list_tools(self):
        return [{"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]

    @hookimpl
    async def call_tool(self, name, arguments, session):
        raise ConnectionError("weather station down")

    @hookimpl
    def verify(self, session, response):
        outputs = [i["output"] for i in response["output"] if i["type"] == "function_call_output"]
        return {"reward": 0.0, "saw_tool_error": int(any("weather station down" in o for o in outputs))}


class VerifyBreaksOnOslo:
    """Composed with weather: verify raises for one task, abstains for the rest."""

    @hookimpl
    def list_tools(self):
        return []

    @hookimpl
    def verify(self, session, response):
        if session.task.verifier_metadata["expected_city"] == "Oslo":
            raise KeyError("grader table has no Oslo")
        return None


class SetupBreaks:
    @hookimpl
    def list_tools(self):
        return []

    @hookimpl
    async def setup_session(self, session):
        if "Tokyo" in session.task.responses_create_params["input"]:
            raise RuntimeError("sandbox quota exceeded")


def _collect_in_process(plugins, tmp_path, monkeypatch, fake, agent: str, cities: list[str]):
    monkeypatch.setenv("OPENAI_BASE_URL", fake.url)
    monkeypatch.setenv("OPENAI_API_KEY", SECRET_KEY)
    tasks, out = write_tasks(tmp_path / "tasks.jsonl", cities), tmp_path / "out.jsonl"
    config = CollectConfig(agent=agent, output=out, model="openai:m", input=tasks, num_repeats=2, progress=False,
                           agent_config=AgentConfig(retry=RetryPolicy(max_retries=0)))
    summary = asyncio.run(collect(plugins, config))
    failures = tmp_path / "out.failures.jsonl"
    return summary, read_jsonl(out), read_jsonl(failures) if failures.exists() else []


def test_a_raising_tool_is_an_error_output_the_rollout_goes_on(plugins, tmp_path, monkeypatch, fake_openai):
    plugins.register(StationDown(), name="station")
    summary, lines, failed = _collect_in_process(plugins, tmp_path, monkeypatch, fake_openai, "station",
                                                 ["Paris", "Oslo"])
    assert failed == [] and len(lines) == 4 and summary["failed"] == 0
    for line in lines:  # a scored rollout: the model read the error and answered
        assert line["tool_errors"] == 1 and line["saw_tool_error"] == 1 and line["reward"] == 0.0
        assert line["response"]["output"][-1]["content"][0]["text"] == "The tool failed, sorry."
    assert summary["tool_errors"] == 4


def test_plugin_exceptions_in_verify_and_setup_are_failures(plugins, tmp_path, monkeypatch, fake_openai):
    plugins.register(VerifyBreaksOnOslo(), name="strict")
    plugins.register(SetupBreaks(), name="sandbox")
    summary, lines, failed = _collect_in_process(plugins, tmp_path, monkeypatch, fake_openai,
                                                 "weather,strict,sandbox", ["Paris", "Oslo", "Tokyo"])
    assert keys(lines) == [(0, 0), (0, 1)] and all(line["reward"] == 1.0 for line in lines)
    by_class = {(f["task_index"], f["class"]) for f in failed}
    assert by_class == {(1, "plugin:verify"), (2, "plugin:setup_session")} and len(failed) == 4
    oslo = next(f for f in failed if f["task_index"] == 1)
    assert "verify raised KeyError" in oslo["message"] and "grader table has no Oslo" in oslo["message"]
    tokyo = next(f for f in failed if f["task_index"] == 2)
    assert "sandbox quota exceeded" in tokyo["message"]
    assert summary["failures"] == {"plugin:verify": 2, "plugin:setup_session": 2}
    # no model call was spent on a rollout whose setup failed
    assert not any("Tokyo" in json.dumps(r["body"]) for r in fake_openai.requests)


def test_parallel_beyond_the_soft_open_file_limit_still_runs(tmp_path, gym_env, fake_openai):
    """300 rollouts in flight under a soft limit of 200 open files: the collector raises its
    own soft limit (the hard one allows it), so nothing fails to connect."""
    fake_openai.latency = 0.3  # keeps all 300 connections open at once
    tasks, out = weather_tasks(tmp_path / "tasks.jsonl", 600), tmp_path / "out.jsonl"
    result = subprocess.run([GYM, *collect_args(tasks, out, "--parallel", "300", "--max-retries", "0")],
                            env=gym_env, capture_output=True, text=True, timeout=120, preexec_fn=open_file_limit(200))
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(read_jsonl(out)) == 600 and "warning" not in result.stderr


def test_a_hard_open_file_limit_too_low_is_named_and_nothing_crashes(tmp_path, gym_env, fake_openai):
    fake_openai.latency = 0.3
    tasks, out = weather_tasks(tmp_path / "tasks.jsonl", 600), tmp_path / "out.jsonl"
    result = subprocess.run([GYM, *collect_args(tasks, out, "--parallel", "300", "--max-retries", "0")],
                            env=gym_env, capture_output=True, text=True, timeout=120,
                            preexec_fn=open_file_limit(200, 200))
    assert "300 rollouts in flight need about 428 open files, but this process may open only 200" in result.stderr
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.returncode == 1  # rollouts failed to connect: failed, not crashed
    written = read_jsonl(out) if out.exists() else []
    assert all(line["error"] is None for line in written)


def _port_range() -> int:
    first, last = (int(part) for part in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    return last - first + 1


@pytest.mark.skipif(not Path("/proc/sys/net/ipv4/ip_local_port_range").exists(), reason="Linux only")
@pytest.mark.parametrize("replicas", [1, 2])
def test_more_in_flight_than_ports_or_files_is_named_before_the_run(tmp_path, gym_env, fake_openai, replicas):
    """One more rollout in flight than there are local ports to one host:port: with one model
    URL the collector says so before the first rollout, with the remedies; two replicas on
    distinct ports suffice. The low hard open-file limit is named too, with how to raise it.
    --max-failures 1 ends the run once rollouts fail to get a descriptor."""
    in_flight = _port_range() + 1
    tasks, out = weather_tasks(tmp_path / "tasks.jsonl", in_flight), tmp_path / "out.jsonl"
    second = FakeOpenAI() if replicas == 2 else None
    urls = [fake_openai.url, *([second.start_in_thread()] if second else [])]
    with_urls = [arg for url in urls for arg in ("--model-url", url)]
    try:
        result = subprocess.run([GYM, *collect_args(tasks, out, "--parallel", str(in_flight), "--max-failures", "1",
                                                    "--max-retries", "0", *with_urls)],
                                env=gym_env, capture_output=True, text=True, timeout=240,
                                preexec_fn=open_file_limit(200, 200))
    finally:
        if second:
            second.stop()
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert f"{in_flight} rollouts in flight need about {in_flight + 128} open files" in result.stderr
    assert "have an administrator raise the hard limit" in result.stderr and "Lower --parallel to about 72" in result.stderr
    port_warning = f"{in_flight} rollouts in flight over 1 destination(s) need about {in_flight} connections"
    if replicas == 1:
        assert port_warning in result.stderr and "(2 suffice: model replicas with --model-url" in result.stderr, result.stderr[-3000:]
    else:
        assert "local ports" not in result.stderr, result.stderr[-3000:]
