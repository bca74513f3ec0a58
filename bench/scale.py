"""Concurrency at scale: one `gym collect` holding N rollouts in flight against a slow model
spread over fake replicas (`--model-url` x R), each replica tests/fake_openai.py in its own
process.

    python bench/scale.py                                   # 20,000 in flight, 10 s a call, 4 replicas
    python bench/scale.py --parallel 19872 --rollouts 198720  # 10 waves: start-up and drain fade
    python bench/scale.py --parallel 200 --latency-ms 500   # a small run

Reports rollouts/s against the model-bound limit N / (2 calls x latency), the collector's RSS
(at start, at steady state, peak) and RSS per rollout in flight ((steady - start) / N), the
most file descriptors it held, failures, and its CPU per rollout: the ceiling one core puts
on rollouts/s, whatever the latency. Start = the last sample before its first
connection to a model; steady state = the median of samples over the middle half of the run
(with --rollouts >= 3 N, every one of the N rollouts is in flight then, in a model call or
waiting for the CPU). The collector's own pre-run warnings (open files, ports) are printed as they are.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from run import CALLS_PER_ROLLOUT, GYM, FakeServer, make_input  # bench/ is on sys.path when run as a script


def proc_sample(pid: int) -> tuple[float, float, int] | None:
    """(RSS MB, peak RSS MB, open descriptors) of a live process, or None once it is gone."""
    try:
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except (FileNotFoundError, ProcessLookupError):
        return None
    if "VmRSS" not in fields:  # exited, not yet reaped
        return None
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024, fds


class Sampler(threading.Thread):
    """Samples a process's RSS and descriptors every ``every`` seconds until it exits."""

    def __init__(self, pid: int, every: float = 0.25):
        super().__init__(daemon=True)
        self.pid, self.every, self.samples = pid, every, []  # (t, rss, hwm, fds)

    def run(self) -> None:
        while (sample := proc_sample(self.pid)) is not None:
            self.samples.append((time.time(), *sample))
            time.sleep(self.every)


def memory_figures(samples: list[tuple], parallel: int) -> dict:
    connected = [i for i, s in enumerate(samples) if s[3] > 64]
    start_rss = samples[connected[0] - 1][1] if connected and connected[0] > 0 else samples[0][1]
    first, last = samples[0][0], samples[-1][0]
    steady = [s[1] for s in samples if first + 0.25 * (last - first) <= s[0] <= first + 0.75 * (last - first)]
    steady_rss = statistics.median(steady) if steady else None
    return {
        "rss_start_mb": start_rss,
        "rss_steady_mb": steady_rss,
        "rss_peak_mb": max(s[2] for s in samples),
        "kb_per_rollout_in_flight": (steady_rss - start_rss) * 1024 / parallel if steady_rss else None,
        "fds_max": max(s[3] for s in samples),
        "steady_samples": len(steady),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parallel", type=int, default=20_000, help="rollouts in flight")
    parser.add_argument("--latency-ms", type=float, default=10_000, help="the model's latency per call")
    parser.add_argument("--rollouts", type=int, help="rollouts to collect (default: 3 x --parallel)")
    parser.add_argument("--replicas", type=int, default=4, help="fake model replicas (--model-url each)")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = parser.parse_args()
    count = args.rollouts or 3 * args.parallel

    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "GYM_"))}
    env["OPENAI_API_KEY"] = "sk-bench"
    servers = [FakeServer(args.latency_ms) for _ in range(args.replicas)]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            tasks, out = make_input(Path(tmp), count), Path(tmp) / "out.jsonl"
            urls = [arg for server in servers for arg in ("--model-url", server.url)]
            started = time.time()
            proc = subprocess.Popen([GYM, "collect", "--agent", "weather", "--model", "openai:fake", *urls,
                                     "--input", str(tasks), "--output", str(out), "--parallel", str(args.parallel),
                                     "--max-retries", "0", "-q"],
                                    env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            sampler = Sampler(proc.pid)
            sampler.start()
            stderr = proc.stderr.read()
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            sampler.join()
            wall = time.time() - started
            lines = [json.loads(line) for line in open(out)] if out.exists() else []
        stats = [server.stats() for server in servers]
    finally:
        for server in servers:
            server.close()

    first_request = min((s["first_request_at"] for s in stats if s["first_request_at"]), default=None)
    done = sum(1 for line in lines if line.get("error") is None)
    limit = args.parallel / (CALLS_PER_ROLLOUT * args.latency_ms / 1000)
    after_start = wall - (first_request - started) if first_request else wall
    figures = {
        "parallel": args.parallel, "latency_ms": args.latency_ms, "replicas": args.replicas,
        "rollouts": count, "done": done, "failed": count - done, "exit_code": proc.returncode,
        "requests_per_replica": [s["count"] for s in stats],
        "wall_s": wall, "startup_s": wall - after_start,
        "rollouts_per_s": done / wall, "limit_per_s": limit, "ratio": done / wall / limit,
        "ratio_after_startup": done / after_start / limit,
        "cpu_ms_per_rollout": 1000 * (usage.ru_utime + usage.ru_stime) / max(count, 1),
        "cpu_share": (usage.ru_utime + usage.ru_stime) / wall,
        **memory_figures(sampler.samples, args.parallel),
        "warnings": [line for line in stderr.splitlines() if "warning" in line],
    }
    if args.json:
        print(json.dumps(figures))
        return
    for line in figures.pop("warnings"):
        print(line)
    print(f"{args.parallel} in flight, {args.latency_ms / 1000:g} s a call, {args.replicas} replicas "
          f"({', '.join(map(str, figures['requests_per_replica']))} requests): {done}/{count} rollouts done, "
          f"{figures['failed']} failed (exit {proc.returncode})")
    print(f"rollouts/s {figures['rollouts_per_s']:.1f} vs limit {limit:.1f}: ratio {figures['ratio']:.3f} "
          f"({figures['ratio_after_startup']:.3f} after start-up of {figures['startup_s']:.1f} s; wall {wall:.1f} s)")
    per = figures["kb_per_rollout_in_flight"]
    print(f"collector RSS: start {figures['rss_start_mb']:.0f} MB, steady "
          + (f"{figures['rss_steady_mb']:.0f} MB" if figures["rss_steady_mb"] else "-")
          + f", peak {figures['rss_peak_mb']:.0f} MB; per rollout in flight "
          + (f"{per:.1f} KB" if per is not None else "-")
          + f"; file descriptors max {figures['fds_max']}")
    cpu = figures["cpu_ms_per_rollout"]
    print(f"collector CPU {cpu:.2f} ms per rollout, {figures['cpu_share']:.2f} of a core on average: "
          f"one core reaches {1000 / cpu:.0f} rollouts/s" if cpu else "")
    if proc.returncode != 0:
        print("collector stderr (tail):\n" + stderr[-1500:])


if __name__ == "__main__":
    main()
