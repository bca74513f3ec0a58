"""Run-level statistics: mean reward, pass@k with the unbiased estimator, tokens, failures.

Kept as running sums plus two small integers per task, so memory does not grow with the
number of rollouts per task.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from math import comb
from typing import Any

import attrs

from .data import Rollout

#: A rollout "passes" (for pass@k) when its reward reaches this, unless ``--pass-threshold``
#: says otherwise (rewards may be any finite number).
PASS_THRESHOLD = 1.0


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one task with ``n`` samples of which ``c`` passed (Chen et al.)."""
    if k > n:
        raise ValueError(f"k={k} exceeds n={n}")
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def failure_class(error: dict[str, Any] | None) -> str:
    """A failed rollout's class, for summaries and the failures sidecar: ``model:503``,
    ``model:connection``, ``model:auth``, ``plugin:verify``, ``judge:503``, ``timeout``, ``server:timeout``, ..."""
    error = error or {}
    kind = error.get("type") or "unknown"
    if kind in ("model", "judge", "server"):  # an HTTP status says more than "http": model:503, server:413
        detail = error.get("status") if error.get("kind") == "http" and error.get("status") else error.get("kind")
    elif kind == "plugin":
        detail = error.get("hook") or error.get("kind")
    else:
        detail = error.get("kind")
    return f"{kind}:{detail}" if detail else kind


#: How much of a failure message a sample keeps.
SAMPLE_CHARS = 500
_CONTROL_OR_SPACE = re.compile(r"[\s\x00-\x1f\x7f-\x9f]+")


def sample_message(message: Any) -> str:
    """A failure message fit for one terminal line: whitespace and control characters (a
    server's error body is untrusted) collapsed to single spaces, at most SAMPLE_CHARS."""
    text = _CONTROL_OR_SPACE.sub(" ", str(message or "")).strip()
    return text if len(text) <= SAMPLE_CHARS else text[:SAMPLE_CHARS - 1] + "…"


#: The per-rollout figures summed for scored and, apart, for failed rollouts.
FIGURES = ("turns", "tool_calls", "tool_errors", "input_tokens", "output_tokens", "cached_tokens", "total_tokens")


