"""The instrument's own ceiling: a bare aiohttp + orjson client, none of gymcore's collection
code, running the same weather rollouts against the same fake server, so collection figures
can be read against what the round trips alone allow on this machine.

    python bench/raw_floor.py [--latency-ms 100] [--parallel 64] [--rollouts 4000]
    python bench/raw_floor.py --url URL --input TASKS --parallel 64 --json   # used by run.py

A rollout sends the task's own request, answers the model's function call with a fixed tool
output, and sends the second request: the bodies gymcore sends, minus everything gymcore adds
(tool routing, verify, the output line, metrics, retries). It sends requests as gymcore does:
on Python 3.11 each leaves in the loop turn it is made (gymcore.eager_requests), as aiohttp
does by itself on 3.12+. Reports rollouts/s, the ratio to parallel / (2 x latency), and the
CPU of this process per rollout (imports excluded).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import time
from pathlib import Path

import aiohttp
import orjson

from gymcore.eager_requests import requests_sent_at_once

TOOL_OUTPUT = '{"city": "Paris", "temperature_c": 21, "conditions": "sunny"}'


async def bare_rollouts(url: str, tasks: list[dict], parallel: int) -> float:
    """Run every task once with ``parallel`` in flight; return the wall time."""
    jobs = iter(tasks)
    headers = {"Content-Type": "application/json", "Authorization": "Bearer sk-bench"}
    connector = aiohttp.TCPConnector(limit=0)
    with requests_sent_at_once():
        async with aiohttp.ClientSession(connector=connector, headers=headers) as http:
            async def post(body: dict) -> dict:
                async with http.post(f"{url}/responses", data=orjson.dumps(body)) as resp:
                    return orjson.loads(await resp.read())

            async def worker() -> None:
                for task in jobs:
                    params = task["responses_create_params"]
                    items = list(params["input"])
                    for _ in range(2):
                        output = (await post({**params, "model": "bench", "input": items}))["output"]
                        items += output
                        items += [{"type": "function_call_output", "call_id": item["call_id"],
                                   "output": TOOL_OUTPUT}
                                  for item in output if item.get("type") == "function_call"]

            started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(parallel)))
            return time.perf_counter() - started


def measure(url: str, input_path: Path, parallel: int) -> dict:
    tasks = [orjson.loads(line) for line in input_path.read_bytes().splitlines() if line.strip()]
    cpu = time.process_time()
    wall = asyncio.run(bare_rollouts(url, tasks, parallel))
    return {"rollouts": len(tasks), "wall_s": wall, "cpu_s": time.process_time() - cpu,
            "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running fake server's /v1 URL (default: start one)")
    parser.add_argument("--input", type=Path, help="tasks JSONL (default: --rollouts weather tasks)")
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--parallel", type=int, default=64)
    parser.add_argument("--rollouts", type=int, default=4000)
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = parser.parse_args()
    server = None
    if args.url is None:
        from run import FakeServer  # bench/ is on sys.path when run as a script

        server = FakeServer(args.latency_ms)
        args.url = server.url
    try:
        if args.input is None:
            import tempfile

            from run import make_input

            args.input = make_input(Path(tempfile.mkdtemp()), args.rollouts)
        result = measure(args.url, args.input, args.parallel)
    finally:
        if server is not None:
            server.close()
    if args.json:
        print(json.dumps(result))
        return
    rate = result["rollouts"] / result["wall_s"]
    limit = args.parallel / (2 * args.latency_ms / 1000) if args.latency_ms else None
    print(f"bare client, {args.latency_ms:g} ms, {args.parallel} in flight: {rate:.0f} rollouts/s"
          + (f", {rate / limit:.3f} of the limit {limit:.0f}" if limit else "")
          + f", {1000 * result['cpu_s'] / result['rollouts']:.3f} ms CPU per rollout")


if __name__ == "__main__":
    main()
