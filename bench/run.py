"""Collection benchmarks: start-up, CPU per rollout, throughput against the model-bound
limit, and peak RSS, each `gym collect` run a real subprocess against a fake
OpenAI-compatible server running in another process.

    python bench/run.py                 # every scenario (make bench)
    python bench/run.py --quick         # fewer rollouts
    python bench/run.py --only 0ms      # scenarios whose name contains "0ms"

Prints one table: scenario, rollouts, rollouts/s, limit, ratio, CPU ms per rollout (the
collector process), start-up (process start to first model request), peak RSS; and, for
some scenarios, a 'bare client' row: the same rollouts from raw_floor.py, the ceiling.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from serve_vs_embedded import proc_cpu, read_line_with  # bench/ is on sys.path when run as a script

ROOT = Path(__file__).resolve().parent.parent
GYM = str(Path(sys.executable).parent / "gym")
EXAMPLE = ROOT / "plugins/gym-weather/gym_weather/data/example.jsonl"
CALLS_PER_ROLLOUT = 2  # the weather policy: call get_weather, then answer


class FakeServer:
    """tests/fake_openai.py in its own process, at a given latency."""

    def __init__(self, latency_ms: float, jitter_ms: float = 0.0, max_concurrent: int | None = None):
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "tests/fake_openai.py"), "--port", "0", "--latency-ms", str(latency_ms),
             "--jitter-ms", str(jitter_ms),
             *(["--max-concurrent", str(max_concurrent)] if max_concurrent is not None else [])],
            stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("listening on "):
            raise RuntimeError(f"fake server did not start: {line!r}")
        self.url = line.split()[-1]
        self.root = self.url.rsplit("/v1", 1)[0]

    def stats(self) -> dict:
        with urllib.request.urlopen(f"{self.root}/_stats") as resp:
            return json.loads(resp.read())

    def reset(self) -> None:
        urllib.request.urlopen(urllib.request.Request(f"{self.root}/_reset", method="POST")).read()

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def make_input(directory: Path, n: int) -> Path:
    """``n`` weather tasks, cycling through the bundled examples."""
    rows = [line for line in EXAMPLE.read_text().splitlines() if line.strip()]
    path = directory / f"tasks-{n}.jsonl"
    with open(path, "w") as fp:
        for i in range(n):
            fp.write(rows[i % len(rows)] + "\n")
    return path


def run_collect(server: FakeServer, args: list[str], env: dict) -> dict:
    """Run one ``gym collect``; return wall time, child CPU, peak RSS and start-up."""
    server.reset()
    started = time.time()
    proc = subprocess.Popen([GYM, "collect", *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.time() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    stderr = proc.stderr.read().decode()
    if proc.returncode != 0:
        raise RuntimeError(f"gym collect failed ({proc.returncode}): {stderr[-2000:]}")
    stats = server.stats()
    return {
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "rss_mb": usage.ru_maxrss / 1024,
        "startup_s": (stats["first_request_at"] - started) if stats["first_request_at"] else None,
        "requests": stats["count"],
    }


def run_bare_client(server: FakeServer, tasks: Path, parallel: int) -> dict:
    """The same rollouts from a bare aiohttp + orjson client (raw_floor.py): the ceiling."""
    server.reset()
    out = subprocess.run([sys.executable, str(Path(__file__).parent / "raw_floor.py"), "--url", server.url,
                          "--input", str(tasks), "--parallel", str(parallel), "--json"],
                         capture_output=True, text=True, check=True)
    result = json.loads(out.stdout)
    requests = server.stats()["count"]
    assert requests == CALLS_PER_ROLLOUT * result["rollouts"], (requests, result)
    return result


def proc_peak_rss_mb(pid: int) -> float:
    """Peak RSS of a live process (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def time_command(args: list[str], env: dict, repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run([GYM, *args], env=env, stdout=subprocess.DEVNULL, check=True)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rollouts per scenario")
    parser.add_argument("--only", default="", help="run only scenarios whose name contains this")
    args = parser.parse_args()
    n = 500 if args.quick else 2000
    scenarios = [
        # name, latency ms, jitter ms, rollouts, parallel, also run the bare client (raw_floor.py)
        ("0ms p64", 0, 0, n, 64, True),
        ("100ms p64", 100, 0, n, 64, False),
        ("100ms p64 20k", 100, 0, 10 * n, 64, True),  # long enough that start-up and the last wave fade
        ("100±20ms p64", 100, 20, n, 64, False),
        # a little jitter, as every real server has, keeps the 64 rollouts from moving in lock-step
        ("100±5ms p64 20k", 100, 5, 10 * n, 64, True),
        ("100ms p1024", 100, 0, 5 * n, 1024, True),
        ("0ms p64 1k", 0, 0, 1000, 64, False),
        ("0ms p64 100k", 0, 0, 20 * n if args.quick else 100_000, 64, False),
        ("served 0ms p64", 0, 0, n, 64, False),  # gym serve + gym collect --server; CPU of both
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "GYM_"))}
    env["OPENAI_API_KEY"] = "sk-bench"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        if not args.only:
            print(f"gym --help: {time_command(['--help'], env) * 1000:.0f} ms; "
                  f"gym plugins list: {time_command(['plugins', 'list'], env) * 1000:.0f} ms (best of 5)")
        for name, latency, jitter, count, parallel, bare in scenarios:
            if args.only and args.only not in name:
                continue
            server = FakeServer(latency, jitter)
            env["OPENAI_BASE_URL"] = server.url
            runner = None
            try:
                tasks = make_input(tmp_path, count)
                out = tmp_path / "out.jsonl"
                out.unlink(missing_ok=True)
                where = ["--model", "openai:bench"]
                if name.startswith("served"):
                    runner = subprocess.Popen([GYM, "serve", "--agent", "weather", "--model", "openai:bench",
                                               "--port", "0"], env=env, stdout=subprocess.PIPE,
                                              stderr=subprocess.DEVNULL, text=True)
                    where = ["--server", read_line_with(runner, "serving on ")]
                    runner_cpu = proc_cpu(runner.pid)
                result = run_collect(server, [
                    "--agent", "weather", *where, "--input", str(tasks),
                    "--output", str(out), "--parallel", str(parallel), "-q"], env)
                if runner is not None:  # the runner's share of the work counts too
                    result["cpu_s"] += proc_cpu(runner.pid) - runner_cpu
                    result["rss_mb"] += proc_peak_rss_mb(runner.pid)
                floor = run_bare_client(server, tasks, parallel) if bare else None
            finally:
                if runner is not None:
                    runner.terminate()
                    runner.wait(30)
                server.close()
            lines = sum(1 for _ in open(out))
            assert lines == count, f"{name}: {lines} lines, expected {count}"
            assert result["requests"] == CALLS_PER_ROLLOUT * count, result
            rate = count / result["wall_s"]
            steady = count / (result["wall_s"] - result["startup_s"])
            limit = parallel / (CALLS_PER_ROLLOUT * latency / 1000) if latency else None
            rows.append((name, count, rate, steady, limit, rate / limit if limit else None,
                         steady / limit if limit else None, 1000 * result["cpu_s"] / count,
                         result["startup_s"], result["rss_mb"]))
            if floor is not None:
                rate = count / floor["wall_s"]
                rows.append((f"bare client: {name}", count, rate, rate, limit, rate / limit if limit else None,
                             rate / limit if limit else None, 1000 * floor["cpu_s"] / count, None, floor["rss_mb"]))
    header = ("scenario", "rollouts", "rollouts/s", "after start-up", "limit", "ratio", "ratio after start-up",
              "CPU ms/rollout", "start-up s", "peak RSS MB")
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"{platform.platform()}")
    print(" | ".join(header))
    print(" | ".join("---" for _ in header))
    for name, count, rate, steady, limit, ratio, steady_ratio, cpu, startup, rss in rows:
        print(" | ".join([name, str(count), f"{rate:.0f}", f"{steady:.0f}", f"{limit:.0f}" if limit else "-",
                          f"{ratio:.3f}" if ratio else "-", f"{steady_ratio:.3f}" if steady_ratio else "-",
                          f"{cpu:.3f}",
                          f"{startup:.3f}" if startup is not None else "-", f"{rss:.0f}"]))
    print("\n(rollouts/s: end to end, process start included; 'after start-up': from the first model\n"
          " request to exit; limit = parallel / (2 calls x latency); CPU: the collector process, start-up\n"
          " included (served: collector + runner, the runner's start-up excluded); start-up: process\n"
          " start to first model request; peak RSS: collector (served: collector + runner).\n"
          " 'bare client': the same rollouts from bench/raw_floor.py, aiohttp + orjson sending as gymcore\n"
          " does and nothing else, timed from its first request, CPU without imports: the ceiling on\n"
          " this server and machine)")


if __name__ == "__main__":
    main()
