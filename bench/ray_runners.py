"""Collection through Ray runners against hand-started runners and embedded collection.

Starts the fake OpenAI server (``tests/fake_openai.py``, a subprocess, ``--latency-ms``),
then one local Ray instance for the whole bench (its start-up is timed), and collects the
same N weather rollouts (``--model openai:fake``) these ways:

* embedded:  ``gym collect --agent weather``;
* served W:  W hand-started ``gym serve`` runners + ``gym collect --server ...``;
* ray W:     ``gym collect --executor ray --ray-address A --workers W``.

For each: the command's wall time, the collection's own rollouts/s (the summary's), the
overhead (wall - collection: for ray, joining Ray + placing and starting the runners +
checking them + releasing them), and CPU per rollout of collector + runners (runner CPU read
from /proc while they run: the Ray actors are found by their process title). The model-bound
limit is parallel / (calls per rollout x latency). No figure here is asserted anywhere.

    .venv/bin/python bench/ray_runners.py [--rollouts 600] [--parallel 32] [--latency-ms 100] [--workers 1,2,4]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_vs_embedded import EXAMPLE, BIN, proc_cpu, read_line_with  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


class RunnerCpu(threading.Thread):
    """Polls /proc for processes whose command line contains ``marker``; keeps each one's
    last CPU reading (they may exit before the run ends)."""

    def __init__(self, marker: bytes):
        super().__init__(daemon=True)
        self.marker, self.seen, self.done = marker, {}, threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            for entry in Path("/proc").iterdir():
                if not entry.name.isdigit():
                    continue
                try:
                    if self.marker in (entry / "cmdline").read_bytes():
                        self.seen[int(entry.name)] = proc_cpu(int(entry.name))
                except (OSError, IndexError, ValueError):
                    continue
            self.done.wait(0.2)

    def total(self) -> float:
        self.done.set()
        self.join()
        return sum(self.seen.values())


def collect(args: list[str], env: dict, out: Path) -> tuple[float, float, dict]:
    """Run ``gym collect``; return (wall s, its own CPU s, summary)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run([str(BIN / "gym"), "collect", "--agent", "weather", "--model", "openai:fake",
                             "-o", str(out), "--overwrite", "-q", *args], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise SystemExit(f"gym collect {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, json.loads(out.with_suffix(".metrics.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rollouts", type=int, default=600)
    parser.add_argument("--parallel", type=int, default=32)
    parser.add_argument("--latency-ms", type=float, default=100)
    parser.add_argument("--workers", default="1,2,4")
    opts = parser.parse_args()
    workers = [int(w) for w in opts.workers.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="gym-bench-ray-"))
    rows = EXAMPLE.read_text().splitlines()
    tasks = tmp / "tasks.jsonl"
    tasks.write_text("".join(rows[i % len(rows)] + "\n" for i in range(opts.rollouts)))

    fake = subprocess.Popen([sys.executable, str(ROOT / "tests/fake_openai.py"), "--port", "0",
                             "--latency-ms", str(opts.latency_ms)], stdout=subprocess.PIPE, text=True)
    procs: list[subprocess.Popen] = []
    try:
        url = read_line_with(fake, "listening on ")
        os.environ.update(OPENAI_BASE_URL=url, OPENAI_API_KEY="sk-bench")  # Ray's workers inherit it
        os.environ.pop("RAY_ADDRESS", None)

        import ray

        started = time.perf_counter()
        ray.init(address="local", num_cpus=max(workers), object_store_memory=80 * 1024 * 1024,
                 include_dashboard=False, logging_level=logging.WARNING)
        ray_start = time.perf_counter() - started
        # after ray.init: it sets RAY_AUTH_MODE=token, which a client of this Ray needs too
        env = {**os.environ, "GYM_TOKEN": "bench-token"}
        address = ray.get_runtime_context().gcs_address
        limit = opts.parallel / (2 * opts.latency_ms / 1000)  # weather: 2 model calls a rollout
        common = ["-i", str(tasks), "--parallel", str(opts.parallel)]
        print(f"{opts.rollouts} weather rollouts, --parallel {opts.parallel}, model latency {opts.latency_ms:g} ms "
              f"(model-bound limit {limit:.0f}/s); local Ray start-up {ray_start:.1f}s; {os.cpu_count()} cores")
        print(f"{'how':<12} {'wall s':>7} {'overhead s':>11} {'rollouts/s':>11} {'ratio':>6} {'CPU ms/rollout':>15}")

        def show(label: str, wall: float, cpu: float, summary: dict) -> None:
            rate = summary["rollouts_per_s"]
            print(f"{label:<12} {wall:7.1f} {wall - summary['wall_s']:11.1f} {rate:11.1f} {rate / limit:6.2f} "
                  f"{1000 * cpu / opts.rollouts:15.2f}", flush=True)

        wall, cpu, summary = collect(common, env, tmp / "embedded.jsonl")
        show("embedded", wall, cpu, summary)
        for w in workers:
            servers = []
            for _ in range(w):
                proc = subprocess.Popen([str(BIN / "gym"), "serve", "--agent", "weather", "--model", "openai:fake",
                                         "--port", "0"], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                        text=True)
                procs.append(proc)
                servers.append(read_line_with(proc, "serving on "))
            before = sum(proc_cpu(p.pid) for p in procs)
            wall, cpu, summary = collect([*common, *[a for s in servers for a in ("--server", s)]], env,
                                         tmp / f"served{w}.jsonl")
            cpu += sum(proc_cpu(p.pid) for p in procs) - before
            show(f"served {w}", wall, cpu, summary)
            for proc in procs:
                proc.terminate()
                proc.wait(30)
            procs.clear()

            watcher = RunnerCpu(b"ray::RunnerActor")
            watcher.start()
            wall, cpu, summary = collect([*common, "--executor", "ray", "--ray-address", address, "--workers", str(w)],
                                         env, tmp / f"ray{w}.jsonl")
            show(f"ray {w}", wall, cpu + watcher.total(), summary)
        ray.shutdown()
    finally:
        for proc in [*procs, fake]:
            proc.terminate()
            proc.wait(30)


if __name__ == "__main__":
    main()
