"""The agent loop, in-process, against the fake server: bad tool calls, step bounds,
incomplete responses, usage sums, model failures."""

from __future__ import annotations

import asyncio
import json

from openai.types.responses import Response

from gym_openai_model.client import OpenAIBackend
from gymcore.agent import AgentConfig, run_rollout
from gymcore.data import Rollout, Task, converter
from gymcore.environment import Environment
from gymcore.retry import RetryPolicy

TASK = Task({"input": [{"role": "user", "content": "weather in Oslo?"}]}, {"expected_city": "Oslo"}, {"id": "t1"})


def call(name: str, arguments: str, n: int = 1) -> dict:
    return {"output": [{"type": "function_call", "id": f"fc_{n}", "call_id": f"c{n}", "name": name,
                        "arguments": arguments, "status": "completed"}]}


def run(plugins, fake, task=TASK, **config):
    async def go():
        env = await Environment.create(plugins, ["weather"])
        model = OpenAIBackend("m", base_url=fake.url)
        try:
            return await run_rollout(env, model, task, task_index=3, rollout_index=1, config=AgentConfig(**config))
        finally:
            await model.aclose()

    return asyncio.run(go())


def test_malformed_arguments_and_unknown_tools_are_errors_the_model_reads(plugins, fake_openai):
    fake_openai.script = [call("get_weather", "{not json", 1), call("get_forecast", "{}", 2),
                          call("get_weather", '{"city": "Oslo"}', 3)]
    rollout = run(plugins, fake_openai)
    assert rollout.error is None and rollout.turns == 4 and rollout.stop_reason == "completed"
    assert rollout.tool_calls == 3 and rollout.tool_errors == 2
    outputs = [i for i in rollout.response["output"] if i["type"] == "function_call_output"]
    assert "not valid JSON" in json.loads(outputs[0]["output"])["error"]
    assert "unknown tool 'get_forecast'" in json.loads(outputs[1]["output"])["error"]
    # the model saw each error: the 2nd request's input ends with the first error output
    second_input = fake_openai.requests[1]["body"]["input"]
    assert second_input[-1]["call_id"] == "c1" and "not valid JSON" in second_input[-1]["output"]
    assert "id" not in second_input[-1]  # tool outputs go to the model without output-item ids
    # after the errors the model looked up Oslo and the policy answered from it: full reward
    assert rollout.reward == 1.0
    Response.model_validate(rollout.response)


def test_max_steps_bounds_a_model_that_never_stops(plugins, fake_openai):
    fake_openai.script = [call("get_weather", '{"city": "Oslo"}', n) for n in range(10)]
    rollout = run(plugins, fake_openai, max_steps=3)
    assert rollout.turns == 3 and rollout.stop_reason == "max_steps" and rollout.tool_calls == 3
    assert len(fake_openai.requests) == 3
    assert rollout.reward == 0.5  # right city looked up, never reported
    assert rollout.response["usage"]["total_tokens"] == 45
    assert rollout.response["usage"]["input_tokens_details"]["cached_tokens"] == 0


def test_incomplete_response_ends_the_rollout(plugins, fake_openai):
    fake_openai.script = [{"status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"},
                           **call("get_weather", '{"city": "Os', 1)}]
    rollout = run(plugins, fake_openai)
    assert rollout.turns == 1 and rollout.stop_reason == "incomplete" and rollout.tool_calls == 0
    assert rollout.response["status"] == "incomplete"
    assert rollout.reward == 0.0


def test_model_failure_is_an_error_not_a_reward(plugins, fake_openai):
    fake_openai.faults = [None, {"status": 503, "message": "overloaded"}, {"status": 503, "message": "overloaded"}]
    rollout = run(plugins, fake_openai, retry=RetryPolicy(max_retries=1, base_delay=0.01))
    assert rollout.reward is None
    assert rollout.error["type"] == "model" and rollout.error["status"] == 503
    assert rollout.error["attempts"] == 2 and len(fake_openai.requests) == 3  # retried once, then gave up
    assert "overloaded" in rollout.error["message"]
    # what happened before the failure is kept for inspection
    assert [i["type"] for i in rollout.response["output"]] == ["function_call", "function_call_output"]


def test_string_input_and_row_tools_are_used_as_given(plugins, fake_openai):
    tools = [{"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}}]
    task = Task({"input": "weather in Oslo?", "tools": tools})
    rollout = run(plugins, fake_openai, task=task)
    body = fake_openai.requests[0]["body"]
    assert body["input"] == [{"role": "user", "content": "weather in Oslo?"}]
    assert body["tools"] == tools
    assert rollout.metrics["has_ground_truth"] == 0 and rollout.reward == 1.0


def test_rollout_round_trips_through_the_converter(plugins, fake_openai):
    rollout = run(plugins, fake_openai)
    line = json.loads(json.dumps(converter.unstructure(rollout)))
    assert line["id"] == "t1" and line["task_index"] == 3 and line["rollout_index"] == 1
    assert line["metric_names"] == ["called_tool", "city_correct", "reported_result", "has_ground_truth"]
    back = converter.structure(line, Rollout)
    assert back == rollout
