"""A model that is not there: ``gym collect`` (a real subprocess) against a port where nothing
listens, a base URL without ``/v1``, and a server that never answers. Each run stops at
once with the URL and the likely fix, scores nothing and exits 1; a run whose model has
answered before is never stopped that way. ``--model-timeout`` bounds each model call, in
``gym collect`` and in ``gym serve``."""

from __future__ import annotations

import json
from pathlib import Path

from .conftest import SECRET_KEY, read_jsonl, run_gym
from .fake_openai import frozen_server, refused_url
from .test_collect_faults import CITIES, collect_args, write_tasks
from .test_serve import gym_serve, serve_env


def collect_against(tmp_path: Path, env: dict, base_url: str, *extra: str):
    """``gym collect`` of 10 tasks x 3 repeats, two at a time, against ``base_url``."""
    tasks, out = write_tasks(tmp_path / "tasks.jsonl"), tmp_path / "out.jsonl"
    result = run_gym(*collect_args(tasks, out, "--num-repeats", "3", "--parallel", "2", *extra),
                     env={**env, "OPENAI_BASE_URL": base_url}, timeout=60)
    metrics = json.loads((tmp_path / "out.metrics.json").read_text())
    return result, metrics, read_jsonl(out), read_jsonl(tmp_path / "out.failures.jsonl")


def assert_stopped_at_once(result, metrics, lines, failed, cls: str):
    """Stopped (exit 1) after at most one failed rollout per worker, nothing scored, one
    sample message for the class in metrics.json and in the printed summary."""
    assert result.returncode == 1, result.stderr
    assert metrics["status"] == "stopped" and "stopped early" in result.stderr
    assert lines == [] and metrics["scored"] == 0
    assert 1 <= len(failed) <= 2 and {f["class"] for f in failed} == {cls}  # not 30 failures
    assert metrics["failure_samples"] == {cls: failed[0]["message"]}
    assert "failure_samples" in result.stdout and failed[0]["message"] in result.stdout
    assert "Traceback" not in result.stderr
    assert SECRET_KEY not in result.stdout + result.stderr + json.dumps(metrics)


def test_refused_connection_stops_the_run_naming_the_url(tmp_path, gym_env):
    url = refused_url()
    result, metrics, lines, failed = collect_against(tmp_path, gym_env, url, "--max-retries", "2")
    assert_stopped_at_once(result, metrics, lines, failed, "model:connection")
    assert all(f["attempts"] == 3 for f in failed)  # a connection error is still retried first
    reason = metrics["stop_reason"]
    assert f"{url}/responses" in reason and "is the model server up" in reason
    assert reason in result.stderr


def test_a_base_url_without_v1_stops_at_the_first_404(tmp_path, gym_env, fake_openai):
    base = fake_openai.url.removesuffix("/v1")
    result, metrics, lines, failed = collect_against(tmp_path, gym_env, base)
    assert_stopped_at_once(result, metrics, lines, failed, "model:404")
    assert all(f["attempts"] == 1 for f in failed)  # a 404 is never retried
    reason = metrics["stop_reason"]
    assert f"{base}/responses" in reason and "end in /v1" in reason
    assert reason in result.stderr
    assert fake_openai.requests == []  # nothing reached the real routes


def test_a_server_that_never_answers_times_out_per_call_and_stops(tmp_path, gym_env):
    with frozen_server() as url:
        result, metrics, lines, failed = collect_against(tmp_path, gym_env, url, "--model-timeout", "0.3",
                                                         "--max-retries", "1")
    assert_stopped_at_once(result, metrics, lines, failed, "model:timeout")
    assert all(f["attempts"] == 2 and "0.3s" in f["message"] for f in failed)  # retried once, then failed
    reason = metrics["stop_reason"]
    assert f"{url}/responses" in reason and "--model-timeout" in reason
    assert reason in result.stderr


def test_connection_errors_after_a_model_call_succeeded_do_not_stop_the_run(tmp_path, gym_env, fake_openai):
    """The first call succeeds (its rollout is still running when the others fail), then
    every connection is dropped (half a second late, so that the success is seen first):
    failures, but the run goes on to the end."""
    fake_openai.faults = [None] + [{"hang": 0.5, "reset": True}] * 100
    tasks, out = write_tasks(tmp_path / "tasks.jsonl", CITIES[:4]), tmp_path / "out.jsonl"
    result = run_gym(*collect_args(tasks, out, "--parallel", "2", "--max-retries", "0"), env=gym_env, timeout=60)
    assert result.returncode == 1, result.stderr
    metrics = json.loads((tmp_path / "out.metrics.json").read_text())
    assert metrics["status"] == "completed" and "stop_reason" not in metrics
    assert metrics["rollouts"] == 4 and metrics["failures"] == {"model:connection": 4}
    assert "stopped early" not in result.stderr
    failed = read_jsonl(tmp_path / "out.failures.jsonl")
    assert metrics["failure_samples"]["model:connection"] in {f["message"] for f in failed}


def test_model_timeout_is_an_option_of_collect_and_serve(tmp_path):
    for command in ("collect", "serve"):
        result = run_gym(command, "--help")
        text = " ".join(result.stdout.split())  # as wrapped at any terminal width
        assert "--model-timeout SECONDS" in text and "Default: 600." in text, command
    # gym serve passes it to its backend: a served run against a frozen model fails per call
    tasks, out = write_tasks(tmp_path / "tasks.jsonl", CITIES[:3]), tmp_path / "out.jsonl"
    with frozen_server() as model_url, \
            gym_serve("--agent", "weather", "--model", "openai:m", "--model-timeout", "0.3",
                      env=serve_env(OPENAI_BASE_URL=model_url, OPENAI_API_KEY=SECRET_KEY)) as (_proc, server):
        result = run_gym("collect", "--agent", "weather", "--server", server, "--input", str(tasks),
                         "--output", str(out), "-q", "--parallel", "1", "--max-retries", "0",
                         env=serve_env(), timeout=60)
    assert result.returncode == 1, result.stderr
    failed = read_jsonl(tmp_path / "out.failures.jsonl")
    assert len(failed) == 1 and failed[0]["class"] == "model:timeout" and "0.3s" in failed[0]["message"]
    metrics = json.loads((tmp_path / "out.metrics.json").read_text())
    assert metrics["status"] == "stopped" and model_url in metrics["stop_reason"]


def test_model_timeout_with_server_is_refused_where_it_would_not_apply(tmp_path):
    tasks = write_tasks(tmp_path / "tasks.jsonl")
    result = run_gym("collect", "--agent", "weather", "--server", "http://127.0.0.1:9", "--input", str(tasks),
                     "--output", str(tmp_path / "out.jsonl"), "--model-timeout", "5", env=serve_env())
    assert result.returncode == 2 and "--model-timeout" in result.stderr and "gym serve" in result.stderr
