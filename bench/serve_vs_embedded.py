"""Served versus embedded collection: CPU per rollout and rollouts/s on the same input.

Starts the fake OpenAI server (``tests/fake_openai.py``, a subprocess), then for each model
latency collects the same N weather rollouts (``--model openai:fake``) two ways:

* embedded: ``gym collect --agent weather`` (CPU = the collector process);
* served:   ``gym serve --agent weather`` + ``gym collect --server URL`` (CPU = collector
  process + the runner's CPU during the collection, read from /proc).

The fake model's own CPU is not counted in either. Each figure is the median of
``--repeats`` runs; "fixed" is the CPU of a one-rollout run (interpreter start, imports),
"marginal" is (CPU(N) - fixed) / (N - 1). Target: served < 2x embedded CPU per rollout.

    .venv/bin/python bench/serve_vs_embedded.py [--rollouts 2000] [--parallel 64] [--latency-ms 0,20]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
EXAMPLE = ROOT / "plugins/gym-weather/gym_weather/data/example.jsonl"
TICK = os.sysconf("SC_CLK_TCK")


def read_line_with(proc: subprocess.Popen, prefix: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if select.select([proc.stdout], [], [], 0.1)[0]:
            line = proc.stdout.readline()
            if line.startswith(prefix):
                return line[len(prefix):].strip()
            if not line:
                break
    raise SystemExit(f"{proc.args} did not print {prefix!r}")


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a live process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def run_collect(args: list[str], env: dict) -> tuple[float, float, dict]:
    """Run ``gym collect``; return (its CPU seconds, wall seconds, metrics summary)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run([str(BIN / "gym"), "collect", *args, "-q"], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise SystemExit(f"gym collect failed: {result.stderr}")
    output = Path(args[args.index("--output") + 1])
    summary = json.loads(output.with_name(output.stem + ".metrics.json").read_text())
    if summary["failed"]:
        raise SystemExit(f"{summary['failed']} rollouts failed: {summary['failures']}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, wall, summary


def measure(mode: str, inputs: Path, n: int, parallel: int, env: dict, server: subprocess.Popen | None,
            url: str | None, out: Path) -> dict:
    args = ["--agent", "weather", "--input", str(inputs), "--output", str(out), "--parallel", str(parallel),
            "--limit", str(n), "--overwrite"]  # the same output, measured again
    if mode == "served":
        args += ["--server", url]
    else:
        args += ["--model", "openai:fake"]
    runner_before = proc_cpu(server.pid) if server else 0.0
    cpu, wall, summary = run_collect(args, env)
    runner_cpu = proc_cpu(server.pid) - runner_before if server else 0.0
    return {"collector_cpu": cpu, "runner_cpu": runner_cpu, "cpu": cpu + runner_cpu, "wall": wall,
            "rollouts_per_s": summary["rollouts_per_s"], "mean_reward": summary["mean_reward"]}


def median_of(runs: list[dict]) -> dict:
    return {key: statistics.median(r[key] for r in runs) for key in runs[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rollouts", type=int, default=2000)
    parser.add_argument("--parallel", type=int, default=64)
    parser.add_argument("--latency-ms", default="0,20", help="Comma-separated fake model latencies.")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    n = args.rollouts
    tmp = Path(tempfile.mkdtemp(prefix="gym-bench-serve-"))
    rows = EXAMPLE.read_text().splitlines()
    inputs = tmp / "input.jsonl"
    inputs.write_text("\n".join(itertools.islice(itertools.cycle(rows), n)) + "\n")
    print(f"{n} rollouts of weather (2 model calls + 1 tool call each), --parallel {args.parallel}, "
          f"median of {args.repeats}, {os.cpu_count()} CPUs")
    for latency in [float(x) for x in args.latency_ms.split(",")]:
        fake = subprocess.Popen([sys.executable, str(ROOT / "tests/fake_openai.py"), "--port", "0",
                                 "--latency-ms", str(latency)], stdout=subprocess.PIPE, text=True)
        server = None
        try:
            base_url = read_line_with(fake, "listening on ")
            env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "GYM_"))}
            env.update(OPENAI_BASE_URL=base_url, OPENAI_API_KEY="bench-key")
            server = subprocess.Popen([str(BIN / "gym"), "serve", "--agent", "weather", "--model", "openai:fake",
                                       "--port", "0"], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                      text=True)
            url = read_line_with(server, "serving on ")
            results = {}
            for mode in ("embedded", "served"):
                srv = server if mode == "served" else None
                measure(mode, inputs, 50, args.parallel, env, srv, url, tmp / "warm.jsonl")  # warm caches
                fixed = median_of([measure(mode, inputs, 1, 1, env, srv, url, tmp / "one.jsonl")
                                   for _ in range(args.repeats)])
                full = median_of([measure(mode, inputs, n, args.parallel, env, srv, url, tmp / f"{mode}.jsonl")
                                  for _ in range(args.repeats)])
                full["per_rollout_ms"] = full["cpu"] / n * 1000
                full["marginal_ms"] = (full["cpu"] - fixed["cpu"]) / (n - 1) * 1000
                full["fixed_s"] = fixed["cpu"]
                results[mode] = full
        finally:
            for proc in (server, fake):
                if proc is not None and proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(30)
        print(f"\nmodel latency {latency:g} ms")
        print(f"  {'mode':<9} {'cpu/rollout':>12} {'marginal':>10} {'collector':>10} {'runner':>8} {'fixed':>7}"
              f" {'rollouts/s':>11} {'reward':>7}")
        for mode, r in results.items():
            print(f"  {mode:<9} {r['per_rollout_ms']:>9.3f} ms {r['marginal_ms']:>7.3f} ms {r['collector_cpu']:>8.2f} s"
                  f" {r['runner_cpu']:>6.2f} s {r['fixed_s']:>5.2f} s {r['rollouts_per_s']:>11.1f}"
                  f" {r['mean_reward']:>7.3f}")
        emb, srv = results["embedded"], results["served"]
        print(f"  served/embedded CPU per rollout: {srv['per_rollout_ms'] / emb['per_rollout_ms']:.2f}x"
              f" (marginal {srv['marginal_ms'] / emb['marginal_ms']:.2f}x; target < 2x);"
              f" rollouts/s ratio {srv['rollouts_per_s'] / emb['rollouts_per_s']:.2f}")


if __name__ == "__main__":
    main()
