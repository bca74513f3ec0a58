"""``gym collect`` as a real subprocess against the fake OpenAI server."""

from __future__ import annotations

import json

import pytest
from openai.types.responses import Response

from gym_weather import weather_for

from .conftest import ROOT, SECRET_KEY, read_jsonl, run_gym

EXAMPLE = ROOT / "plugins/gym-weather/gym_weather/data/example.jsonl"


def _comparable(line: dict) -> dict:
    """A rollout without what legitimately differs between two runs."""
    line = dict(line)
    line.pop("timing")
    line["response"] = {k: v for k, v in line["response"].items() if k not in ("id", "created_at")}
    line["response"]["output"] = [{k: v for k, v in item.items() if k not in ("id", "call_id")}
                                  for item in line["response"]["output"]]
    return line


def test_collect_weather_with_options(gym_env, tmp_path, fake_openai):
    out = tmp_path / "results" / "weather.jsonl"
    result = run_gym("collect", "--agent", "weather", "--model", "openai:gpt-fake", "--output", str(out),
                     "--limit", "5", "--num-repeats", "2", "--parallel", "3", "--temperature", "0.7",
                     "--set", "responses_create_params.top_p=0.9", env=gym_env)
    assert result.returncode == 0, result.stderr
    lines = read_jsonl(out)
    assert len(lines) == 5 * 2
    assert sorted((l["task_index"], l["rollout_index"]) for l in lines) == [(t, r) for t in range(5) for r in range(2)]
    tasks = read_jsonl(EXAMPLE)[:5]
    for line in lines:
        task = tasks[line["task_index"]]
        # the row's own params are kept; responses_create_params is what the model received
        assert line["row_responses_create_params"] == task["responses_create_params"]
        sent = line["responses_create_params"]
        assert sent == {**task["responses_create_params"], "temperature": 0.7, "top_p": 0.9, "tools": sent["tools"]}
        assert [tool["name"] for tool in sent["tools"]] == ["get_weather"]  # filled in from the environment
        assert line["verifier_metadata"] == task["verifier_metadata"] and line["id"] == task["id"]
        Response.model_validate(line["response"])  # every response is a valid Responses object
        kinds = [item["type"] for item in line["response"]["output"]]
        assert kinds == ["function_call", "function_call_output", "message"]
        expected = weather_for(task["verifier_metadata"]["expected_city"])
        assert json.loads(line["response"]["output"][1]["output"]) == expected
        assert line["reward"] == 1.0 and line["city_correct"] == 1 and line["reported_result"] == 1
        assert line["turns"] == 2 and line["error"] is None and line["model"] == "openai:gpt-fake"
        assert line["response"]["usage"]["total_tokens"] == 30  # summed over the two calls
    # sampling overrides reached the model on every request
    bodies = [r["body"] for r in fake_openai.requests]
    assert len(bodies) == 20
    assert all(b["temperature"] == 0.7 and b["top_p"] == 0.9 and b["model"] == "gpt-fake" for b in bodies)
    assert all(r["headers"]["Authorization"] == f"Bearer {SECRET_KEY}" for r in fake_openai.requests)
    metrics = json.loads((tmp_path / "results" / "weather.metrics.json").read_text())
    assert metrics["rollouts"] == 10 and metrics["mean_reward"] == 1.0 and metrics["pass@2"] == 1.0
    assert metrics["mean_turns"] == 2.0 and metrics["total_tokens"] == 300
    assert "mean_reward: 1.0000" in result.stdout and "pass@2" in result.stdout
    # the key appears nowhere we write
    for text in (out.read_text(), (tmp_path / "results" / "weather.metrics.json").read_text(),
                 result.stdout, result.stderr):
        assert SECRET_KEY not in text


