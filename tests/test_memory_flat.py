"""A long collection keeps no per-rollout state: 20,000 rollouts against the fake server
(in its own process), with the live-object count sampled along the way. Counts objects, never
time, so a leak fails CI while a slow machine does not."""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
from pathlib import Path

from gymcore import hookimpl
from gymcore.collector import CollectConfig, collect
from gymcore.data import Rollout, Session

from .conftest import ROOT, weather_tasks

N = 20_000
PARALLEL = 64


class MemoryProbe:
    """A resource plugin composed with weather; its verify samples the heap now and then."""

    def __init__(self, every: int):
        self.every, self.calls, self.samples = every, 0, []

    @hookimpl
    def list_tools(self):
        return []

    @hookimpl
    async def verify(self, session, response):
        self.calls += 1
        if self.calls % self.every == 0:
            gc.collect()
            objects = gc.get_objects()
            self.samples.append({
                "at": self.calls,
                "objects": len(objects),
                "rollouts": sum(isinstance(o, Rollout) for o in objects),
                "sessions": sum(isinstance(o, Session) for o in objects),
            })
        return None  # abstain: weather scores


def test_collector_memory_stays_flat(tmp_path, plugins, monkeypatch):
    server = subprocess.Popen([sys.executable, str(ROOT / "tests/fake_openai.py"), "--port", "0"],
                              stdout=subprocess.PIPE, text=True)
    try:
        url = server.stdout.readline().split()[-1]
        tasks = weather_tasks(tmp_path / "tasks.jsonl", N)
        probe = MemoryProbe(every=N // 10)
        plugins.register(probe, name="memprobe")
        monkeypatch.setenv("OPENAI_BASE_URL", url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        out = tmp_path / "out.jsonl"
        config = CollectConfig(agent="weather,memprobe", output=out, model="openai:m", input=Path(tasks),
                               parallel=PARALLEL, progress=False)
        summary = asyncio.run(collect(plugins, config))
    finally:
        server.terminate()
        server.wait(10)
    assert summary["rollouts"] == N and summary["failed"] == 0 and summary["mean_reward"] == 1.0
    assert len(probe.samples) == 10
    for sample in probe.samples:
        # only rollouts in flight are alive (plus the one being verified), and those finished in
        # this turn of the loop, handed to the reader of Collector.stream (which drains them all
        # when it next runs): at most one per worker
        assert sample["rollouts"] <= 2 * PARALLEL + 1, sample
        assert sample["sessions"] <= PARALLEL + 1, sample
    # the second half of the run: the first samples include one-off growth that depends on
    # what ran before in the process (the openai SDK builds pydantic models lazily), not a leak
    first, last = probe.samples[len(probe.samples) // 2 - 1], probe.samples[-1]
    grown = last["objects"] - first["objects"]
    per_rollout = grown / (last["at"] - first["at"])
    assert per_rollout < 0.05, f"{grown} objects more after {last['at'] - first['at']} rollouts: {probe.samples}"
