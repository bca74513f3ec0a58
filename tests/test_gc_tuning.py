"""Thousands of rollouts in flight keep their state alive through many young-generation
collections, so CPython's default thresholds run a full collection of that whole heap every
time it grows by a quarter: a third of the collector's CPU at 5,000 in flight
(bench/scale.py). A collection widens the young generation for its run, and gives the
process back its own thresholds after."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path

from gymcore import hookimpl
from gymcore.collector import CollectConfig, collect

from .conftest import weather_tasks


class ThresholdProbe:
    def __init__(self):
        self.seen = set()

    @hookimpl
    def list_tools(self):
        return []

    @hookimpl
    async def verify(self, session, response):
        self.seen.add(gc.get_threshold())
        return None  # abstain: weather scores


def run(tmp_path, plugins, monkeypatch, fake_openai, parallel: int, name: str) -> ThresholdProbe:
    probe = ThresholdProbe()
    plugins.register(probe, name=name)
    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai.url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    tasks = weather_tasks(tmp_path / f"{name}.jsonl", 40)
    config = CollectConfig(agent=f"weather,{name}", output=tmp_path / f"{name}.out.jsonl", model="openai:m",
                           input=Path(tasks), parallel=parallel, progress=False)
    summary = asyncio.run(collect(plugins, config))
    assert summary["rollouts"] == 40 and summary["failed"] == 0
    return probe


def test_a_run_widens_the_young_generation_and_restores_the_thresholds(tmp_path, plugins, monkeypatch,
                                                                        fake_openai):
    before = gc.get_threshold()
    probe = run(tmp_path, plugins, monkeypatch, fake_openai, parallel=40, name="probe")
    assert probe.seen and all(young > before[0] for young, _, _ in probe.seen), (before, probe.seen)
    assert gc.get_threshold() == before