def usage_figures(usage: dict[str, Any] | None) -> dict[str, int]:
    """The token counts of a Responses ``usage`` object; cached input tokens from
    ``input_tokens_details.cached_tokens``. Missing or odd values count as 0."""
    usage = usage if isinstance(usage, dict) else {}
    details = usage.get("input_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None

    def count(value: Any) -> int:
        return value if isinstance(value, int) and not isinstance(value, bool) else 0
    return {"input_tokens": count(usage.get("input_tokens")), "output_tokens": count(usage.get("output_tokens")),
            "cached_tokens": count(cached), "total_tokens": count(usage.get("total_tokens"))}


def outcome(status: str, failed: int) -> str:
    """``status`` as people read it: "completed with 12 failures" rather than "completed"."""
    if not failed:
        return status
    return f"{status} with {failed} failure{'' if failed == 1 else 's'}"


@attrs.define
class RunStats:
    """Accumulates rollouts as they finish; :meth:`summary` gives the report.

    pass@k is folded into running sums as soon as all ``repeats`` of a task are in, so
    memory holds only the tasks still in flight, however long the run. A resumed run first
    feeds it the lines already in the output (:meth:`add_line`).

    Turns, tool calls and tokens are summed for scored rollouts and, apart, for failed
    ones: a failed rollout's partial episode is no part of the scored data.
    """

    repeats: int = 1
    #: a rollout passes when its reward is at least this (``--pass-threshold``)
    threshold: float = PASS_THRESHOLD
    rollouts: int = 0
    resumed: int = 0
    scored: int = 0
    reward_sum: float = 0.0
    scored_figures: Counter = attrs.field(factory=Counter)
    failed_figures: Counter = attrs.field(factory=Counter)
    failures: Counter = attrs.field(factory=Counter)
    failure_samples: dict[str, str] = attrs.field(factory=dict)  # class -> its first message
    judge_input_tokens: int = 0
    judge_output_tokens: int = 0
    tasks_done: int = 0
    open_tasks: dict[int, list[int]] = attrs.field(factory=dict)  # task_index -> [seen, scored, passed]
    pass_sums: dict[int, float] = attrs.field(factory=dict)  # k -> sum over tasks of pass@k
    pass_tasks: int = 0  # finished tasks with every repeat scored (the tasks pass@k is over)

    def add(self, rollout: Rollout) -> None:
        self._add_judge(rollout.judge_usage)
        self._add(rollout.task_index, rollout.reward, rollout.error, rollout.turns, rollout.tool_calls,
                  rollout.tool_errors, (rollout.response or {}).get("usage"))

    def add_line(self, line: dict[str, Any]) -> None:
        """Count a rollout already in the output of a resumed run."""
        self.resumed += 1
        self._add_judge(line.get("judge_usage"))
        self._add(line.get("task_index"), line.get("reward"), line.get("error"), line.get("turns") or 0,
                  line.get("tool_calls") or 0, line.get("tool_errors") or 0,
                  (line.get("response") or {}).get("usage"))

    def _add_judge(self, usage: dict[str, Any] | None) -> None:
        """The judge's tokens, kept apart from the policy's."""
        if usage:
            self.judge_input_tokens += usage.get("input_tokens", 0) or 0
            self.judge_output_tokens += usage.get("output_tokens", 0) or 0

    def _add(self, task_index: Any, reward: float | None, error: dict[str, Any] | None, turns: int,
             tool_calls: int, tool_errors: int, usage: dict[str, Any] | None) -> None:
        self.rollouts += 1
        failed = error is not None or reward is None
        figures = self.failed_figures if failed else self.scored_figures
        figures.update({"turns": turns, "tool_calls": tool_calls, "tool_errors": tool_errors, **usage_figures(usage)})
        counts = self.open_tasks.setdefault(task_index, [0, 0, 0])
        counts[0] += 1
        if failed:
            cls = failure_class(error)
            self.failures[cls] += 1
            if cls not in self.failure_samples:
                self.failure_samples[cls] = sample_message((error or {}).get("message"))
        else:
            self.scored += 1
            self.reward_sum += reward
            counts[1] += 1
            counts[2] += reward >= self.threshold
        if counts[0] >= self.repeats:
            del self.open_tasks[task_index]
            self.tasks_done += 1
            if counts[1] >= self.repeats:  # every repeat scored: the task enters pass@k
                self.pass_tasks += 1
                for k in range(1, self.repeats + 1):
                    self.pass_sums[k] = self.pass_sums.get(k, 0.0) + pass_at_k(counts[1], counts[2], k)

    @property
    def mean_reward(self) -> float | None:
        return self.reward_sum / self.scored if self.scored else None

    def _pass(self) -> tuple[int, dict[int, float], int]:
        """``(repeats, sums, tasks)`` for pass@k. ``repeats`` of ``sys.maxsize`` means not
        known up front (``gym verify``): nothing was folded, and a task counts when every
        one of its repeats is scored and it has as many as the task with the most."""
        if self.repeats < sys.maxsize:
            return self.repeats, self.pass_sums, self.pass_tasks
        repeats = max((seen for seen, _n, _c in self.open_tasks.values()), default=0)
        sums: dict[int, float] = {}
        tasks = 0
        for seen, n, c in self.open_tasks.values():
            if n == seen == repeats:
                tasks += 1
                for k in range(1, repeats + 1):
                    sums[k] = sums.get(k, 0.0) + pass_at_k(n, c, k)
        return repeats, sums, tasks

    def pass_at(self) -> dict[str, float | None]:
        """pass@k for k = 1 .. repeats over the tasks with every repeat scored (None when
        there is none). A task with a failed repeat, or cut short, is left out of every k:
        kept in, it would enter pass@1 on fewer samples and the larger k not at all."""
        repeats, sums, tasks = self._pass()
        return {f"pass@{k}": sums.get(k, 0.0) / tasks if tasks else None for k in range(1, repeats + 1)}

    def summary(self, wall_s: float, **extra: Any) -> dict[str, Any]:
        failed = sum(self.failures.values())
        tasks = self.tasks_done + len(self.open_tasks)
        scored = self.scored_figures
        if "status" in extra:  # "completed with 12 failures"; ``status`` itself stays one word for scripts
            extra = {"status": extra["status"], "outcome": outcome(extra["status"], failed), **extra}
        return {
            **extra,
            "rollouts": self.rollouts,
            "resumed": self.resumed,
            "scored": self.scored,
            "failed": failed,
            "failures": dict(self.failures),
            "failure_samples": dict(self.failure_samples),
            "tasks": tasks,
            "mean_reward": self.mean_reward,
            **self.pass_at(),
            "pass_threshold": self.threshold,
            "pass_at_k_tasks": self._pass()[2],
            "pass_at_k_left_out": tasks - self._pass()[2],
            # the scored rollouts' figures; the failed ones' apart (this invocation's and resumed lines)
            "mean_turns": scored["turns"] / self.scored if self.scored else None,
            "tool_calls": scored["tool_calls"],
            "tool_errors": scored["tool_errors"],
            "input_tokens": scored["input_tokens"],
            "output_tokens": scored["output_tokens"],
            "cached_tokens": scored["cached_tokens"],
            "total_tokens": scored["total_tokens"],
            "failed_rollouts": {name: self.failed_figures[name] for name in FIGURES},
            **({"judge_input_tokens": self.judge_input_tokens, "judge_output_tokens": self.judge_output_tokens}
               if self.judge_input_tokens or self.judge_output_tokens else {}),
            "wall_s": round(wall_s, 3),
            # this invocation's pace: rollouts found in the output at resume do not count
            "rollouts_per_s": round((self.rollouts - self.resumed) / wall_s, 2) if wall_s > 0 else None,
        }


#: What a summary figure is over, shown beside it in the terminal (metrics.json keeps the bare value).
SUMMARY_NOTES = {
    "pass_threshold": "a rollout passes at reward >= this",
    "pass_at_k_tasks": "tasks with every repeat scored: pass@k is over these",
    "pass_at_k_left_out": "tasks with a failed or missing repeat",
    **{name: "scored rollouts" for name in ("mean_turns", "tool_calls", "tool_errors", "input_tokens",
                                            "output_tokens", "cached_tokens", "total_tokens")},
    "failed_rollouts": "the failed rollouts' own figures",
}


def format_summary(summary: dict[str, Any]) -> str:
    """The summary as aligned ``key: value`` lines for the terminal; the status reads as
    the outcome ("completed with 12 failures"), and figures say what they count."""
    lines = []
    summary = dict(summary)
    if "outcome" in summary and "status" in summary:  # people read the outcome where the status is
        summary["status"] = summary.pop("outcome")
    width = max(len(k) for k in summary)
    for key, value in summary.items():
        if isinstance(value, float):
            value = f"{value:.4f}"
        elif isinstance(value, dict) and value and all(isinstance(v, str) for v in value.values()):
            value = ("\n" + " " * (width + 2)).join(f"{k}: {v}" for k, v in value.items())  # one per line
        elif isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
            value = ("\n" + " " * (width + 2)).join(  # one line per entry (e.g. per environment)
                f"{k}: " + ", ".join(f"{n}={_short(v)}" for n, v in entry.items()) for k, entry in value.items())
        elif isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items()) or "none"
        note = SUMMARY_NOTES.get(key)
        lines.append(f"{key.rjust(width)}: {value}" + (f"  ({note})" if note else ""))
    return "\n".join(lines)


def _short(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)
