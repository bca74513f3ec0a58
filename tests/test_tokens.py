"""--return-tokens: exact token ids per model call, through real `gym collect` / `gym serve`
subprocesses against the fake vLLM-like server (its own byte tokenizer and chat template)."""

from __future__ import annotations

import json
import os

import pytest

from gymcore.runfiles import failures_path, run_record_path
from gymcore.tokens import TOKEN_FIELDS

from .conftest import SECRET_KEY, read_jsonl, run_gym, weather_tasks
from .fake_openai import FakeOpenAI, fake_logprob, fake_tokenize, render_chat
from .test_serve import gym_serve, serve_env


@pytest.fixture(scope="module")
def server():
    fake = FakeOpenAI()
    fake.start_in_thread()
    yield fake
    fake.stop()


@pytest.fixture
def fake(server):
    """The module's server, cleared, with its token behaviour reset after the test."""
    server.requests.clear()
    yield server
    server.drift_tokens = server.omit_tokens = False


def env_for(fake: FakeOpenAI) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "GYM_"))}
    env.update(OPENAI_BASE_URL=fake.url, OPENAI_API_KEY=SECRET_KEY, PYTHONUNBUFFERED="1")
    return env


def collect(fake: FakeOpenAI, tmp_path, *extra: str, model: str = "openai-chat:m", n: int = 2):
    out = tmp_path / "out.jsonl"
    result = run_gym("collect", "--agent", "weather", "--model", model, "--input",
                     str(weather_tasks(tmp_path / "in.jsonl", n)), "--output", str(out), "-q", "-p", "1",
                     *extra, env=env_for(fake))
    return result, out


def token_items(line: dict) -> list[dict]:
    return [item for item in line["response"]["output"] if "generation_token_ids" in item]


def chat_requests(fake: FakeOpenAI) -> list[dict]:
    return [r["body"] for r in fake.requests if r["path"].endswith("/chat/completions")]


def test_each_call_records_vllm_tokens_under_nemo_gym_names(fake, tmp_path):
    result, out = collect(fake, tmp_path, "--return-tokens", "--set", "responses_create_params.n=3", n=1)
    assert result.returncode == 0, result.stderr
    [line] = read_jsonl(out)
    requests = chat_requests(fake)
    assert len(requests) == 2 == line["turns"]  # weather: a tool call, then the answer
    for body in requests:  # asked the vLLM way, one choice whatever the row or --set say
        assert body["return_token_ids"] is True and body["logprobs"] is True
        assert body["n"] == 1 and body["top_logprobs"] == 0
    items = token_items(line)
    assert len(items) == 2
    output = line["response"]["output"]
    # on the last output item of each call: the function call, then the final message
    assert items[0] is output[0] and output[0]["type"] == "function_call"
    assert items[1] is output[-1] and output[-1]["type"] == "message"
    for item, body in zip(items, requests):
        assert set(TOKEN_FIELDS) <= set(item)
        assert item["prompt_token_ids"] == fake_tokenize(render_chat(body["messages"]))
        assert len(item["generation_token_ids"]) == len(item["generation_log_probs"]) > 0
        assert item["generation_log_probs"] == [fake_logprob(t) for t in item["generation_token_ids"]]
    assert line["token_monotonic"] is True
    assert line["reward"] is not None and line["error"] is None


def test_tokens_go_back_unchanged_on_the_assistant_message(fake, tmp_path):
    result, out = collect(fake, tmp_path, "--return-tokens", n=1)
    assert result.returncode == 0, result.stderr
    [line] = read_jsonl(out)
    first_call = token_items(line)[0]
    second_request = chat_requests(fake)[1]
    [assistant] = [m for m in second_request["messages"] if m["role"] == "assistant"]
    assert assistant["tool_calls"][0]["function"]["name"] == "get_weather"
    for name in TOKEN_FIELDS:
        assert assistant[name] == first_call[name]
    assert not any(name in m for m in second_request["messages"] if m["role"] != "assistant" for name in TOKEN_FIELDS)


def test_a_drifting_template_makes_the_rollout_not_monotonic(fake, tmp_path):
    fake.drift_tokens = True
    result, out = collect(fake, tmp_path, "--return-tokens", n=2)
    assert result.returncode == 0, result.stderr
    lines = read_jsonl(out)
    assert len(lines) == 2
    assert all(line["token_monotonic"] is False for line in lines)
    assert all(len(token_items(line)) == 2 for line in lines)


def test_a_reply_without_tokens_is_a_no_tokens_failure_never_a_turn(fake, tmp_path):
    fake.omit_tokens = True
    result, out = collect(fake, tmp_path, "--return-tokens", n=2)
    assert result.returncode == 1
    assert "model:no_tokens=2" in result.stderr
    assert read_jsonl(out) == []  # nothing with empty or made-up tokens reaches the output
    failures = read_jsonl(failures_path(out))
    assert [f["error"]["kind"] for f in failures] == ["no_tokens", "no_tokens"]
    assert all(f["error"]["attempts"] == 1 for f in failures)  # a server without tokens will not start: no retry
    assert "prompt_token_ids" in failures[0]["error"]["message"]
    assert len(chat_requests(fake)) == 2


