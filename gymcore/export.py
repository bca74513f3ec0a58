"""``gym export``: scored rollouts out of a run file, in a trainer's format.

* ``sft``: one OpenAI chat-format fine-tuning row per rollout (``messages`` with
  ``tool_calls`` and ``tool`` messages, plus ``tools``), for rejection-sampling SFT with
  ``--min-reward``. Built from the episode's items; token fields and reasoning are left out
  (the chat fine-tuning format has no place for them), trailing tool output too (an SFT
  example ends with what the model said).
* ``sequences``: the rows of :func:`gymcore.training.to_sequences` (token ids, loss mask,
  logprobs), one JSON line each; needs a run collected with ``--return-tokens``.

Failures are never exported: a line with ``error`` set or no ``reward`` is skipped (the
output file holds none, but a file of another origin might), and the failures sidecar is
never read. The output is written beside its final name and renamed into place when
complete, so a bad line met halfway leaves no half-written file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import attrs
import orjson

from .errors import GymError
from .runfiles import read_complete_lines

FORMATS = ("sft", "sequences")


@attrs.define
class ExportStats:
    rollouts: int = 0
    rows: int = 0
    failures: int = 0
    below_min_reward: int = 0

    def summary(self, fmt: str, output: Path) -> str:
        return (f"gym export: wrote {self.rows} {fmt} rows from {self.rollouts} rollouts to {output} "
                f"(skipped {self.failures} failures, {self.below_min_reward} below --min-reward)")


def _text(content: Any) -> Any:
    """Chat ``content`` from Responses content: a string, or chat parts when there are images."""
    if content is None or isinstance(content, str):
        return content
    parts = []
    for part in content:
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind in ("input_text", "output_text", "text"):
            parts.append({"type": "text", "text": part.get("text", "")})
        elif kind == "refusal":
            parts.append({"type": "text", "text": part.get("refusal", "")})
        elif kind == "input_image":
            parts.append({"type": "image_url", "image_url": {"url": part.get("image_url") or part.get("url")}})
    if all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts)
    return parts


_ROLES = {"developer": "system", "system": "system", "user": "user", "assistant": "assistant"}


def chat_messages(line: dict[str, Any]) -> list[dict[str, Any]]:
    """The whole episode of an output line as chat messages: instructions, the task's input,
    then what the model said and the tools answered."""
    params = line.get("responses_create_params") or {}
    messages: list[dict[str, Any]] = []
    if params.get("instructions"):
        messages.append({"role": "system", "content": params["instructions"]})
    task_input = params.get("input") or []
    if isinstance(task_input, str):
        task_input = [{"role": "user", "content": task_input}]
    output = (line.get("response") or {}).get("output") or []
    for item in [*task_input, *output]:
        kind = item.get("type", "message")
        if kind == "message":
            messages.append({"role": _ROLES.get(item.get("role"), "user"), "content": _text(item.get("content"))})
        elif kind == "function_call":
            call = {"id": item.get("call_id"), "type": "function",
                    "function": {"name": item.get("name"), "arguments": item.get("arguments") or "{}"}}
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output_value = item.get("output")
            messages.append({"role": "tool", "tool_call_id": item.get("call_id"),
                             "content": output_value if isinstance(output_value, str) else _text(output_value)})
        # reasoning items and others: not part of the chat fine-tuning format
    while messages and messages[-1]["role"] != "assistant":
        messages.pop()
    return messages


def chat_tools(line: dict[str, Any]) -> list[dict[str, Any]]:
    """The function tools the model was offered, in Chat Completions' shape."""
    tools = (line.get("response") or {}).get("tools") or (line.get("responses_create_params") or {}).get("tools") or []
    out = []
    for tool in tools:
        if isinstance(tool, dict) and tool.get("type", "function") == "function":
            if "function" in tool:  # already chat-shaped
                out.append(tool)
            else:
                out.append({"type": "function", "function": {
                    k: tool[k] for k in ("name", "description", "parameters", "strict") if k in tool}})
    return out


def sft_row(line: dict[str, Any]) -> dict[str, Any] | None:
    """One fine-tuning row, or ``None`` if the model said nothing."""
    messages = chat_messages(line)
    if not messages:
        return None
    row: dict[str, Any] = {"messages": messages}
    tools = chat_tools(line)
    if tools:
        row["tools"] = tools
    return row


def export(path: Path, output: Path, fmt: str, *, min_reward: float | None = None,
           on_drift: str = "fork") -> ExportStats:
    """Write ``fmt`` rows of the scored rollouts in ``path`` to ``output``."""
    from .training.sequences import DriftError, to_sequences

    if fmt not in FORMATS:
        raise GymError(f"unknown export format {fmt!r} (known: {', '.join(FORMATS)})")
    if not path.is_file():
        raise GymError(f"{path}: no such file")
    if output.resolve() == path.resolve():
        raise GymError(f"refusing to write the export over its input {path}")
    stats = ExportStats()
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".partial")
    try:
        with open(partial, "wb") as out:
            # a killed run's torn last line is skipped with a warning, as resume does
            for number, line in read_complete_lines(path, repair=False):
                if line.get("error") is not None or line.get("reward") is None:
                    stats.failures += 1
                    continue
                if min_reward is not None and line["reward"] < min_reward:
                    stats.below_min_reward += 1
                    continue
                stats.rollouts += 1
                if fmt == "sft":
                    rows = [row] if (row := sft_row(line)) is not None else []
                else:
                    try:
                        rows = to_sequences(line, on_drift=on_drift)  # type: ignore[arg-type]
                    except DriftError as exc:
                        raise GymError(f"{path}:{number}: {exc}") from None
                    except ValueError as exc:
                        raise GymError(f"{path}:{number}: {exc}") from None
                for row in rows:
                    out.write(orjson.dumps(row) + b"\n")
                    stats.rows += 1
        os.replace(partial, output)
    finally:
        partial.unlink(missing_ok=True)
    return stats


__all__ = ["export", "sft_row", "chat_messages", "chat_tools", "FORMATS"]
