"""The instrument's own ceiling: a bare aiohttp + orjson client (no gymcore) against the
fake server, so collection ratios can be read against what the round trip alone allows.

    python bench/raw_floor.py [--latency-ms 100] [--parallel 1,64] [--calls 150]

Prints the mean time per call at each concurrency and the ratio latency / that time: the
best any client on this machine can do against this server.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import aiohttp
import orjson

from run import FakeServer  # bench/ is on sys.path when run as a script


async def measure(url: str, parallel: int, calls: int) -> float:
    body = orjson.dumps({"model": "m", "input": [{"role": "user", "content": "weather in Paris"}]})
    times: list[float] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        async def worker() -> None:
            for _ in range(calls):
                t0 = time.perf_counter()
                async with http.post(f"{url}/responses", data=body,
                                     headers={"Content-Type": "application/json"}) as resp:
                    await resp.read()
                times.append(time.perf_counter() - t0)

        await asyncio.gather(*(worker() for _ in range(parallel)))
    steady = times[len(times) // 10:]  # drop the first connections' set-up
    return sum(steady) / len(steady)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--parallel", default="1,64")
    parser.add_argument("--calls", type=int, default=150, help="calls per concurrent client")
    args = parser.parse_args()
    server = FakeServer(args.latency_ms)
    try:
        for parallel in (int(p) for p in args.parallel.split(",")):
            mean = asyncio.run(measure(server.url, parallel, args.calls))
            print(f"{parallel:>5} in flight: {mean * 1000:.1f} ms per {args.latency_ms:g} ms call, "
                  f"ceiling {args.latency_ms / 1000 / mean:.3f} of the limit")
    finally:
        server.close()


if __name__ == "__main__":
    main()
