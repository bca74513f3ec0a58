"""The reliability trial: ``kill -9`` a real ``gym collect`` again and again under injected
model faults, resume until done, then count what was lost, duplicated, garbled or scored.

The fake OpenAI server (``tests/fake_openai.py``, in a thread of this process) answers a
fraction ``--fault-rate`` of requests with a fault drawn from ``--faults`` (503, 500, 429
with ``Retry-After``, a dropped connection, a 200 that is not JSON, a 200 whose reply says
it failed or was cancelled). Each round starts
``gym collect`` (``--resume`` after the first), waits until it has written something more,
sleeps a random moment and sends SIGKILL. Then ``--resume`` runs without kills until the
failures sidecar is empty (or ``--max-resumes``). Figures printed at the end:

* ``lost``: (task, rollout) pairs missing from the output at the end;
* ``duplicated``: pairs written more than once;
* ``garbled``: output lines that do not parse (a torn line a resume failed to cut);
* ``failures scored``: output lines whose model reply was not a completed one;
* ``rollouts/s`` of the last, unkilled resume.

    .venv/bin/python bench/reliability.py [--tasks 40] [--repeats 4] [--kills 20] [--fault-rate 0.3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.fake_openai import CITIES, FakeOpenAI  # noqa: E402  (the suite's own instrument)

GYM = str(Path(sys.executable).parent / "gym")
FAULTS = {
    "503": {"status": 503},
    "500": {"status": 500},
    "429": {"status": 429, "retry_after": 0.05},
    "reset": {"reset": True},
    "malformed": {"malformed": True},
    "failed": {"patch": {"status": "failed", "error": {"code": "server_error", "message": "injected failure"}}},
    "cancelled": {"patch": {"status": "cancelled"}},
}


def write_tasks(path: Path, n: int) -> Path:
    with path.open("w") as f:
        for i in range(n):
            city = CITIES[i % len(CITIES)]
            f.write(json.dumps({"responses_create_params": {"input": [
                {"role": "user", "content": f"What is the weather in {city}? (task {i})"}]},
                "verifier_metadata": {"expected_city": city}}) + "\n")
    return path


def count_lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--fault-rate", type=float, default=0.3)
    parser.add_argument("--faults", default=",".join(FAULTS), help=f"kinds to draw from: {', '.join(FAULTS)}")
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--max-resumes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    kinds = [FAULTS[k] for k in args.faults.split(",") if k]

    server = FakeOpenAI(latency=args.latency_ms / 1000, keep_requests=False, jitter=args.latency_ms / 4000)
    # one fault decision per request, drawn up front (the server consumes them in order)
    server.faults = [dict(rng.choice(kinds)) if rng.random() < args.fault_rate else None
                     for _ in range(args.tasks * args.repeats * 40)]
    url = server.start_in_thread()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "GYM_"))}
    env.update(OPENAI_BASE_URL=url, OPENAI_API_KEY="none", PYTHONUNBUFFERED="1")

    work = Path(tempfile.mkdtemp(prefix="gym-reliability-"))
    tasks = write_tasks(work / "tasks.jsonl", args.tasks)
    out = work / "out.jsonl"
    base = [GYM, "collect", "--agent", "weather", "--model", "openai:fake", "--input", str(tasks),
            "--output", str(out), "--num-repeats", str(args.repeats), "--parallel", str(args.parallel),
            "--max-retries", "8", "-q"]
    kills = finished_early = 0
    for round_ in range(args.kills):
        before = count_lines(out)
        proc = subprocess.Popen(base + (["--resume"] if round_ else []), env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while count_lines(out) <= before and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.3))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        else:
            finished_early += 1
        proc.communicate(timeout=60)
    resumes, last_rate = 0, None
    failures = out.with_name(out.stem + ".failures.jsonl")
    for resumes in range(1, args.max_resumes + 1):
        started, before = time.perf_counter(), count_lines(out)
        result = subprocess.run(base + ["--resume"], env=env, capture_output=True, text=True, timeout=600)
        last_rate = (count_lines(out) - before) / (time.perf_counter() - started)
        if result.returncode == 0:
            break
        if result.returncode != 1:  # 1: some rollouts failed (retried by the next resume)
            raise SystemExit(f"resume exited {result.returncode}: {result.stderr[-2000:]}")
    server.stop()

    pairs: Counter = Counter()
    garbled = scored_failures = 0
    for raw in out.read_bytes().splitlines():
        try:
            line = json.loads(raw)
        except ValueError:
            garbled += 1
            continue
        pairs[(line["task_index"], line["rollout_index"])] += 1
        if (line.get("response") or {}).get("status") != "completed" and line.get("stop_reason") != "max_steps":
            scored_failures += 1
    expected = {(t, r) for t in range(args.tasks) for r in range(args.repeats)}
    outstanding = count_lines(failures)
    figures = {
        "rollouts": len(expected), "kills": kills, "runs that finished before the kill": finished_early,
        "resumes after the kills": resumes, "lost": len(expected - set(pairs)),
        "duplicated": sum(n - 1 for n in pairs.values() if n > 1), "garbled": garbled,
        "failures scored": scored_failures, "failure records (all runs)": outstanding,
        "rollouts/s (last resume)": round(last_rate or 0.0, 1), "files": str(work),
    }
    if args.json:
        print(json.dumps(figures))
        return
    width = max(map(len, figures))
    for name, value in figures.items():
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
