"""{{ cookiecutter.description }}

A gymcore environment (a resource server). gymcore finds it through the ``gym.resources``
entry point in pyproject.toml, so ``gym collect --agent {{ cookiecutter.name }}`` runs it.

Every function marked ``@hookimpl`` implements one gymcore hook; the docstrings in
``gymcore/hookspecs.py`` are the reference for each. The example tool adds up numbers and
``verify`` checks that the final answer states the expected total: replace both with your
own, then re-record ``data/example_rollouts.jsonl`` (see README.md). The tests in ``tests/``
tell you what broke.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from gymcore import hookimpl
from gymcore.responses import final_text

DATA = Path(__file__).parent / "data"

TOOL_NAME = "{{ cookiecutter.tool_name }}"

# The tool as the model sees it: a Responses-API function tool whose parameters are a JSON
# schema. Write the description for the model: it is all the model knows about the tool.
TOOL = {
    "type": "function",
    "name": TOOL_NAME,
    "description": "Add up a list of numbers exactly. Use it for any sum.",
    "parameters": {
        "type": "object",
        "properties": {
            "numbers": {"type": "array", "items": {"type": "number"}, "description": "The numbers to add"},
        },
        "required": ["numbers"],
        "additionalProperties": False,
    },
}


def add_numbers(arguments: dict[str, Any]) -> dict[str, Any]:
    """The example tool. Bad arguments raise: the model sees the error and may try again."""
    numbers = arguments.get("numbers")
    if not isinstance(numbers, list) or not numbers or not all(is_number(n) for n in numbers):
        raise ValueError("'numbers' must be a non-empty list of numbers")
    return {"sum": sum(numbers)}


#: Tool name -> the function that runs it. To add a tool, describe it next to TOOL, list it
#: in list_tools and map its name here.
TOOLS = {TOOL_NAME: add_numbers}


# list_tools: the tools this environment offers. Called once when the environment is
# built; a tool name must be unique within an environment, because gymcore routes every
# call to the plugin that listed the name.
@hookimpl
def list_tools():
    return [TOOL]


# call_tool: run one call of one of *our* tools. `arguments` is the dict the model sent;
# `session` is this rollout's own (`session.state` is a dict for per-rollout state).
# Return a str (sent as is) or anything JSON-serialisable (sent as JSON). A plain `def`
# runs in a worker thread, so blocking I/O is fine; write `async def` for async I/O.
@hookimpl
def call_tool(name, arguments, session):
    return TOOLS[name](arguments)


# setup_session / teardown_session (optional): per-rollout state, e.g. a scratch database
# or a sandbox built from the task row, released after verify (even if the rollout failed).
# Uncomment to use:
#
# @hookimpl
# def setup_session(session):
#     session.state["calls"] = 0          # session.task is the input row
#
# @hookimpl
# def teardown_session(session):
#     session.state.clear()


# verify: score the finished rollout. `response["output"]` is the whole episode in order
# (model messages, tool calls, tool outputs); `session.task.verifier_metadata` is the row's
# ground truth. Return {"reward": <0..1>, **metrics}: metrics (numbers or strings) land in
# each output line next to the reward, and `gym collect` averages them.
@hookimpl
def verify(session, response):
    output = response.get("output") or []
    used_tool = any(item.get("type") == "function_call" and item.get("name") == TOOL_NAME for item in output)
    expected = (session.task.verifier_metadata or {}).get("expected_answer")
    if expected is None:
        # No ground truth: score what can be checked, and say so in a metric.
        return {"reward": float(used_tool), "used_tool": int(used_tool), "has_ground_truth": 0}
    answer = last_number(final_text(output))  # final_text: the last assistant message
    correct = answer is not None and abs(answer - float(expected)) <= 1e-6 * max(1.0, abs(float(expected)))
    return {"reward": float(correct), "answer_correct": int(correct), "used_tool": int(used_tool),
            "has_ground_truth": 1}


# example_dataset / example_rollouts: the bundled tasks (`gym collect --agent
# {{ cookiecutter.name }}` reads them when --input is not given) and a recording of model
# turns for them, which `--model replay` replays offline while the tools and verify run.
@hookimpl
def example_dataset():
    return DATA / "example.jsonl"


@hookimpl
def example_rollouts():
    return DATA / "example_rollouts.jsonl"


# --- helpers for verify ----------------------------------------------------------------

NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def last_number(text: str) -> float | None:
    """The last number written in ``text`` ("1,234.5" counts as 1234.5), or None."""
    found = NUMBER.findall(text)
    return float(found[-1].replace(",", "")) if found else None
