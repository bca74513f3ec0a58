"""Model replies that are HTTP 200 but not answers: a failed or cancelled response, an
``error`` body, a chat ``finish_reason`` of ``error``/``abort``, and a tool call cut off by
the output-token limit. The fake server sends each one; the real ``openai`` SDK shows the
bodies are what such servers send, and the agent loop and ``gym collect`` (a subprocess)
show what becomes of them: a model failure, retried and never scored, or an incomplete
reply whose cut-off call is not run."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openai import AsyncOpenAI
from openai.types.responses import Response

from gym_openai_model.client import OpenAIBackend
from gymcore.agent import AgentConfig, run_rollout
from gymcore.data import Task
from gymcore.environment import Environment
from gymcore.errors import ModelError
from gymcore.metrics import failure_class
from gymcore.replies import mark_cut_off, reply_failure
from gymcore.retry import RetryPolicy

from .conftest import SECRET_KEY, read_jsonl, run_gym
from .fake_openai import FakeOpenAI

TASK = Task({"input": [{"role": "user", "content": "weather in Oslo?"}]}, {"expected_city": "Oslo"}, {"id": "t1"})
FAST = RetryPolicy(max_retries=2, base_delay=0.001, max_delay=0.01)

SERVER_ERROR = {"code": "server_error", "message": "the engine fell over"}
#: (mode, fault, the failure class it must become). Each fault is a 200 answer.
BAD_REPLIES = {
    "responses-failed": ("openai", {"patch": {"status": "failed", "error": SERVER_ERROR}}, "model:failed"),
    "responses-cancelled": ("openai", {"patch": {"status": "cancelled"}}, "model:cancelled"),
    "responses-error-body": ("openai", {"body": {"error": {"message": "upstream overloaded", "type": "server_error",
                                                           "code": None, "param": None}}}, "model:failed"),
    "responses-completed-with-error": ("openai", {"patch": {"error": SERVER_ERROR}}, "model:failed"),
    "chat-finish-error": ("openai-chat", {"choice": {"finish_reason": "error"}}, "model:failed"),
    "chat-finish-abort": ("openai-chat", {"choice": {"finish_reason": "abort"}}, "model:cancelled"),
    "chat-error-body": ("openai-chat", {"body": {"error": {"message": "upstream overloaded", "type": "server_error",
                                                           "code": 502}}}, "model:failed"),
    "chat-choice-error": ("openai-chat", {"choice": {"finish_reason": "error",
                                                     "error": {"code": 502, "message": "provider died"}}},
                          "model:failed"),
}


def run(plugins, fake, task=TASK, mode="openai", **config):
    async def go():
        env = await Environment.create(plugins, ["weather"])
        model = OpenAIBackend("m", mode=mode, base_url=fake.url)
        try:
            return await run_rollout(env, model, task, task_index=0, rollout_index=0,
                                     config=AgentConfig(**{"retry": FAST, **config}))
        finally:
            await model.aclose()

    return asyncio.run(go())


def always(fault: dict) -> dict:
    """A rule that spoils every request (every raw body contains the empty string)."""
    return {"match": "", **fault}


# --- the bad replies are what an OpenAI-compatible server sends --------------------------

def test_the_sdk_reads_the_bad_replies_as_answers_not_errors(fake_openai):
    """The openai SDK raises nothing for any of them: a client must look at the body."""
    async def go():
        client = AsyncOpenAI(api_key=SECRET_KEY, base_url=fake_openai.url, max_retries=0)
        seen = {}
        try:
            for name, (mode, fault, _) in BAD_REPLIES.items():
                fake_openai.faults = [fault]
                if mode == "openai":
                    seen[name] = await client.responses.create(model="m", input="weather in Oslo?")
                else:
                    seen[name] = await client.chat.completions.create(
                        model="m", messages=[{"role": "user", "content": "weather in Oslo?"}])
        finally:
            await client.close()
        return seen

    seen = asyncio.run(go())
    assert seen["responses-failed"].status == "failed" and seen["responses-failed"].error.code == "server_error"
    assert seen["responses-cancelled"].status == "cancelled"
    assert seen["responses-completed-with-error"].error.message == "the engine fell over"
    assert seen["responses-error-body"].output is None  # no output at all, only the error
    assert seen["chat-finish-error"].choices[0].finish_reason == "error"
    assert seen["chat-finish-abort"].choices[0].finish_reason == "abort"
    assert seen["chat-error-body"].choices is None


# --- Break 2: a failed reply is a model failure, retried, never scored -------------------

@pytest.mark.parametrize("name", list(BAD_REPLIES))
def test_a_bad_reply_is_a_model_failure_retried_and_never_scored(plugins, fake_openai, name):
    mode, fault, expected = BAD_REPLIES[name]
    fake_openai.rules = [always(fault)]
    rollout = run(plugins, fake_openai, mode=mode)
    assert rollout.reward is None and rollout.metrics == {}
    assert failure_class(rollout.error) == expected, rollout.error
    assert rollout.error["attempts"] == 3 and len(fake_openai.requests) == 3  # retried like a 5xx
    assert rollout.tool_calls == 0


def test_a_failed_reply_that_goes_away_costs_one_retry(plugins, fake_openai):
    fake_openai.faults = [BAD_REPLIES["responses-failed"][1]]
    rollout = run(plugins, fake_openai)
    assert rollout.error is None and rollout.reward == 1.0
    assert len(fake_openai.requests) == 3  # the failed call, its retry, the answer after the tool


def test_an_error_field_of_nulls_beside_an_answer_is_an_answer(plugins, fake_openai):
    fake_openai.rules = [always({"patch": {"error": {"code": None, "message": None}}})]
    rollout = run(plugins, fake_openai)
    assert rollout.error is None and rollout.reward == 1.0


def test_a_body_of_only_an_empty_error_is_a_protocol_failure(plugins, fake_openai):
    """No output and no error that says anything: not an answer, and not a failed reply."""
    fake_openai.rules = [always({"body": {"error": {"code": None, "message": None}}})]
    rollout = run(plugins, fake_openai)
    assert rollout.reward is None and failure_class(rollout.error) == "model:protocol"


junk = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
                        st.sampled_from(["status", "error", "code", "message", "output", "type", "arguments",
                                         "usage", "output_tokens", "max_output_tokens"]), inner, max_size=4),
                    max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["status", "error", "output", "usage", "max_output_tokens"]), junk),
       st.sampled_from([{}, {"max_output_tokens": 0}, {"max_output_tokens": 8}]))
def test_any_reply_shape_is_read_without_a_stray_exception(reply, request):
    failure = reply_failure(reply, "m")
    assert failure is None or (failure.kind in ("failed", "cancelled") and str(failure).startswith("m: "))
    mark_cut_off(reply, request)


def test_a_failure_the_request_caused_is_not_retried(plugins, fake_openai):
    bad_prompt = {"code": "invalid_prompt", "message": "the prompt was flagged"}
    fake_openai.rules = [always({"patch": {"status": "failed", "error": bad_prompt}})]
    rollout = run(plugins, fake_openai)
    assert failure_class(rollout.error) == "model:failed" and rollout.error["attempts"] == 1
    assert "invalid_prompt" in rollout.error["message"] and "the prompt was flagged" in rollout.error["message"]


# --- Break 13: a tool call cut off by max_output_tokens is not run ----------------------

LIMITED = Task({"input": [{"role": "user", "content": "weather in Oslo?"}], "max_output_tokens": 8},
               {"expected_city": "Oslo"}, {"id": "t1"})


@pytest.mark.parametrize("mode, finish_reason", [("openai", None), ("openai-chat", "tool_calls"),
                                                 ("openai-chat", "length")])
def test_a_cut_off_tool_call_is_an_incomplete_reply_not_run(plugins, fake_openai, mode, finish_reason):
    fault = {"truncate": 1} | ({"choice": {"finish_reason": finish_reason}} if finish_reason else {})
    fake_openai.rules = [always(fault)]
    rollout = run(plugins, fake_openai, task=LIMITED, mode=mode)
    assert rollout.error is None and rollout.stop_reason == "incomplete"
    assert rollout.turns == 1 and rollout.tool_calls == 0 and len(fake_openai.requests) == 1
    assert rollout.reward == 0.0  # verified as an incomplete reply: no tool was run, no answer given
    response = rollout.response
    assert response["status"] == "incomplete"
    assert response["incomplete_details"] == {"reason": "max_output_tokens"}
    (call,) = response["output"]
    assert call["type"] == "function_call" and call["arguments"] == "{" and call["status"] == "incomplete"
    Response.model_validate(response)


def test_broken_arguments_below_the_limit_still_reach_the_tool(plugins, fake_openai):
    """Not cut off (no limit in the request): the model wrote bad JSON and reads the error."""
    fake_openai.faults = [{"truncate": 1}]
    rollout = run(plugins, fake_openai)  # TASK has no max_output_tokens
    assert rollout.stop_reason == "completed" and rollout.tool_calls == 1 and rollout.tool_errors == 1


def test_a_whole_tool_call_at_the_limit_is_run(plugins, fake_openai):
    fake_openai.faults = [{"truncate": 1000}]  # all tokens used, but the arguments are whole
    rollout = run(plugins, fake_openai, task=LIMITED)
    assert rollout.stop_reason == "completed" and rollout.tool_calls == 1 and rollout.tool_errors == 0
    assert rollout.reward == 1.0


# --- 404 on /v1/responses ------------------------------------------------------------------

def test_a_404_on_responses_suggests_the_chat_mode_and_the_base_url():
    server = FakeOpenAI(chat_only=True)
    server.start_in_thread()

    async def go():
        model = OpenAIBackend("m", base_url=server.url)
        try:
            with pytest.raises(ModelError) as info:
                await model.create_response({"input": "hi"})
        finally:
            await model.aclose()
        return info.value

    try:
        error = asyncio.run(go())
    finally:
        server.stop()
    assert error.status == 404
    message = str(error)
    assert f"POST {server.url}/responses" in message
    assert "/v1" in message and "openai-chat:m" in message


# --- what a user of gym collect sees ------------------------------------------------------

def write_tasks(path: Path, cities: list[str], **params) -> Path:
    path.write_text("".join(json.dumps({"responses_create_params": {"input": f"weather in {city}?", **params},
                                        "verifier_metadata": {"expected_city": city}}) + "\n" for city in cities))
    return path


def collect(tmp_path, gym_env, model, *extra, **params):
    tasks = write_tasks(tmp_path / "tasks.jsonl", ["Oslo", "Paris"], **params)
    out = tmp_path / "out.jsonl"
    result = run_gym("collect", "--agent", "weather", "--model", model, "--input", str(tasks), "--output", str(out),
                     "-q", "--max-retries", "1", *extra, env=gym_env)
    failures = tmp_path / "out.failures.jsonl"
    return result, read_jsonl(out) if out.exists() else [], read_jsonl(failures) if failures.exists() else []


@pytest.mark.parametrize("name", ["responses-failed", "chat-finish-abort"])
def test_gym_collect_files_bad_replies_as_failures_and_exits_1(tmp_path, gym_env, fake_openai, name):
    mode, fault, expected = BAD_REPLIES[name]
    fake_openai.rules = [always(fault)]
    result, lines, failed = collect(tmp_path, gym_env, f"{mode}:m")
    assert result.returncode == 1, result.stderr
    assert lines == []  # nothing scored
    assert [f["class"] for f in failed] == [expected, expected] and all(f["attempts"] == 2 for f in failed)
    assert "Traceback" not in result.stderr and f"{expected}=2" in result.stderr


def test_the_failures_file_keeps_the_episode_up_to_the_failed_turn(tmp_path, gym_env, fake_openai):
    # every second turn (the one that carries the tool's output) gets a failed reply
    fake_openai.rules = [{"match": "function_call_output", **BAD_REPLIES["responses-failed"][1]}]
    result, lines, failed = collect(tmp_path, gym_env, "openai:m")
    assert result.returncode == 1 and lines == [] and len(failed) == 2, result.stderr
    for failure in failed:
        assert failure["class"] == "model:failed"
        output = failure["response"]["output"]
        assert [item["type"] for item in output] == ["function_call", "function_call_output"]
        assert json.loads(output[0]["arguments"])["city"] in failure["responses_create_params"]["input"]
        Response.model_validate(failure["response"])


def test_gym_collect_scores_a_cut_off_tool_call_as_incomplete(tmp_path, gym_env, fake_openai):
    fake_openai.rules = [always({"truncate": 1})]
    result, lines, failed = collect(tmp_path, gym_env, "openai:m", max_output_tokens=8)
    assert result.returncode == 0, result.stderr
    assert failed == [] and len(lines) == 2 and len(fake_openai.requests) == 2  # one call each, no retries
    for line in lines:
        assert line["stop_reason"] == "incomplete" and line["tool_calls"] == 0 and line["reward"] == 0.0
        assert line["response"]["output"][0]["arguments"] == "{"


def test_served_collection_files_a_failed_reply_with_its_episode(tmp_path, gym_env, fake_openai):
    """The same through `gym serve`: the runner's agent loop raises, the collector files it."""
    from .test_serve import gym_serve

    fake_openai.rules = [{"match": "function_call_output", **BAD_REPLIES["responses-failed"][1]}]
    with gym_serve("--agent", "weather", "--model", "openai:m", env=gym_env) as (_proc, url):
        result, lines, failed = collect(tmp_path, gym_env, "openai:m", "--server", url)
    assert result.returncode == 1 and lines == [], result.stderr
    assert [f["class"] for f in failed] == ["model:failed", "model:failed"]
    assert all(f["attempts"] == 2 for f in failed)  # --max-retries 1 reached the runner
    assert all([i["type"] for i in f["response"]["output"]] == ["function_call", "function_call_output"]
               for f in failed)