def test_seed_spelling_gives_the_same_result(gym_env, tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    r1 = run_gym("collect", "--agent", "weather", "--model", "openai:m", "--input", str(EXAMPLE),
                 "--output", str(a), "--limit", "4", "--num-repeats", "2", "--parallel", "3",
                 "--temperature", "0.5", "-q", env=gym_env)
    r2 = run_gym("collect", "--model", "openai:m", "+agent_name=weather", f"+input_jsonl_fpath={EXAMPLE}",
                 f"+output_jsonl_fpath={b}", "+limit=4", "+num_repeats=2", "+num_samples_in_parallel=3",
                 "+responses_create_params.temperature=0.5", "-q", env=gym_env)
    assert r1.returncode == 0, r1.stderr
    assert r2.returncode == 0, r2.stderr
    key = lambda l: (l["task_index"], l["rollout_index"])  # noqa: E731
    la, lb = sorted(read_jsonl(a), key=key), sorted(read_jsonl(b), key=key)
    assert len(la) == 8
    assert [_comparable(x) for x in la] == [_comparable(x) for x in lb]


def test_chat_mode_end_to_end(gym_env, tmp_path, fake_openai):
    out = tmp_path / "chat.jsonl"
    result = run_gym("collect", "--agent", "weather", "--model", "openai-chat:m", "--output", str(out),
                     "--limit", "3", "-q", env=gym_env)
    assert result.returncode == 0, result.stderr
    lines = read_jsonl(out)
    assert [l["reward"] for l in lines] == [1.0, 1.0, 1.0]
    assert all(r["path"] == "/v1/chat/completions" for r in fake_openai.requests)
    for line in lines:
        Response.model_validate(line["response"])


def test_replay_demo_runs_offline(tmp_path):
    """The main job with no key and no server: recorded model turns, real tools and verify."""
    out = tmp_path / "demo.jsonl"
    result = run_gym("collect", "--agent", "weather", "--model", "replay", "--output", str(out), "-q",
                     env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert "REPLAY" in result.stdout
    recorded = {r["id"]: r for r in read_jsonl(EXAMPLE.with_name("example_rollouts.jsonl"))}
    lines = read_jsonl(out)
    assert len(lines) == len(recorded)
    for line in lines:
        assert line["model"].startswith("replay:")
        # tools ran for real and produced exactly the recorded outputs
        assert line["response"]["output"] == recorded[line["id"]]["response"]["output"]
        Response.model_validate(line["response"])
    rewards = sorted({l["reward"] for l in lines})
    assert rewards == [0.0, 0.5, 1.0]  # the recording holds right, half-right and wrong episodes


@pytest.mark.parametrize("setup, args, expected", [
    ("bad_json", [], "tasks.jsonl:2: not valid JSON"),
    ("no_params", [], "tasks.jsonl:2: field 'responses_create_params': missing"),
    ("bad_input_field", [], "tasks.jsonl:1: field 'responses_create_params.input': expected a string or a list"),
    ("missing_file", [], "missing.jsonl: no such file"),
    ("ok", ["--agent", "nope"], "unknown agent 'nope' (installed environments: weather"),
    ("ok", ["--limit", "0"], "limit must be a whole number >= 1, got 0"),
    ("ok", ["+limit=abc"], "limit must be a whole number >= 1, got 'abc'"),
    ("ok", ["+bogus=1"], "unknown argument +bogus"),
    ("ok", ["--model", "nosuch:x"], "unknown model backend 'nosuch'"),
])
def test_bad_input_is_one_clear_line(tmp_path, gym_env, setup, args, expected):
    tasks = tmp_path / "tasks.jsonl"
    good = json.dumps({"responses_create_params": {"input": "weather in Paris?"}})
    rows = {
        "bad_json": [good, '{"responses_create_params": '],
        "no_params": [good, json.dumps({"input": "hi"})],
        "bad_input_field": [json.dumps({"responses_create_params": {"input": 3}})],
        "ok": [good],
    }.get(setup)
    if rows is not None:
        tasks.write_text("\n".join(rows) + "\n")
    path = tmp_path / "missing.jsonl" if setup == "missing_file" else tasks
    out = tmp_path / "out.jsonl"
    base = {"--agent": "weather", "--model": "openai:m"}
    argv = []
    for flag, value in base.items():
        if flag not in args:
            argv += [flag, value]
    result = run_gym("collect", *argv, "--input", str(path), "--output", str(out), *args,
                     env={**gym_env, "GYM_LOAD_PLUGINS": "weather,openai,replay"})  # the error lists them
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    error_lines = [l for l in result.stderr.splitlines() if l.startswith("Error")]
    assert len(error_lines) == 1, result.stderr
    assert expected in error_lines[0]
    assert not out.exists()  # nothing started, nothing written


def test_missing_required_options_explain_themselves(gym_env, tmp_path):
    result = run_gym("collect", "--output", str(tmp_path / "o.jsonl"), env=gym_env)
    assert result.returncode == 2 and "missing --agent" in result.stderr
    env = {k: v for k, v in gym_env.items()}
    result = run_gym("collect", "--agent", "weather", "--output", str(tmp_path / "o.jsonl"), env=env,
                     cwd=tmp_path)
    assert result.returncode == 2 and "no model" in result.stderr and "--model replay" in result.stderr


def test_model_from_env_yaml(gym_env, tmp_path, fake_openai):
    """A NeMo Gym env.yaml in the working directory carries over: URL, key and model."""
    env = {k: v for k, v in gym_env.items() if not k.startswith("OPENAI_")}
    (tmp_path / "env.yaml").write_text(
        f"policy_base_url: {fake_openai.url}\npolicy_api_key: {SECRET_KEY}\npolicy_model_name: from-yaml\n")
    out = tmp_path / "o.jsonl"
    result = run_gym("collect", "--agent", "weather", "--output", str(out), "--limit", "1", "-q",
                     env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert read_jsonl(out)[0]["model"] == "openai:from-yaml"
    assert fake_openai.requests[0]["body"]["model"] == "from-yaml"
    assert fake_openai.requests[0]["headers"]["Authorization"] == f"Bearer {SECRET_KEY}"
    assert SECRET_KEY not in out.read_text()
