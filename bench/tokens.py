"""What --return-tokens costs: the collector's CPU per rollout with and without it.

    python bench/tokens.py                  # 2,000 rollouts per mode, best of 5
    python bench/tokens.py --rollouts 300 --repeat 1

`gym collect --model openai-chat:m` (real subprocesses) against tests/fake_openai.py in its
own process at 0 ms latency, whose byte tokenizer makes each task's first prompt about
--prompt-tokens tokens (the weather task, padded). With --return-tokens every call's reply
carries its prompt ids, generation ids and logprobs; every next request sends them back;
the output line holds them all. Only the collector's CPU is counted (the fake server runs
in another process). Target: <= 1.3x the CPU per rollout without tokens.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from run import EXAMPLE, ROOT, FakeServer, run_collect  # bench/ is on sys.path when run as a script
from serve_vs_embedded import proc_cpu

sys.path.insert(0, str(ROOT))
from tests.fake_openai import fake_tokenize, render_chat  # noqa: E402

FILLER = "Keep the answer short and plain. "


def make_input(directory: Path, n: int, prompt_tokens: int) -> Path:
    """``n`` weather tasks whose first prompt is about ``prompt_tokens`` fake tokens."""
    rows = [json.loads(line) for line in EXAMPLE.read_text().splitlines() if line.strip()]
    path = directory / f"tasks-{n}-{prompt_tokens}.jsonl"
    with open(path, "w") as fp:
        for i in range(n):
            row = json.loads(json.dumps(rows[i % len(rows)]))
            messages = row["responses_create_params"]["input"]
            user = [m for m in messages if m.get("role") == "user"][-1]
            length = len(fake_tokenize(render_chat(messages)))
            if length < prompt_tokens:
                pad = (FILLER * (prompt_tokens // len(FILLER) + 1))[:prompt_tokens - length]
                user["content"] = pad + user["content"]  # the city stays in the message
            fp.write(json.dumps(row) + "\n")
    return path


def measure(server: FakeServer, tasks: Path, out: Path, parallel: int, tokens: bool) -> dict:
    """One `gym collect` run: its CPU and wall time, the fake server's CPU, the output's size."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "GYM_"))}
    env.update(OPENAI_BASE_URL=server.url, OPENAI_API_KEY="sk-bench")
    args = ["--agent", "weather", "--model", "openai-chat:m", "--input", str(tasks), "--output", str(out),
            "-q", "-p", str(parallel), "--overwrite"] + (["--return-tokens"] if tokens else [])
    server_cpu = proc_cpu(server.proc.pid)
    figures = run_collect(server, args, env)
    figures["server_cpu_s"] = proc_cpu(server.proc.pid) - server_cpu
    figures["bytes"] = out.stat().st_size
    figures["lines"] = sum(1 for _ in open(out, "rb"))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rollouts", type=int, default=2000)
    parser.add_argument("--prompt-tokens", type=int, default=1000)
    parser.add_argument("--parallel", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=5, help="runs per mode; the least CPU counts")
    args = parser.parse_args()
    server = FakeServer(latency_ms=0)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            tasks = make_input(Path(tmp), args.rollouts, args.prompt_tokens)
            results: dict[bool, dict] = {}
            for _ in range(args.repeat):  # the modes take turns, so a busy spell on the machine hits both
                for tokens in (False, True):
                    figures = measure(server, tasks, Path(tmp) / f"out-{tokens}.jsonl", args.parallel, tokens)
                    assert figures["lines"] == args.rollouts, figures
                    if tokens not in results or figures["cpu_s"] < results[tokens]["cpu_s"]:
                        results[tokens] = figures
    finally:
        server.close()
    base = results[False]["cpu_s"] / args.rollouts
    print(f"prompt ~{args.prompt_tokens} tokens, {args.rollouts} rollouts, --parallel {args.parallel}, "
          f"0 ms latency, best of {args.repeat}")
    print("mode | rollouts | CPU ms/rollout | ratio | rollouts/s | fake server CPU ms/rollout | output KB/rollout")
    for tokens, label in ((False, "without tokens"), (True, "--return-tokens")):
        r = results[tokens]
        per = r["cpu_s"] / args.rollouts
        print(f"{label} | {args.rollouts} | {per * 1000:.3f} | {per / base:.2f}x | {args.rollouts / r['wall_s']:.0f} | "
              f"{r['server_cpu_s'] / args.rollouts * 1000:.3f} | {r['bytes'] / args.rollouts / 1024:.1f}")
    ratio = results[True]["cpu_s"] / results[False]["cpu_s"]
    print(f"ratio --return-tokens / without: {ratio:.2f}x (target <= 1.3x)")


if __name__ == "__main__":
    main()
