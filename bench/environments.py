"""What each environment costs per rollout at 0 ms model latency, and what one sandboxed
``python`` call costs.

For each installed environment with recorded example rollouts (``weather``, ``reasoning``,
``math``), runs ``gym collect --model replay`` over its examples ``--repeats`` times (tools and
``verify`` run for real; the model is a replay, so it costs ~nothing) and reports the CPU of
the collector and everything it started (sandbox processes, math-verify's workers) per
rollout, beside the same run's fixed start-up cost (a 1-rollout run). Then times
``--calls`` sequential calls of the math sandbox running ``print(6 * 7)``.

    .venv/bin/python bench/environments.py [--repeats 8] [--calls 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def collect(agent: str, repeats: int, limit: int | None, out: Path) -> tuple[float, float, int]:
    args = [str(BIN / "gym"), "collect", "--agent", agent, "--model", "replay", "--output", str(out),
            "--num-repeats", str(repeats), "--parallel", "16", "--overwrite", "-q"]
    if limit:
        args += ["--limit", str(limit)]
    before, started = children_cpu(), time.perf_counter()
    result = subprocess.run(args, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{agent}: gym collect failed: {result.stderr[-2000:]}")
    summary = json.loads(out.with_name(out.stem + ".metrics.json").read_text())
    return children_cpu() - before, wall, summary["rollouts"]


def sandbox_calls(calls: int) -> dict[str, float]:
    from gym_math.sandbox import Sandbox

    box = Sandbox()

    async def run() -> float:
        await box.run("print(6 * 7)")  # warm: the first call pays imports
        started = time.perf_counter()
        for _ in range(calls):
            result = await box.run("print(6 * 7)")
            assert result.stdout == "42\n", result
        return time.perf_counter() - started

    cpu_before = children_cpu() + sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
    wall = asyncio.run(run())
    cpu = children_cpu() + sum(resource.getrusage(resource.RUSAGE_SELF)[:2]) - cpu_before
    return {"wall_ms": 1000 * wall / calls, "cpu_ms": 1000 * cpu / calls, "uid_per_call": box.drop_privileges}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--agents", default="weather,reasoning,math")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print(f"{'environment':<12} {'rollouts':>8} {'CPU ms/rollout':>15} {'fixed CPU s':>12} {'wall s':>7}")
        for agent in args.agents.split(","):
            fixed, _, _ = collect(agent, 1, 1, Path(tmp) / f"{agent}-1.jsonl")
            cpu, wall, n = collect(agent, args.repeats, None, Path(tmp) / f"{agent}.jsonl")
            print(f"{agent:<12} {n:>8} {1000 * (cpu - fixed) / max(n - 1, 1):>15.1f} {fixed:>12.2f} {wall:>7.2f}")
    if "math" in args.agents:
        figures = sandbox_calls(args.calls)
        print(f"\nmath sandbox, {args.calls} calls of print(6 * 7): {figures['wall_ms']:.1f} ms wall, "
              f"{figures['cpu_ms']:.1f} ms CPU per call (a uid of its own per call: {figures['uid_per_call']})")


if __name__ == "__main__":
    main()
