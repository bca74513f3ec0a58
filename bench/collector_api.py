"""The streaming Python API and ``--parallel auto``, each against what it replaces.

    python bench/collector_api.py             # both
    python bench/collector_api.py --only api  # gymcore.Collector vs gym collect: CPU per rollout
    python bench/collector_api.py --only auto # --parallel auto vs the right fixed --parallel

``api``: the same rollouts (weather tasks, fake server at 0 ms in its own process, parallel
64) once through ``gym collect`` and once through a script that iterates
``gymcore.Collector.run`` and keeps nothing; each a fresh process, CPU from ``wait4``
(start-up included in both). Target: the API <= 1.1x the CLI's CPU per rollout.

``auto``: a fake server that answers 429 above 24 calls at once (100 ms per call), once with
``--parallel 24`` (the right number, known here) and once with ``--parallel auto``; prints
both throughputs, their ratio (target >= 0.85), where auto settled, and how many calls the
server refused.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from run import GYM, FakeServer, make_input  # bench/ is on sys.path when run as a script

API_SCRIPT = """
import asyncio, sys, orjson, gymcore

async def main():
    rows = [orjson.loads(line) for line in open(sys.argv[1], "rb")]
    n = 0
    async with gymcore.Collector(agent="weather", model="openai:bench", parallel=int(sys.argv[2])) as collector:
        async for rollout in collector.run(rows):
            n += rollout.reward is not None
    print(n)

asyncio.run(main())
"""


def measured(args: list[str], env: dict) -> tuple[float, float, str]:
    """Run a process; return (CPU seconds from wait4, wall seconds, stdout)."""
    started = time.perf_counter()
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    out, err = proc.stdout.read(), proc.stderr.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{args[:3]} failed: {err[-2000:]}")
    return usage.ru_utime + usage.ru_stime, wall, out


def api_vs_cli(tmp: Path, env: dict, count: int, rounds: int) -> None:
    server = FakeServer(0)
    env = env | {"OPENAI_BASE_URL": server.url}
    tasks = make_input(tmp, count)
    cli, api = [], []
    try:
        for round_ in range(rounds):  # interleaved, best of: the machine is shared
            out = tmp / f"cli-{round_}.jsonl"
            cpu, _wall, _ = measured([GYM, "collect", "--agent", "weather", "--model", "openai:bench", "--input",
                                      str(tasks), "--output", str(out), "--parallel", "64", "-q"], env)
            assert sum(1 for _ in open(out)) == count
            cli.append(cpu)
            cpu, _wall, printed = measured([sys.executable, "-c", API_SCRIPT, str(tasks), "64"], env)
            assert int(printed) == count, printed
            api.append(cpu)
    finally:
        server.close()
    cli_ms, api_ms = 1000 * min(cli) / count, 1000 * min(api) / count
    print(f"api: {count} rollouts, parallel 64, 0 ms, best of {rounds}: gym collect {cli_ms:.3f} CPU ms/rollout, "
          f"gymcore.Collector {api_ms:.3f}; ratio API/CLI {api_ms / cli_ms:.3f} (target <= 1.1)")


def auto_vs_fixed(tmp: Path, env: dict, count: int) -> None:
    server = FakeServer(100, max_concurrent=24)
    env = env | {"OPENAI_BASE_URL": server.url}
    tasks = make_input(tmp, count)
    figures = {}
    try:
        for name, parallel in (("fixed 24", ["--parallel", "24"]), ("auto", ["--parallel", "auto"])):
            server.reset()
            out = tmp / f"{name.replace(' ', '-')}.jsonl"
            _cpu, wall, _ = measured([GYM, "collect", "--agent", "weather", "--model", "openai:bench", "--input",
                                      str(tasks), "--output", str(out), *parallel, "-q"], env)
            summary = json.loads(out.with_suffix(".metrics.json").read_text())
            assert summary["scored"] == count, summary
            figures[name] = (count / wall, summary, server.stats())
    finally:
        server.close()
    fixed_rate, _, fixed_stats = figures["fixed 24"]
    auto_rate, summary, stats = figures["auto"]
    print(f"auto: {count} rollouts, 100 ms per call, 429 above 24 at once: --parallel 24 {fixed_rate:.1f} rollouts/s "
          f"({fixed_stats['refused']} refused), --parallel auto {auto_rate:.1f} rollouts/s ({stats['refused']} refused, "
          f"failed {summary['failed']}); ratio {auto_rate / fixed_rate:.3f} (target >= 0.85); "
          f"auto: {summary['parallel_auto']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rollouts")
    parser.add_argument("--only", choices=["api", "auto"])
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "GYM_"))}
    env["OPENAI_API_KEY"] = "sk-bench"
    with tempfile.TemporaryDirectory() as tmp:
        if args.only in (None, "api"):
            api_vs_cli(Path(tmp), env, 500 if args.quick else 3000, 2 if args.quick else 3)
        if args.only in (None, "auto"):
            auto_vs_fixed(Path(tmp), env, 300 if args.quick else 3000)


if __name__ == "__main__":
    main()
