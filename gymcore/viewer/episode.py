"""One rollout line as the viewer shows it: input, tools offered, steps, verdict, usage.

The episode in ``response.output`` is a flat list of items; it is cut into steps the way
the agent loop produced them (a step is one model reply, then the outputs of the tools it
called), and each tool output is put next to the call it answers. All text stays plain
text: templates escape it.
"""

from __future__ import annotations

import json
from typing import Any

import attrs
import orjson

from .index import Fields, line_fields

MODEL_ITEMS = ("message", "reasoning", "function_call")


def pretty_json(value: Any) -> str:
    """Indented JSON for display (non-ASCII kept readable)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return json.dumps(value, indent=2, ensure_ascii=False, default=repr)


def pretty_text(text: Any) -> tuple[str, bool]:
    """``(display text, is_json)``: JSON text comes back indented, anything else as it is."""
    if not isinstance(text, str):
        return pretty_json(text), True
    stripped = text.lstrip()
    if stripped[:1] in ("{", "["):
        try:
            return pretty_json(orjson.loads(text)), True
        except orjson.JSONDecodeError:
            pass
    return text, False


def content_text(content: Any) -> str:
    """The text of a message's ``content``: a string, or a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict):
                text = part.get("text", part.get("refusal"))
                parts.append(text if isinstance(text, str) else f"[{part.get('type', 'part')}] {pretty_json(part)}")
        return "\n".join(parts)
    return "" if content is None else pretty_json(content)


def reasoning_text(item: dict[str, Any]) -> str:
    parts = []
    for key in ("summary", "content"):
        value = item.get(key)
        if isinstance(value, list):
            parts.extend(p.get("text", "") for p in value if isinstance(p, dict) and p.get("text"))
        elif isinstance(value, str) and value:
            parts.append(value)
    if not parts and item.get("encrypted_content"):
        parts.append(f"[encrypted reasoning, {len(str(item['encrypted_content']))} characters]")
    return "\n\n".join(parts)


@attrs.define
class Item:
    """One thing shown in a step. ``kind``: message, reasoning, call, output (a tool output
    with no matching call) or other (an item type the viewer does not know)."""

    kind: str
    text: str = ""
    role: str = ""
    name: str = ""
    call_id: str = ""
    arguments: str = ""
    arguments_ok: bool = True
    output: str | None = None
    output_is_json: bool = False
    final: bool = False

    def signature(self) -> tuple:
        """What makes two items the same, for compare."""
        return (self.kind, self.role, self.name, self.text, self.arguments, self.output)


@attrs.define
class Step:
    number: int
    items: list[Item] = attrs.field(factory=list)

    def signature(self) -> tuple:
        return tuple(item.signature() for item in self.items)


def make_item(raw: Any) -> Item:
    if not isinstance(raw, dict):
        return Item(kind="other", text=pretty_json(raw))
    kind = raw.get("type") or ("message" if "role" in raw else None)
    if kind == "message":
        return Item(kind="message", role=str(raw.get("role", "")), text=content_text(raw.get("content")))
    if kind == "reasoning":
        return Item(kind="reasoning", text=reasoning_text(raw))
    if kind == "function_call":
        arguments = raw.get("arguments", "")
        shown, is_json = pretty_text(arguments)
        return Item(kind="call", name=str(raw.get("name", "")), call_id=str(raw.get("call_id", "")),
                    arguments=shown, arguments_ok=is_json or arguments in ("", None))
    if kind == "function_call_output":
        text, is_json = pretty_text(raw.get("output", ""))
        return Item(kind="output", call_id=str(raw.get("call_id", "")), output=text, output_is_json=is_json)
    return Item(kind="other", name=str(kind or "item"), text=pretty_json(raw))


def split_steps(output: list[Any]) -> list[Step]:
    """Cut an episode into model steps, attaching each tool output to its call."""
    steps: list[Step] = []
    calls: dict[str, Item] = {}
    after_outputs = True
    for raw in output:
        item = make_item(raw)
        if item.kind == "output":
            call = calls.get(item.call_id)
            if call is not None and call.output is None:
                call.output, call.output_is_json = item.output, item.output_is_json
            else:
                if not steps:
                    steps.append(Step(1))
                steps[-1].items.append(item)
            after_outputs = True
            continue
        if after_outputs or not steps:
            steps.append(Step(len(steps) + 1))
            after_outputs = False
        steps[-1].items.append(item)
        if item.kind == "call" and item.call_id:
            calls[item.call_id] = item
    if steps:
        for item in reversed(steps[-1].items):
            if item.kind == "message" and item.role in ("assistant", ""):
                item.final = True
                break
    return steps


@attrs.define
class Tool:
    name: str
    kind: str
    description: str
    parameters: str


@attrs.define
class Episode:
    """Everything the one-rollout page shows."""

    line: dict[str, Any]
    fields: Fields
    input: list[Item]
    instructions: str | None
    tools: list[Tool]
    steps: list[Step]
    final_answer: str | None
    metrics: list[tuple[str, Any]]
    usage: list[tuple[str, Any]]
    timing: list[tuple[str, Any]]
    request: list[tuple[str, str]]
    row: list[tuple[str, str]]
    raw: str


