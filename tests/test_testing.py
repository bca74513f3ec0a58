"""gymcore.testing, the helpers environment authors test with: in-process plugins, scripted
model turns, session hooks around tool calls, reward assertions that explain themselves."""

from __future__ import annotations

import json

import pytest

from gymcore import hookimpl
from gymcore.backends import ModelContext, create_backend
from gymcore.errors import GymError, InputError
from gymcore.testing import (ScriptedModel, arun_task, assert_reward, call_tool, environment, message,
                             replay_examples, run_task, tool_call)


class Counter:
    """A plugin with per-rollout state: every hook a session has, and a record of them."""

    def __init__(self):
        self.events = []

    @hookimpl
    def list_tools(self):
        return [{"name": "bump", "parameters": {"type": "object", "properties": {"by": {"type": "integer"}}}}]

    @hookimpl
    def setup_session(self, session):
        session.state["count"] = session.task.verifier_metadata.get("start", 0) if session.task.verifier_metadata else 0
        self.events.append(("setup", session.id))

    @hookimpl
    async def call_tool(self, name, arguments, session):
        session.state["count"] += arguments["by"]
        return {"count": session.state["count"]}

    @hookimpl
    def verify(self, session, response):
        target = (session.task.verifier_metadata or {}).get("target")
        return {"reward": float(session.state["count"] == target), "count": session.state["count"]}

    @hookimpl
    def teardown_session(self, session):
        self.events.append(("teardown", session.id))


TASK = {"responses_create_params": {"input": "count to 5"}, "verifier_metadata": {"start": 1, "target": 5}}


def test_run_task_runs_tools_in_one_session_and_scores():
    plugin = Counter()
    model = ScriptedModel([[tool_call("bump", by=1), tool_call("bump", by=2)], tool_call("bump", {"by": 1}), "done"])
    rollout = run_task(plugin, TASK, model=model)
    assert_reward(rollout, 1.0, count=5)
    assert rollout.turns == 3 and rollout.tool_calls == 3 and rollout.stop_reason == "completed"
    # the model saw each tool output, in order, before its next turn
    seen = [json.loads(i["output"]) for i in model.requests[-1]["input"] if i.get("type") == "function_call_output"]
    assert seen == [{"count": 2}, {"count": 4}, {"count": 5}]
    assert model.requests[0]["tools"][0]["name"] == "bump"  # list_tools filled in the tools
    # one session: set up before, torn down after
    assert [e[0] for e in plugin.events] == ["setup", "teardown"] and plugin.events[0][1] == plugin.events[1][1]


def test_a_short_script_fails_the_rollout_and_assert_reward_says_why():
    plugin = Counter()
    rollout = run_task(plugin, TASK, model_turns=[tool_call("bump", by=4)])
    assert rollout.error["kind"] == "protocol" and "asked for turn 2 but only 1 were scripted" in rollout.error["message"]
    assert [e[0] for e in plugin.events] == ["setup", "teardown"]  # torn down even so
    with pytest.raises(AssertionError) as info:
        assert_reward(rollout, 1.0)
    text = str(info.value)
    assert "the rollout failed" in text and "reward None != expected 1.0" in text
    assert 'call   bump({"by": 4})' in text and 'output {"count":5}' in text


def test_assert_reward_checks_metrics():
    rollout = run_task(Counter(), TASK, model_turns=[tool_call("bump", by=3), message("done")])
    assert_reward(rollout, 0.0, count=4)
    with pytest.raises(AssertionError, match=r"metric count=4 != expected 5.*\nmetrics: \{'count': 4\}"):
        assert_reward(rollout, 0.0, count=5)
    with pytest.raises(AssertionError, match="metric missing='<missing>'"):
        assert_reward(rollout, 0.0, missing=1)


def test_call_tool_runs_inside_a_session_and_reports_failures():
    plugin = Counter()
    result = call_tool(plugin, "bump", {"by": 2}, task=TASK)
    assert result.ok and result.json() == {"count": 3}
    assert [e[0] for e in plugin.events] == ["setup", "teardown"]
    bad = [call_tool(plugin, *args) for args in [("bump", "{not json"), ("nope", {}), ("bump", {})]]
    assert [r.ok for r in bad] == [False, False, False]
    errors = [r.json()["error"] for r in bad]
    assert "not valid JSON" in errors[0] and "unknown tool 'nope'" in errors[1] and "KeyError" in errors[2]


def test_plugins_compose_and_are_named_after_their_module():
    class Echo:
        @hookimpl
        def list_tools(self):
            return [{"name": "echo", "parameters": {"type": "object"}}]

        @hookimpl
        def call_tool(self, name, arguments, session):
            return arguments["text"]

    env = environment([Counter(), Echo()])
    assert env.names == ["counter", "echo"] and [t["name"] for t in env.tools] == ["bump", "echo"]
    assert call_tool(env, "echo", {"text": "hi"}).text == "hi"
    import gym_weather

    assert environment(gym_weather).name == "weather"
    assert environment(Echo(), name="custom").name == "custom"


def test_a_bad_task_row_names_the_field():
    with pytest.raises(InputError, match="<task>:1: field 'responses_create_params.input': missing"):
        run_task(Counter(), {"responses_create_params": {}}, model_turns=["x"])
    with pytest.raises(TypeError, match="a model turn is"):
        ScriptedModel([42])


class Recorded(Counter):
    """Counter with bundled example tasks and a recording of model turns for them."""

    def __init__(self, folder):
        super().__init__()
        self.folder = folder

    @hookimpl
    def example_dataset(self):
        return self.folder / "tasks.jsonl"

    @hookimpl
    def example_rollouts(self):
        return self.folder / "rollouts.jsonl"


def test_replay_examples_replays_the_recording_and_runs_tools_and_verify_for_real(tmp_path):
    unrecorded = {"responses_create_params": {"input": "count to 3"}, "verifier_metadata": {"target": 3}}
    (tmp_path / "tasks.jsonl").write_text(json.dumps(TASK) + "\n" + json.dumps(unrecorded) + "\n")
    call = tool_call("bump", by=4)
    recording = {**TASK, "response": {"output": [
        call, {"type": "function_call_output", "call_id": call["call_id"], "output": "stale, ignored"},
        message("five")]}}
    (tmp_path / "rollouts.jsonl").write_text(json.dumps(recording) + "\n")
    first, second = replay_examples(Recorded(tmp_path))
    assert_reward(first, 1.0, count=5)
    assert json.loads(first.response["output"][1]["output"]) == {"count": 5}  # recomputed, not replayed
    assert second.reward is None and "no recorded rollout" in second.error["message"]
    assert len(replay_examples(Recorded(tmp_path), limit=1)) == 1


def test_replay_examples_needs_the_example_hooks():
    with pytest.raises(GymError, match="needs both example_dataset and example_rollouts"):
        replay_examples(Counter())


class ScriptedModels:
    """A model plugin, in-process: scripted backends through register_models."""

    @hookimpl
    def register_models(self, register):
        register("scripted", lambda name, context: ScriptedModel([tool_call("bump", by=int(name)), "ok"]),
                 "a scripted model for tests")


async def test_a_model_plugin_registers_a_backend_and_async_tests_use_arun_task(bare_plugins):
    bare_plugins.register(ScriptedModels(), name="scripted-models", kind="model")
    backend = create_backend(bare_plugins, "scripted:4", ModelContext())
    rollout = await arun_task(Counter(), TASK, model=backend)
    assert_reward(rollout, 1.0, count=5)
    assert rollout.model == "scripted"
