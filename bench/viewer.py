"""How fast `gym view` opens a big rollout file, and how much memory it holds.

Generates a realistic 100,000-rollout JSONL (~10 KB a line, ~1 GB; kept and reused if it
already has the right size), starts the real `gym view` command on it, and measures:
time until the server listens, time to first byte (TTFB) of the overview and of page 500
of the rollout list right after start (while the background index is still being built),
the time to index the whole file, the same pages once indexed plus a sorted and a searched
page, and the viewer's peak RSS (VmHWM).

    .venv/bin/python bench/viewer.py [--rollouts 100000] [--file results/bench-view.jsonl]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
GYM = str(Path(sys.executable).parent / "gym")

TOOLS = [
    {"type": "function", "name": name, "description": desc, "strict": True,
     "parameters": {"type": "object", "additionalProperties": False, "required": list(props),
                    "properties": {k: {"type": "string", "description": f"The {k} to use."} for k in props}}}
    for name, desc, props in [
        ("search_docs", "Full-text search over the product documentation.", ["query"]),
        ("read_file", "Read a file from the repository checkout.", ["path"]),
        ("run_tests", "Run the test suite and return a JSON report.", ["selector"]),
        ("get_weather", "Get the current weather for a city.", ["city"]),
    ]
]
WORDS = ("the model reads the failing test then opens the module finds the off by one error in the "
         "loop bound and patches it before running the suite again to confirm every case passes "
         "while keeping the public interface unchanged and documenting why").split()


def _text(rng: random.Random, n_words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n_words))


def make_rollout(task_index: int, rollout_index: int, rng: random.Random) -> dict:
    """One output line shaped like `gym collect`'s, ~10 KB."""
    items: list[dict] = []
    n_steps = rng.choice((1, 2, 3, 3, 4, 5, 6))
    calls = 0
    for step in range(n_steps - 1):
        items.append({"type": "reasoning", "id": f"rs_{step}", "summary": [
            {"type": "summary_text", "text": _text(rng, rng.randint(20, 60))}]})
        for _ in range(rng.choice((1, 1, 2))):
            tool = rng.choice(TOOLS)["name"]
            call_id = f"call_{task_index}_{rollout_index}_{calls}"
            calls += 1
            args = {"query": _text(rng, 6)} if tool == "search_docs" else {"path": f"src/mod_{rng.randint(0, 99)}.py"}
            items.append({"type": "function_call", "id": f"fc_{calls}", "call_id": call_id, "name": tool,
                          "arguments": json.dumps(args), "status": "completed"})
            payload = {"ok": True, "tool": tool, "hits": [
                {"path": f"docs/page_{rng.randint(0, 999)}.md", "score": round(rng.random(), 3),
                 "snippet": _text(rng, 25)} for _ in range(rng.randint(3, 8))]}
            items.append({"type": "function_call_output", "call_id": call_id, "output": json.dumps(payload),
                          "id": f"fco_{call_id}", "status": "completed"})
    items.append({"type": "message", "id": "msg_final", "role": "assistant", "status": "completed",
                  "content": [{"type": "output_text", "text": _text(rng, rng.randint(40, 160)), "annotations": []}]})
    error = None
    reward: float | None = rng.choice((0.0, 1.0, 1.0, 0.5)) if task_index % 7 else float(task_index % 2)
    if rng.random() < 0.02:
        error = {"type": "model", "kind": rng.choice(("timeout", "http", "connection")), "status": 503,
                 "message": "upstream model server unavailable"}
        reward = None
    in_tok, out_tok = rng.randint(800, 6000), rng.randint(50, 1500)
    return {
        "id": f"task-{task_index:05d}",
        "responses_create_params": {
            "input": [{"role": "developer", "content": "You are a careful software engineer. " + _text(rng, 60)},
                      {"role": "user", "content": _text(rng, rng.randint(30, 120))}],
            "tools": TOOLS, "temperature": 1.0},
        "verifier_metadata": {"expected": _text(rng, 5)},
        "response": {"id": f"resp_{task_index}_{rollout_index}", "object": "response", "created_at": 0,
                     "model": "bench-model", "status": "completed", "output": items,
                     "usage": {"input_tokens": in_tok, "output_tokens": out_tok, "total_tokens": in_tok + out_tok,
                               "output_tokens_details": {"reasoning_tokens": out_tok // 3}}},
        "reward": reward, "tests_passed": rng.randint(0, 10), "format_ok": int(rng.random() < 0.9),
        "metric_names": ["tests_passed", "format_ok"],
        "task_index": task_index, "rollout_index": rollout_index, "agent": "bench", "model": "openai:bench-model",
        "turns": n_steps, "tool_calls": calls, "tool_errors": int(rng.random() < 0.05),
        "stop_reason": "completed", "error": error,
        "timing": {"total_s": rng.uniform(1, 30), "model_s": rng.uniform(1, 20), "tools_s": rng.uniform(0, 5),
                   "verify_s": 0.01},
    }


def generate(path: Path, n: int, repeats: int = 8, seed: int = 0) -> None:
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as fp:
        for i in range(n):
            fp.write(orjson.dumps(make_rollout(i // repeats, i % repeats, rng)) + b"\n")
    tmp.replace(path)


def _count_lines(path: Path) -> int:
    with open(path, "rb") as fp:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: fp.read(1 << 24), b""))


def ttfb(port: int, url: str) -> tuple[float, float, bytes]:
    """(seconds to the status line, seconds to the whole body, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    t0 = time.perf_counter()
    conn.request("GET", url)
    response = conn.getresponse()
    first = time.perf_counter() - t0
    body = response.read()
    total = time.perf_counter() - t0
    conn.close()
    assert response.status == 200, (url, response.status, body[:300])
    return first, total, body


def rows(body: bytes) -> int:
    """Rollout rows on a list page (each has a compare checkbox)."""
    return body.count(b'name="pick"')


def peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rollouts", type=int, default=100_000)
    parser.add_argument("--file", type=Path, default=ROOT / "results" / "bench-view.jsonl")
    args = parser.parse_args()
    path: Path = args.file
    if not path.exists() or _count_lines(path) != args.rollouts:
        t0 = time.perf_counter()
        generate(path, args.rollouts)
        print(f"generated {path} in {time.perf_counter() - t0:.1f}s")
    size = path.stat().st_size
    _count_lines(path)  # warm the page cache, as a file just written by `gym collect` would be
    print(f"file: {args.rollouts:,} rollouts, {size / 1e9:.2f} GB, {size / args.rollouts / 1e3:.1f} KB/rollout")

    page = min(500, -(-args.rollouts // 50))  # page 500 of the list, or the last page of a small file
    # the request log goes to a file: a pipe nobody reads fills up and stalls the viewer
    log = tempfile.TemporaryFile("w+")
    t_start = time.perf_counter()
    proc = subprocess.Popen([GYM, "view", str(path), "--port", "0"], stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        line = proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        if not match:
            log.seek(0)
            raise AssertionError(f"no URL in {line!r}; stderr: {log.read()[-2000:]}")
        port = int(match.group(1))
        listening = time.perf_counter() - t_start
        print(f"server listening after {listening * 1e3:.0f} ms (process start, imports included)")
        cold_overview = ttfb(port, "/")
        cold_page = ttfb(port, f"/rollouts?page={page}")
        status = json.loads(ttfb(port, "/api/status")[2])
        print(f"cold overview   TTFB {cold_overview[0] * 1e3:7.1f} ms  (whole page {cold_overview[1] * 1e3:.1f} ms)")
        print(f"cold page {page:<5} TTFB {cold_page[0] * 1e3:7.1f} ms  (whole page {cold_page[1] * 1e3:.1f} ms, "
              f"{rows(cold_page[2])} rows)")
        print(f"  at that moment: {status['lines']:,} lines found, {status['parsed']:,} parsed")
        full = min(50, args.rollouts - 50 * (page - 1))
        while True:  # how soon that page has all its rows
            first, _, body = ttfb(port, f"/rollouts?page={page}")
            if rows(body) == full:
                break
            time.sleep(0.01)
        print(f"page {page} complete {time.perf_counter() - t_start - listening:.2f} s after listening "
              f"(TTFB then {first * 1e3:.1f} ms)")
        while not status["done"]:
            time.sleep(0.05)
            status = json.loads(ttfb(port, "/api/status")[2])
        indexed = time.perf_counter() - t_start
        print(f"whole file indexed {indexed:.2f} s after start: "
              f"{(indexed - listening) / args.rollouts * 1e6:.1f} us/rollout, {size / 1e6 / (indexed - listening):.0f} MB/s")
        for label, url in [("warm overview", "/"), (f"warm page {page}", f"/rollouts?page={page}"),
                           ("tasks page 100", "/tasks?page=100"),
                           (f"sorted page {page}", f"/rollouts?page={page}&sort=-reward"),
                           ("filtered page 50", "/rollouts?page=50&reward_max=0.5&tool=read_file"),
                           ("search page 1", "/rollouts?q=off+by+one"),
                           ("one rollout", f"/rollouts/{args.rollouts // 2}"),
                           ("compare", f"/compare?a={args.rollouts // 2}&b={args.rollouts // 2 + 1}")]:
            once = ttfb(port, url)[0]  # the first call fills the selection/overview caches
            first, total, _ = ttfb(port, url)
            print(f"{label:<16} TTFB {once * 1e3:7.1f} ms first, {first * 1e3:5.1f} ms again "
                  f"(whole page {total * 1e3:.1f} ms)")
        rss = peak_rss_mb(proc.pid)
        print(f"viewer peak RSS {rss:.0f} MB for a {size / 1e6:.0f} MB file "
              f"({rss * 1e6 / args.rollouts / 1e3:.2f} KB/rollout)")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


if __name__ == "__main__":
    main()