def test_without_the_option_nothing_changes(fake, tmp_path):
    result, out = collect(fake, tmp_path, n=1)
    assert result.returncode == 0, result.stderr
    [line] = read_jsonl(out)
    assert "token_monotonic" not in line and token_items(line) == []
    assert not any(key in body for body in chat_requests(fake) for key in ("return_token_ids", "logprobs", "n"))


def test_the_responses_mode_refuses_return_tokens(fake, tmp_path):
    result, out = collect(fake, tmp_path, "--return-tokens", model="openai:m", n=1)
    assert result.returncode == 2  # a usage error: the command line asks for what the mode cannot do
    assert "--return-tokens" in result.stderr and "openai-chat:m" in result.stderr
    assert not out.exists() and fake.requests == []


def test_collect_with_a_server_sends_return_tokens_to_gym_serve(fake, tmp_path):
    result = run_gym("collect", "--agent", "weather", "--server", "http://127.0.0.1:9", "--return-tokens",
                     "--output", str(tmp_path / "o.jsonl"), env=env_for(fake))
    assert result.returncode == 2 and "gym serve --return-tokens" in result.stderr


def test_gym_serve_passes_return_tokens_through(fake, tmp_path):
    env = serve_env(OPENAI_BASE_URL=fake.url, OPENAI_API_KEY=SECRET_KEY)
    with gym_serve("--agent", "weather", "--model", "openai-chat:m", "--return-tokens", env=env) as (_proc, url):
        out = tmp_path / "served.jsonl"
        result = run_gym("collect", "--agent", "weather", "--server", url, "-q", "--input",
                         str(weather_tasks(tmp_path / "in.jsonl", 2)), "--output", str(out), env=env_for(fake))
    assert result.returncode == 0, result.stderr
    lines = read_jsonl(out)
    assert len(lines) == 2
    assert all(line["token_monotonic"] is True and len(token_items(line)) == 2 for line in lines)


def test_resume_refuses_to_mix_rollouts_with_and_without_tokens(fake, tmp_path):
    result, out = collect(fake, tmp_path, "--limit", "1", n=2)
    assert result.returncode == 0, result.stderr
    result, _ = collect(fake, tmp_path, "--return-tokens", "--resume", n=2)
    assert result.returncode == 1
    assert "return tokens" in result.stderr
    assert len(read_jsonl(out)) == 1 and "token_monotonic" not in read_jsonl(out)[0]


def test_a_backend_that_ignores_return_tokens_fails_as_no_tokens(fake, tmp_path):
    """replay returns recorded turns without token ids: the agent loop, not the backend, refuses them."""
    result, out = collect(fake, tmp_path, "--return-tokens", model="replay", n=1)
    assert result.returncode == 1
    assert read_jsonl(out) == []
    [failure] = read_jsonl(failures_path(out))
    assert failure["error"]["kind"] == "no_tokens" and "generation_token_ids" in failure["error"]["message"]


def test_a_served_run_records_the_servers_tokens_and_judge_and_resume_holds_them(fake, tmp_path):
    # the runners call the model and the judge: what the run is comes from them, so resuming
    # against runners without --return-tokens (or with another judge) is refused as embedded
    env = serve_env(OPENAI_BASE_URL=fake.url, OPENAI_API_KEY=SECRET_KEY)
    out, tasks = tmp_path / "served.jsonl", weather_tasks(tmp_path / "in.jsonl", 2)

    def served_collect(url: str, *extra: str):
        return run_gym("collect", "--agent", "weather", "--server", url, "-q", "--input", str(tasks),
                       "--output", str(out), *extra, env=env_for(fake))

    with gym_serve("--agent", "weather", "--model", "openai-chat:m", "--return-tokens",
                   "--judge-model", "openai-chat:judge", env=env) as (_proc, url):
        first = served_collect(url, "--limit", "1")
    assert first.returncode == 0, first.stderr
    record = json.loads(run_record_path(out).read_text())
    assert record["return_tokens"] is True and record["judge_model"] == "openai-chat:judge"
    with gym_serve("--agent", "weather", "--model", "openai-chat:m", env=env) as (_proc, url):
        again = served_collect(url, "--resume")
    assert again.returncode == 1, again.stderr
    assert "return tokens: True then, False now" in again.stderr
    assert "judge model: 'openai-chat:judge' then, None now" in again.stderr
    assert len(read_jsonl(out)) == 1


@pytest.mark.parametrize("logprob", [None, "-0.1"], ids=["null", "string"])
def test_a_logprob_that_is_not_a_number_is_no_tokens_not_a_hole_in_training_data(fake, tmp_path, logprob):
    # a trainer reads generation_log_probs as numbers: a reply whose logprob is null (or a
    # string) is refused where it comes in, never written for to_sequences to choke on
    # (NaN and infinity are refused already: the body is not JSON to orjson, model:protocol)
    fake.rules = [{"match": "Paris", "logprob": logprob, "times": 1}]
    try:
        result, out = collect(fake, tmp_path, "--return-tokens", n=2)
    finally:
        fake.rules = []
    assert result.returncode == 1, result.stderr
    lines = read_jsonl(out)
    assert len(lines) == 1 and all(None not in item["generation_log_probs"] for item in token_items(lines[0]))
    [failure] = read_jsonl(failures_path(out))
    assert failure["class"] == "model:no_tokens" and "generation_log_probs" in failure["error"]["message"]