ROLLOUT_KEYS = frozenset({"responses_create_params", "response", "reward", "metric_names", "task_index",
                          "rollout_index", "agent", "model", "turns", "tool_calls", "tool_errors",
                          "stop_reason", "timing", "error"})


def flatten(value: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for key, sub in value.items():
        if isinstance(sub, dict):
            out.extend(flatten(sub, f"{prefix}{key}."))
        else:
            out.append((f"{prefix}{key}", sub))
    return out


def episode(line: Any) -> Episode:
    """Read a parsed output line for display; any shape is tolerated."""
    if not isinstance(line, dict):
        line = {"(not an object)": line}
    fields = line_fields(line)
    params = line.get("responses_create_params") if isinstance(line.get("responses_create_params"), dict) else {}
    response = line.get("response") if isinstance(line.get("response"), dict) else {}
    raw_input = params.get("input", [])
    input_items = [Item(kind="message", role="user", text=raw_input)] if isinstance(raw_input, str) else \
        [make_item(item) for item in raw_input] if isinstance(raw_input, list) else []
    tools = []
    for tool in params.get("tools") or response.get("tools") or []:
        if isinstance(tool, dict):
            tools.append(Tool(name=str(tool.get("name", tool.get("type", ""))), kind=str(tool.get("type", "")),
                              description=str(tool.get("description") or ""),
                              parameters=pretty_json(tool.get("parameters", {}))))
    output = response.get("output") if isinstance(response.get("output"), list) else []
    steps = split_steps(output)
    final = next((item.text for step in steps[-1:] for item in step.items if item.final), None)
    names = line.get("metric_names") if isinstance(line.get("metric_names"), list) else list(fields.metrics)
    metrics = [("reward", line.get("reward"))] + [(name, line.get(name)) for name in names if name in line]
    metric_keys = {name for name, _ in metrics}
    request = [(key, pretty_json(value) if isinstance(value, (dict, list)) else json.dumps(value))
               for key, value in params.items() if key not in ("input", "tools")]
    row = [(key, pretty_json(value)) for key, value in line.items()
           if key not in ROLLOUT_KEYS and key not in metric_keys]
    return Episode(
        line=line, fields=fields, input=input_items,
        instructions=params.get("instructions") if isinstance(params.get("instructions"), str) else None,
        tools=tools, steps=steps, final_answer=final, metrics=metrics,
        usage=flatten(fields.usage), timing=flatten(line["timing"]) if isinstance(line.get("timing"), dict) else [],
        request=request, row=row, raw=pretty_json(line),
    )


@attrs.define
class CompareRow:
    """One aligned step of a compare: the two sides, and whether they differ."""

    number: int
    a: Step | None
    b: Step | None
    differs: bool
    first_difference: bool
    first_item: int | None  # index of the first differing item within the step


def align(a: list[Step], b: list[Step]) -> tuple[list[CompareRow], int | None]:
    """Steps side by side, index by index; returns the rows and the first differing step."""
    rows = []
    first = None
    for i in range(max(len(a), len(b))):
        sa = a[i] if i < len(a) else None
        sb = b[i] if i < len(b) else None
        differs = sa is None or sb is None or sa.signature() != sb.signature()
        first_item = None
        if differs and first is None:
            first = i + 1
            items_a = sa.items if sa else []
            items_b = sb.items if sb else []
            first_item = next((k for k in range(max(len(items_a), len(items_b)))
                               if k >= len(items_a) or k >= len(items_b)
                               or items_a[k].signature() != items_b[k].signature()), 0)
        rows.append(CompareRow(i + 1, sa, sb, differs, differs and first == i + 1, first_item))
    return rows, first


def snippets(line: Any) -> tuple[str, str]:
    """(the last user message, the final answer) of a line, for a list row."""
    if not isinstance(line, dict):
        return "", ""
    params = line.get("responses_create_params") if isinstance(line.get("responses_create_params"), dict) else {}
    raw_input = params.get("input")
    prompt = raw_input if isinstance(raw_input, str) else ""
    if isinstance(raw_input, list):
        for item in reversed(raw_input):
            if isinstance(item, dict) and item.get("role") == "user":
                prompt = content_text(item.get("content"))
                break
    response = line.get("response") if isinstance(line.get("response"), dict) else {}
    output = response.get("output") if isinstance(response.get("output"), list) else []
    answer = ""
    for item in reversed(output):
        if isinstance(item, dict) and item.get("type") == "message":
            answer = content_text(item.get("content"))
            break
        if isinstance(item, dict) and item.get("type") == "function_call":
            answer = f"[stopped after calling {item.get('name')}]"
            break
    error = line.get("error")
    if not answer and isinstance(error, dict):
        answer = f"[{error.get('type', 'error')}] {error.get('message', '')}"
    return prompt, answer
