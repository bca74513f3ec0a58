"""Where a rollout's CPU goes: an in-process collection against the fake server (in its own
process) under pyinstrument, its samples grouped by who spent them.

    python bench/profile.py [--rollouts 6000] [--latency-ms 0] [--parallel 64] [--html FILE]

Prints the share of the collector's busy time (time waiting in epoll left out) spent in
aiohttp, the asyncio loop, socket system calls, JSON, gymcore and its plugins, and so on,
then gymcore's own heaviest functions. Sampling slows the run down, so read shares, not
milliseconds; bench/run.py measures the milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
from collections import Counter
from pathlib import Path

from pyinstrument import Profiler

from gymcore.collector import CollectConfig, collect
from gymcore.plugins import load_plugins
from run import FakeServer, make_input  # bench/ is on sys.path when run as a script

OURS = ("/gymcore/", "/gym_weather/", "/gym_openai_model/")


def group_of(path: str, function: str, caller_group: str) -> str:
    """The group a frame's self time belongs to; built-ins go to their caller's group, except
    JSON and socket calls, which are named."""
    if function in ("epoll.poll", "poll", "select"):
        return "idle"
    if not path or path.startswith("<built-in"):
        if function in ("loads", "dumps"):
            return "orjson"
        if function.startswith("socket."):
            return "socket system calls"
        if function.startswith(("BufferedWriter.", "FileIO.")):
            return "output file writes"
        return caller_group
    for marker, name in (("site-packages/aiohttp/", "aiohttp"), ("site-packages/yarl/", "aiohttp"),
                         ("site-packages/multidict/", "aiohttp"), ("/asyncio/", "asyncio loop"),
                         ("selectors.py", "asyncio loop"), ("site-packages/pluggy/", "pluggy"),
                         ("site-packages/jsonlines/", "jsonlines"), ("site-packages/attr", "attrs/cattrs"),
                         ("site-packages/cattrs/", "attrs/cattrs")):
        if marker in path:
            return name
    if any(marker in path for marker in OURS):
        return "gymcore + plugins"
    return "other"


def breakdown(root) -> tuple[Counter, Counter]:
    groups: Counter = Counter()
    ours: Counter = Counter()

    def walk(frame, caller_group: str, our_function: str | None) -> None:
        path, function = frame.file_path or "", frame.function
        if function == "[self]":
            group = caller_group
        else:
            group = group_of(path, function, caller_group)
            if any(marker in path for marker in OURS):
                our_function = f"{Path(path).name}:{function}"
            elif path and not path.startswith("<built-in"):
                our_function = None
        groups[group] += frame.total_self_time
        if our_function and group in ("gymcore + plugins", "orjson"):
            ours[our_function] += frame.total_self_time
        for child in frame.children:
            walk(child, "idle" if group == "idle" else group, our_function)

    walk(root, "other", None)
    return groups, ours


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rollouts", type=int, default=6000)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--parallel", type=int, default=64)
    parser.add_argument("--html", type=Path, help="also write pyinstrument's full HTML report here")
    args = parser.parse_args()
    server = FakeServer(args.latency_ms)
    os.environ.update(OPENAI_BASE_URL=server.url, OPENAI_API_KEY="sk-bench")
    profiler = Profiler(interval=0.0002, async_mode="disabled")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            config = CollectConfig(agent="weather", model="openai:bench", output=Path(tmp) / "out.jsonl",
                                   input=make_input(Path(tmp), args.rollouts), parallel=args.parallel,
                                   progress=False)
            plugins = load_plugins()
            profiler.start()
            asyncio.run(collect(plugins, config))
            profiler.stop()
    finally:
        server.close()
    groups, ours = breakdown(profiler.last_session.root_frame())
    idle = groups.pop("idle", 0.0)
    busy = sum(groups.values())
    print(f"{args.rollouts} rollouts, {args.latency_ms:g} ms, parallel {args.parallel}: "
          f"the loop waited in epoll {100 * idle / (idle + busy):.0f}% of the time; of the rest:")
    for name, seconds in groups.most_common():
        print(f"  {name:24s} {100 * seconds / busy:5.1f}%")
    print("gymcore's heaviest functions (self time, JSON calls included):")
    for name, seconds in ours.most_common(12):
        print(f"  {name:40s} {100 * seconds / busy:5.1f}%")
    if args.html:
        args.html.write_text(profiler.output_html())
        print(f"wrote {args.html}")


if __name__ == "__main__":
    main()
