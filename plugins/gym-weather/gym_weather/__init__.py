"""The weather environment: one ``get_weather(city)`` tool over a seeded, deterministic fake
weather table, and a ``verify`` that checks the model looked up the right city and reported
what the tool said.

Reward, when the row names its ``verifier_metadata.expected_city``:
  1.0  get_weather was called for the expected city and the final answer reports its
       temperature and conditions;
  0.5  the right city was looked up but the answer does not report the result;
  0.0  the tool was never called, or only for other cities.
Without ground truth (rows written for NeMo Gym's weather example), it scores what it can:
0.5 for calling the tool, 0.5 more for reporting the last result; ``has_ground_truth`` = 0.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import orjson

from gymcore import hookimpl
from gymcore.responses import final_text

DATA = Path(__file__).parent / "data"
CONDITIONS = ["sunny", "cloudy", "rainy", "foggy", "windy", "snowy", "stormy", "clear"]

GET_WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the current weather for a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string", "description": "City name, e.g. San Francisco"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}


def normalize_city(city: str) -> str:
    """Case, spacing and punctuation do not make another city."""
    return " ".join(re.sub(r"[^\w\s]", " ", city).casefold().split())


def weather_for(city: str) -> dict[str, Any]:
    """The fake weather of ``city``: a pure function of its normalized name (seeded by a
    hash, so the same on every machine and run)."""
    digest = hashlib.sha256(normalize_city(city).encode()).digest()
    return {
        "city": city.strip(),
        "temperature_c": digest[0] % 41 - 5,
        "conditions": CONDITIONS[digest[1] % len(CONDITIONS)],
    }


@hookimpl
def list_tools():
    return [GET_WEATHER]


@hookimpl
async def call_tool(name, arguments, session):
    if name != "get_weather":  # only reached if routing is bypassed
        raise ValueError(f"unknown tool {name!r}")
    city = arguments.get("city")
    if not isinstance(city, str) or not city.strip():
        raise ValueError("argument 'city' must be a non-empty string")
    return weather_for(city)


@hookimpl
def example_dataset():
    return DATA / "example.jsonl"


@hookimpl
def example_rollouts():
    return DATA / "example_rollouts.jsonl"


def _weather_calls(output: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any] | None]]:
    """(city asked for, tool result or None) for every get_weather call, in order."""
    results = {}
    for item in output:
        if item.get("type") == "function_call_output":
            try:
                results[item.get("call_id")] = orjson.loads(item.get("output") or "")
            except orjson.JSONDecodeError:
                pass
    calls = []
    for item in output:
        if item.get("type") == "function_call" and item.get("name") == "get_weather":
            try:
                city = orjson.loads(item.get("arguments") or "{}").get("city")
            except (orjson.JSONDecodeError, AttributeError):
                city = None
            result = results.get(item.get("call_id"))
            calls.append((city if isinstance(city, str) else "", result if isinstance(result, dict) else None))
    return calls


def reports(answer: str, result: dict[str, Any] | None) -> bool:
    """Does the answer state the result's temperature and conditions?"""
    if not result or "temperature_c" not in result:
        return False
    temperature = re.search(rf"(?<![\d.]){re.escape(str(result['temperature_c']))}(?![\d])", answer)
    return bool(temperature) and str(result.get("conditions", "")).casefold() in answer.casefold()


@hookimpl
async def verify(session, response):
    output = response.get("output") or []
    calls = _weather_calls(output)
    answer = final_text(output)
    expected = (session.task.verifier_metadata or {}).get("expected_city")
    called = bool(calls)
    if not expected:
        reported = called and reports(answer, calls[-1][1])
        return {"reward": 0.5 * called + 0.5 * reported, "called_tool": int(called),
                "reported_result": int(reported), "has_ground_truth": 0}
    target = normalize_city(expected)
    matching = [result for city, result in calls if normalize_city(city) == target]
    city_correct = bool(matching)
    reported = city_correct and reports(answer, matching[-1])
    return {"reward": 0.5 * city_correct + 0.5 * reported, "called_tool": int(called),
            "city_correct": int(city_correct), "reported_result": int(reported), "has_ground_truth": 1}


def example_tasks(size: int, seed: int) -> list[dict[str, Any]]:
    """``size`` of the bundled example tasks, in an order shuffled by ``seed``."""
    import random

    rows = [orjson.loads(line) for line in (DATA / "example.jsonl").read_bytes().splitlines() if line.strip()]
    if size > len(rows):
        raise ValueError(f"the example set has {len(rows)} tasks; ask for --size {len(rows)} or fewer")
    random.Random(seed).shuffle(rows)
    return rows[:size]


@hookimpl
def register_datasets(register):
    register("example", example_tasks, "the 24 bundled example tasks (NeMo Gym's weather rows, with ground truth), "
             "shuffled by --seed")
