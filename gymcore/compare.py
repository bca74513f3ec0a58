"""``gym compare A B``: does run B beat run A on the same tasks?

The unit of evidence is the task, not the rollout: repeats of one task are correlated, so
counting them as independent manufactures significance. Each task contributes one paired
difference (its mean reward in B minus in A); the confidence interval is a percentile
bootstrap over tasks resampled with replacement (Efron & Tibshirani, ch. 13). Pass/fail
flips are tested with McNemar's exact test, a task passing on a side when at least half of
its scored repeats reach the pass threshold. Failed rollouts are reported per side and never
enter a mean: a task with no scored repeat on a side is left out of the paired figures and
counted. ``docs/compare.md`` has the method at length.
"""

from __future__ import annotations

from math import comb
from typing import Any

from .errors import GymError
from .metrics import PASS_THRESHOLD, pass_at_k
from .outcomes import RunOutcomes, TaskOutcome

DEFAULT_BOOTSTRAP = 10_000
DEFAULT_CONFIDENCE = 0.95


def mcnemar_exact(regressions: int, improvements: int) -> float:
    """Two-sided exact McNemar p-value: a binomial test of the discordant pairs at 1/2."""
    n = regressions + improvements
    if n == 0:
        return 1.0
    tail = sum(comb(n, i) for i in range(min(regressions, improvements) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def paired_bootstrap(diffs: list[float], *, resamples: int, confidence: float, seed: int) -> tuple[float, float]:
    """Percentile interval of the mean of ``diffs`` over ``resamples`` resamplings of the tasks."""
    import numpy as np

    values = np.asarray(diffs, dtype=float)
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    chunk = max(1, 4_000_000 // max(len(values), 1))  # bound memory: chunk x tasks indices at a time
    for start in range(0, resamples, chunk):
        stop = min(start + chunk, resamples)
        means[start:stop] = values[rng.integers(0, len(values), size=(stop - start, len(values)))].mean(axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(low), float(high)


def _pass_at(tasks: list[TaskOutcome], threshold: float) -> dict[str, float]:
    sums: dict[int, float] = {}
    counts: dict[int, int] = {}
    for task in tasks:
        n, c = len(task.rewards), task.passes(threshold)
        for k in range(1, n + 1):
            sums[k] = sums.get(k, 0.0) + pass_at_k(n, c, k)
            counts[k] = counts.get(k, 0) + 1
    return {f"pass@{k}": sums[k] / counts[k] for k in sorted(counts)}


def _side(run: RunOutcomes, tasks: list[TaskOutcome], threshold: float) -> dict[str, Any]:
    means = [task.mean_reward for task in tasks]
    return {
        "file": str(run.path),
        "mean_reward": sum(means) / len(means) if means else None,
        **_pass_at(tasks, threshold),
        "scored": run.scored,
        "failed": run.failed,
        "failures": run.failure_classes,
        "tasks_without_scored_repeats": sum(1 for task in run.tasks.values() if not task.rewards),
    }


def compare_runs(a: RunOutcomes, b: RunOutcomes, *, intersect: bool = False, threshold: float = PASS_THRESHOLD,
                 resamples: int = DEFAULT_BOOTSTRAP, confidence: float = DEFAULT_CONFIDENCE,
                 seed: int = 0) -> dict[str, Any]:
    """The paired comparison of two runs as a JSON-ready dict (see the module docstring)."""
    shared = [key for key in a.tasks if key in b.tasks]
    only_a, only_b = len(a.tasks) - len(shared), len(b.tasks) - len(shared)
    if (only_a or only_b) and not intersect:
        raise GymError(f"the runs are over different tasks: {len(shared)} match, {only_a} only in {a.path}, "
                       f"{only_b} only in {b.path}; pass --intersect to compare the {len(shared)} they share")
    if not shared:
        raise GymError(f"{a.path} and {b.path} have no task in common")
    paired = [key for key in shared if a.tasks[key].rewards and b.tasks[key].rewards]
    if not paired:
        raise GymError("no task has a scored rollout in both runs: nothing to compare")
    tasks_a, tasks_b = [a.tasks[key] for key in paired], [b.tasks[key] for key in paired]
    diffs = [tb.mean_reward - ta.mean_reward for ta, tb in zip(tasks_a, tasks_b)]
    low, high = paired_bootstrap(diffs, resamples=resamples, confidence=confidence, seed=seed)
    flips = []
    for ta, tb, diff in zip(tasks_a, tasks_b, diffs):
        passed_a = ta.passes(threshold) * 2 >= len(ta.rewards)
        passed_b = tb.passes(threshold) * 2 >= len(tb.rewards)
        if passed_a != passed_b:
            flips.append({"task": ta.label, "key": ta.key, "task_index_a": ta.task_index,
                          "task_index_b": tb.task_index, "flip": "regression" if passed_a else "improvement",
                          "mean_reward_a": ta.mean_reward, "mean_reward_b": tb.mean_reward, "difference": diff,
                          "pass_rate_a": ta.pass_rate(threshold), "pass_rate_b": tb.pass_rate(threshold)})
    flips.sort(key=lambda flip: (flip["difference"], flip["task_index_a"]))  # worst first
    regressions = sum(flip["flip"] == "regression" for flip in flips)
    improvements = len(flips) - regressions
    side_a, side_b = _side(a, tasks_a, threshold), _side(b, tasks_b, threshold)
    return {
        "a": side_a,
        "b": side_b,
        "tasks": {"matched": len(shared), "only_in_a": only_a, "only_in_b": only_b, "paired": len(paired),
                  "left_out_unscored": len(shared) - len(paired),
                  "matched_by": "id" if all(key.startswith("id:") for key in shared) else "row content"},
        "pass_threshold": threshold,
        "difference": {
            "mean_reward": sum(diffs) / len(diffs),
            "ci_low": low, "ci_high": high, "confidence": confidence,
            "bootstrap_resamples": resamples, "seed": seed,
            **{key: side_b[key] - side_a[key] for key in side_a if key.startswith("pass@") and key in side_b},
        },
        "mcnemar": {"regressions": regressions, "improvements": improvements,
                    "p_value": mcnemar_exact(regressions, improvements),
                    "task_passes_when": "at least half of its scored repeats pass"},
        "flips": flips,
    }


def verdict(difference: dict[str, Any]) -> str:
    """What the interval says: B better or worse only when it excludes 0."""
    if difference["ci_low"] > 0:
        return "B is better"
    if difference["ci_high"] < 0:
        return "B is worse"
    return "no difference shown at this confidence"


def format_comparison(result: dict[str, Any], *, max_flips: int = 20) -> str:
    """The comparison for the terminal."""
    a, b, d, tasks = result["a"], result["b"], result["difference"], result["tasks"]
    out = [f"A: {a['file']}", f"B: {b['file']}",
           f"tasks: {tasks['matched']} matched by {tasks['matched_by']}, {tasks['paired']} scored in both"
           + (f", {tasks['left_out_unscored']} left out (no scored rollout on a side)" if tasks["left_out_unscored"]
              else "")
           + (f"; {tasks['only_in_a']} only in A, {tasks['only_in_b']} only in B (--intersect)"
              if tasks["only_in_a"] or tasks["only_in_b"] else ""),
           f"pass threshold: reward >= {result['pass_threshold']:g}", ""]
    metrics = ["mean_reward"] + [key for key in a if key.startswith("pass@") and key in b]
    out.append(f"{'':<12} {'A':>9} {'B':>9} {'B - A':>9}")
    for key in metrics:
        out.append(f"{key:<12} {a[key]:>9.4f} {b[key]:>9.4f} {b[key] - a[key]:>+9.4f}")
    out.append(f"\nmean reward B - A: {d['mean_reward']:+.4f}, {d['confidence']:.0%} CI [{d['ci_low']:+.4f}, "
               f"{d['ci_high']:+.4f}] (paired bootstrap over {tasks['paired']} tasks, {d['bootstrap_resamples']} "
               f"resamples, seed {d['seed']})")
    out.append(f"  -> {verdict(d)}")
    m = result["mcnemar"]
    out.append(f"pass flips: {m['improvements']} improved, {m['regressions']} regressed (McNemar exact "
               f"p = {m['p_value']:.4g}; a task passes when {m['task_passes_when']})")
    for side, name in ((a, "A"), (b, "B")):
        if side["failed"]:
            classes = ", ".join(f"{k}={v}" for k, v in side["failures"].items())
            out.append(f"{name}: {side['failed']} failed rollouts, not counted ({classes})")
    if result["flips"]:
        out.append(f"\nflipped tasks, worst first{f' (first {max_flips})' if len(result['flips']) > max_flips else ''}:")
        for flip in result["flips"][:max_flips]:
            out.append(f"  {flip['flip']:<11} task {flip['task_index_a']}"
                       + (f" (B: {flip['task_index_b']})" if flip["task_index_b"] != flip["task_index_a"] else "")
                       + f"  reward {flip['mean_reward_a']:.3f} -> {flip['mean_reward_b']:.3f}  {flip['task']}")
    return "\n".join(out)
