"""``gym collect --estimate N``: run N rollouts spread over the tasks, then project the whole run.

The pilot is the start of the real run: its rollouts are written like any others, and
``--resume`` continues from them. From the pilot, per rollout: its duration, model calls,
input and output tokens, and whether it failed. The projection multiplies the pilot's mean
by the run's size, with a percentile bootstrap interval over the pilot's rollouts (the
rollout is the unit), so a spread-out pilot gives a wide interval and a steady one a
narrow one. The failure rate's interval is Wilson's score interval, which stays honest at 0
failures in N (a bootstrap of all-zero samples would say [0, 0]).

Wall time assumes the run keeps ``parallel`` rollouts in flight: the whole run's rollouts
times their mean duration, over ``parallel``, plus half a rollout for the last wave. It
ignores start-up and a server that slows under a load the pilot never put on it. Costs
come only from prices the user gives (``--price-in`` / ``--price-out`` per million
tokens): prices change, and a table in the code would be wrong without anyone noticing.
"""

from __future__ import annotations

import math
from typing import Any

import attrs

from .data import Rollout

#: Bootstrap resamples; a seed, so the same pilot gives the same intervals.
RESAMPLES = 4000
SEED = 0
CONFIDENCE = 0.95


def pilot_ranks(size: int, tasks: int, repeats: int) -> list[set[int]]:
    """For each repeat, which tasks (by rank among the valid ones) the pilot runs: first
    repeat 0 of up to ``size`` tasks evenly spaced over the input, then repeat 1, ...; so a
    pilot smaller than the input still sees its beginning, middle and end."""
    chosen: list[set[int]] = []
    left = size
    for _ in range(repeats):
        take = min(left, tasks)
        chosen.append({(i * tasks) // take for i in range(take)} if take else set())
        left -= take
    return chosen


@attrs.define
class PilotSamples:
    """Per-rollout figures of the pilot, in finishing order."""

    seconds: list[float] = attrs.field(factory=list)
    calls: list[int] = attrs.field(factory=list)
    input_tokens: list[int] = attrs.field(factory=list)
    output_tokens: list[int] = attrs.field(factory=list)
    failed: list[bool] = attrs.field(factory=list)

    def add(self, rollout: Rollout) -> None:
        usage = (rollout.response or {}).get("usage") or {}
        self.seconds.append(rollout.timing.total_s)
        self.calls.append(rollout.turns)
        self.input_tokens.append(usage.get("input_tokens", 0) or 0)
        self.output_tokens.append(usage.get("output_tokens", 0) or 0)
        self.failed.append(rollout.error is not None)

    def __len__(self) -> int:
        return len(self.seconds)


def wilson(failures: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson's score interval of a proportion."""
    from statistics import NormalDist

    if n == 0:
        return 0.0, 1.0
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = failures / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (0.0 if failures == 0 else max(0.0, centre - half)), (1.0 if failures == n else min(1.0, centre + half))


def project(samples: PilotSamples, rollouts: int, parallel: int, price_in: float | None = None,
            price_out: float | None = None) -> dict[str, Any]:
    """The whole run of ``rollouts`` at ``parallel`` in flight, projected from the pilot:
    ``{figure: {"estimate": x, "low": a, "high": b}}`` plus what it was computed from."""
    import numpy as np

    n = len(samples)
    if n == 0:
        raise ValueError("no pilot rollout finished: nothing to project from")
    rng = np.random.default_rng(SEED)
    picks = rng.integers(0, n, size=(RESAMPLES, n))  # the same resamples for every figure
    tail = (1 - CONFIDENCE) / 2 * 100

    def figure(values: Any, scale: float, offset: float = 0.0, digits: int = 1) -> dict[str, float]:
        values = np.asarray(values, dtype=float)
        means = values[picks].mean(axis=1)
        low, high = np.percentile(means, [tail, 100 - tail])
        return {"estimate": round(float(values.mean()) * scale + offset, digits),
                "low": round(float(low) * scale + offset, digits), "high": round(float(high) * scale + offset, digits)}

    in_flight = max(1, min(parallel, rollouts)) if parallel > 0 else max(rollouts, 1)
    seconds = np.asarray(samples.seconds, dtype=float)
    # rollouts / in_flight waves of mean duration, plus half a rollout for the last, ragged wave
    waves = rollouts / in_flight + 0.5 if rollouts > in_flight else 1.0
    projection: dict[str, Any] = {
        "pilot_rollouts": n,
        "rollouts": rollouts,
        "parallel": in_flight,
        "confidence": CONFIDENCE,
        "wall_s": figure(seconds, waves),
        "model_calls": figure(samples.calls, rollouts, digits=0),
        "input_tokens": figure(samples.input_tokens, rollouts, digits=0),
        "output_tokens": figure(samples.output_tokens, rollouts, digits=0),
    }
    failures = sum(samples.failed)
    low, high = wilson(failures, n)
    projection["failure_rate"] = {"estimate": round(failures / n, 4), "low": round(low, 4), "high": round(high, 4)}
    if price_in is not None or price_out is not None:
        cost = (np.asarray(samples.input_tokens, dtype=float) * (price_in or 0.0)
                + np.asarray(samples.output_tokens, dtype=float) * (price_out or 0.0)) / 1e6
        projection["cost"] = figure(cost, rollouts, digits=4)
        projection["prices_per_million_tokens"] = {"input": price_in, "output": price_out}
    return projection


def format_projection(projection: dict[str, Any]) -> str:
    """The projection as lines for the terminal."""
    lines = [f"projected from a pilot of {projection['pilot_rollouts']} rollouts, for the whole run of "
             f"{projection['rollouts']} at --parallel {projection['parallel']} "
             f"({projection['confidence']:.0%} intervals):"]
    units = {"wall_s": ("wall time", "s"), "model_calls": ("model calls", ""), "input_tokens": ("input tokens", ""),
             "output_tokens": ("output tokens", ""), "failure_rate": ("failure rate", ""), "cost": ("cost", "")}
    for key, (label, unit) in units.items():
        value = projection.get(key)
        if value is None:
            continue
        if key == "failure_rate":
            text = f"{value['estimate']:.1%} ({value['low']:.1%} to {value['high']:.1%})"
        elif key == "cost":
            text = f"{value['estimate']:,.4f} ({value['low']:,.4f} to {value['high']:,.4f}) at the given prices"
        else:
            text = f"{value['estimate']:,.{0 if abs(value['estimate']) >= 100 else 1}f}{unit} " \
                   f"({value['low']:,.{0 if abs(value['low']) >= 100 else 1}f} to " \
                   f"{value['high']:,.{0 if abs(value['high']) >= 100 else 1}f}{unit})"
        lines.append(f"  {label:>13}: {text}")
    return "\n".join(lines)
