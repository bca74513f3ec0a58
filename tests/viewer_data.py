"""A small rollout file for the viewer tests, built with gymcore's own data model (the
converter that ``gym collect`` writes with), and a tiny HTML reader for asserting on pages."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import orjson

from gymcore.agent import episode_output
from gymcore.data import Rollout, Task, Timing, converter
from gymcore.responses import response, usage

XSS = "<script>alert(1)</script>"
TOOLS = [
    {"type": "function", "name": "get_weather", "description": "Get the current weather for a city.",
     "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
    {"type": "function", "name": "search_docs", "description": "Search the travel guide.",
     "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}},
]


def call(name: str, call_id: str, **arguments) -> dict:
    return {"type": "function_call", "id": f"fc_{call_id}", "call_id": call_id, "name": name,
            "arguments": json.dumps(arguments), "status": "completed"}


def output(call_id: str, value) -> dict:
    return {"type": "function_call_output", "call_id": call_id,
            "output": value if isinstance(value, str) else json.dumps(value)}


def message(text: str) -> dict:
    return {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
            "content": [{"type": "output_text", "text": text, "annotations": []}]}


def reasoning(text: str) -> dict:
    return {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": text}]}


def rollout(task_index: int, rollout_index: int, city: str, items: list[dict] | None, reward: float | None,
            *, error: dict | None = None, turns: int = 2, tokens: tuple[int, int] = (100, 20),
            seconds: float = 1.0) -> dict:
    task = Task(
        responses_create_params={"input": [{"role": "developer", "content": "You are a helpful assistant."},
                                           {"role": "user", "content": f"what's the weather in {city}?"}],
                                 "tools": TOOLS, "temperature": 0.7},
        verifier_metadata={"expected_city": city}, extra={"id": f"weather-{task_index:03d}"})
    calls = [item for item in items or [] if item["type"] == "function_call"]
    body = None if items is None else response(
        id=f"resp_{task_index}_{rollout_index}", model="gpt-test", output=episode_output(items),
        usage_=usage(*tokens, reasoning=5))
    metrics = {} if reward is None else {"called_tool": int(bool(calls)), "city_correct": int(reward == 1.0)}
    return converter.unstructure(Rollout(
        task=task, task_index=task_index, rollout_index=rollout_index, agent="weather", model="openai:gpt-test",
        response=body, reward=reward, metrics=metrics, turns=turns, tool_calls=len(calls),
        stop_reason=None if error else "completed", timing=Timing(total_s=seconds, model_s=seconds / 2),
        error=error))


def weather_turn(city: str, call_id: str, answer: str, asked: str | None = None) -> list[dict]:
    return [call("get_weather", call_id, city=asked or city),
            output(call_id, {"city": asked or city, "temperature_c": 21, "conditions": "rainy"}),
            message(answer)]


def sample_rollouts() -> list[dict]:
    """12 rollouts, 4 tasks x 3 repeats, covering what the pages must show:

    task 0 (San Francisco): all pass (zero variance); task 1 (Paris): mixed, repeat 1 asks for
    the wrong city; task 2 (Oslo): all fail, repeat 0 answers with a <script> tag, after
    reasoning; task 3 (Lima): a model error, a 3-turn rollout with two tools and a plain-text
    tool output, and a pass."""
    return [
        rollout(0, 0, "San Francisco", weather_turn("San Francisco", "c00", "It is 21°C and rainy in SF."), 1.0),
        rollout(0, 1, "San Francisco", weather_turn("San Francisco", "c01", "SF: 21°C, rainy."), 1.0, seconds=3.0),
        rollout(0, 2, "San Francisco", weather_turn("San Francisco", "c02", "Rainy, 21°C."), 1.0, tokens=(300, 50)),
        rollout(1, 0, "Paris", weather_turn("Paris", "c10", "Paris: 21°C and rainy."), 1.0),
        rollout(1, 1, "Paris", weather_turn("Paris", "c11", "Parris is rainy.", asked="Parris"), 0.0),
        rollout(1, 2, "Paris", weather_turn("Paris", "c12", "21°C in Paris."), 1.0),
        rollout(2, 0, "Oslo", [reasoning("The user wants Oslo; I will answer with markup."),
                               message(f"Here you go: {XSS} and a \"quoted\" word")], 0.0, turns=1),
        rollout(2, 1, "Oslo", [message("I cannot check the weather.")], 0.0, turns=1),
        rollout(2, 2, "Oslo", [message("No idea, sorry.")], 0.0, turns=1),
        rollout(3, 0, "Lima", None, None, turns=0, tokens=(0, 0),
                error={"type": "model", "kind": "timeout", "status": None, "message": "model timed out after 60s"}),
        rollout(3, 1, "Lima", [call("search_docs", "c31a", query="Lima climate"),
                               output("c31a", "Lima: mild, dry, foggy in winter (garúa)."),
                               call("get_weather", "c31b", city="Lima"), output("c31b", {"city": "Lima"}),
                               message("Probably foggy.")], 0.5, turns=3, tokens=(900, 80), seconds=9.0),
        rollout(3, 2, "Lima", weather_turn("Lima", "c32", "Lima is 21°C."), 1.0),
    ]


def write_rollouts(path: Path, rows: list[dict] | None = None) -> Path:
    rows = sample_rollouts() if rows is None else rows
    path.write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in rows))
    return path


class Page(HTMLParser):
    """The parts of a viewer page the tests look at: table rows (cell texts), links, the
    checked-for-compare line numbers, element ids, the text of each <pre> as it is, event
    handler attributes (there must be none), and all visible text."""

    def __init__(self, html: str):
        super().__init__()
        self.rows: list[list[str]] = []
        self.links: list[str] = []
        self.picks: list[int] = []
        self.ids: set[str] = set()
        self.text: list[str] = []
        self.tags: list[str] = []
        self.pres: list[str] = []
        self.handlers: list[tuple[str, str]] = []
        self._pre: list[str] | None = None
        self._cell: list[str] | None = None
        self._row: list[str] | None = None
        self._in_tbody = False
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        self.handlers += [(tag, name) for name, _ in attrs.items() if name.startswith("on")]
        if tag == "pre":
            self._pre = []
        if attrs.get("id"):
            self.ids.add(attrs["id"])
        if tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])
        if tag == "input" and attrs.get("name") == "pick":
            self.picks.append(int(attrs["value"]))
        if tag == "tbody":
            self._in_tbody = True
        elif tag == "tr" and self._in_tbody:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "pre" and self._pre is not None:
            self.pres.append("".join(self._pre))
            self._pre = None
        if tag == "tbody":
            self._in_tbody = False
        elif tag in ("td", "th") and self._row is not None and self._cell is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.rows.append(self._row)
            self._row = None

    def handle_data(self, data):
        self.text.append(data)
        if self._pre is not None:
            self._pre.append(data)
        if self._cell is not None:
            self._cell.append(data)

    @property
    def all_text(self) -> str:
        return " ".join(" ".join(self.text).split())


def failure(task_index: int, rollout_index: int, klass: str, invocation: int, city: str = "Quito") -> dict:
    """A failures-sidecar line as ``gym collect`` writes it (runfiles.failure_record)."""
    kind, _, detail = klass.partition(":")
    return {"responses_create_params": {"input": f"weather in {city}?"}, "verifier_metadata": {"expected_city": city},
            "task_index": task_index, "rollout_index": rollout_index, "agent": "weather", "model": "openai:gpt-test",
            "class": klass, "message": f"{klass} on invocation {invocation} <b>not bold</b>", "attempts": 3,
            "invocation": invocation, "elapsed_s": 1.0, "error": {"type": kind, "kind": detail or None}}


def resumed_run(directory: Path) -> Path:
    """A run of 6 tasks x 2 repeats, collected, then resumed once (invocation 2).

    task 0: both pass; task 1: 0.5 on both repeats (under the pass threshold); task 2:
    repeat 1 failed on invocation 1 and was redone (scored 0.0) by the resume; task 3:
    repeat 0 failed on both invocations (still outstanding), repeat 1 passed; task 4 (in no
    output line): both repeats failed on both invocations; task 5: 0.5 then 1.0.
    So 12 rollouts: 9 scored, 3 failed now; 7 sidecar records, of which 1 redone and 3
    retried and failed again. pass@k over the 4 tasks with every repeat scored (0, 1, 2, 5),
    2 left out: pass@1 = (1 + 0 + 0.5 + 0.5) / 4, pass@2 = (1 + 0 + 1 + 1) / 4."""
    def scored(task: int, repeat: int, city: str, reward: float) -> dict:
        return rollout(task, repeat, city, weather_turn(city, f"c{task}{repeat}", f"{city}: 21°C."), reward)
    lines = [scored(0, 0, "Paris", 1.0), scored(0, 1, "Paris", 1.0),
             scored(1, 0, "Lima", 0.5), scored(1, 1, "Lima", 0.5),
             scored(2, 0, "Oslo", 1.0), scored(3, 1, "Rome", 1.0),
             scored(5, 0, "Cairo", 0.5), scored(5, 1, "Cairo", 1.0),
             scored(2, 1, "Oslo", 0.0)]  # the resume's redo of task 2 repeat 1
    write_rollouts(directory / "run.jsonl", lines)
    sidecar = [failure(2, 1, "model:503", 1, "Oslo"), failure(3, 0, "timeout", 1, "Rome"),
               failure(4, 0, "model:500", 1), failure(4, 1, "model:500", 1),
               failure(3, 0, "timeout", 2, "Rome"), failure(4, 0, "model:500", 2), failure(4, 1, "model:500", 2)]
    (directory / "run.failures.jsonl").write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in sidecar))
    return directory / "run.jsonl"
