"""Rollouts on ``gym serve`` runners: :class:`ServedRunner`, chosen by ``gym collect --server``.

Each rollout is one ``POST /agents/{agent}/rollouts``, so all of a rollout's model calls,
tool calls and its verify happen on the one runner that holds its session. Rollouts go to
the runner with the fewest in flight (ties in turn). A runner that refuses the connection
is skipped for a while and the rollout tries the next; a runner that fails mid-rollout
gives that rollout an ``error`` of type ``server`` (nothing is retried behind your back).
"""

from __future__ import annotations

import asyncio
import itertools
import shutil
import tempfile
import time
from pathlib import Path

import aiohttp
import attrs
import orjson

from .agent import AgentConfig
from .data import Rollout, Task, Timing, converter
from .errors import GymError
from .runners import split_agent

#: How long a runner that refused a connection is passed over.
DOWN_FOR_S = 5.0


@attrs.define(eq=False)
class _Runner:
    url: str
    in_flight: int = 0
    down_until: float = 0.0


def _error_text(status: int, raw: bytes) -> str:
    try:
        error = orjson.loads(raw)["error"]
        return f"{status} {error['type']}: {error['message']}"
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return f"{status}: {raw[:300].decode('utf-8', 'replace').strip() or 'no body'}"


class ServedRunner:
    """The :class:`~gymcore.runners.RolloutRunner` of served collection; build with :meth:`create`."""

    def __init__(self, urls: list[str], agent: str, config: AgentConfig, *, token: str | None = None):
        if not urls:
            raise GymError("no --server given")
        self.runners = [_Runner(url.rstrip("/")) for url in urls]
        self.agent = "+".join(split_agent(agent))
        self.config = config
        self.model_label = ""
        self.is_replay = False
        self.judge_model: str | None = None  # the runners' --judge-model and --return-tokens
        self.return_tokens = False
        self.example_dataset_path: Path | None = None  # a temporary copy of the runner's
        self.example_dataset_name: str | None = None  # ... and the URL it came from
        self._tmp: Path | None = None
        self._turn = itertools.count()
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        # limit=0: the collector's --parallel bounds concurrency; a rollout may take minutes.
        self.http = aiohttp.ClientSession(
            headers=headers, connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=30), json_serialize=None)

    @classmethod
    async def create(cls, urls: list[str], agent: str, config: AgentConfig, *, token: str | None = None,
                     model: str | None = None, need_dataset: bool = False) -> "ServedRunner":
        """Check that every runner hosts ``agent`` with the same model (and ``model``, if
        given); fetch the agent's example dataset if ``need_dataset``."""
        runner = cls(urls, agent, config, token=token)
        try:
            await runner._check(model)
            if need_dataset:
                await runner._fetch_dataset()
        except BaseException:
            await runner.aclose()
            raise
        return runner

    async def _get(self, url: str) -> aiohttp.ClientResponse:
        try:
            resp = await self.http.get(url)
        except aiohttp.ClientError as exc:
            raise GymError(f"cannot reach gym server {url}: {exc}") from None
        if resp.status >= 400:
            raise GymError(f"gym server {url}: {_error_text(resp.status, await resp.read())}")
        return resp

    async def _check(self, model: str | None) -> None:
        labels, settings = {}, {}
        for runner in self.runners:
            async with await self._get(runner.url + "/") as resp:
                index = orjson.loads(await resp.read())
            hosted = {a["name"]: a for a in index.get("agents", [])}
            info = hosted.get(self.agent)
            if info is None:
                raise GymError(f"gym server {runner.url} does not host agent {self.agent!r} "
                               f"(it hosts: {', '.join(hosted) or 'nothing'})")
            if model and index.get("model_spec") != model:
                raise GymError(f"gym server {runner.url} serves model {index.get('model_spec')!r}, not --model "
                               f"{model!r}; drop --model or restart it with that model")
            labels[runner.url] = info["model"]
            settings[runner.url] = (index.get("judge_model_spec"), bool(index.get("return_tokens")))
            self.is_replay = self.is_replay or bool(info.get("is_replay"))
        if len(set(labels.values())) > 1:
            raise GymError("gym servers run different models, which would mix data: "
                           + ", ".join(f"{url} {label}" for url, label in labels.items()))
        if len(set(settings.values())) > 1:
            raise GymError("gym servers differ in --judge-model or --return-tokens, which would mix data: "
                           + ", ".join(f"{url} judge {judge!r}, return tokens {tokens}"
                                       for url, (judge, tokens) in settings.items()))
        self.model_label = next(iter(labels.values()))
        self.judge_model, self.return_tokens = next(iter(settings.values()))

    async def _fetch_dataset(self) -> None:
        url = f"{self.runners[0].url}/agents/{self.agent}/dataset"
        self._tmp = Path(tempfile.mkdtemp(prefix="gym-served-"))
        path = self._tmp / f"{self.agent}.example.jsonl"
        async with await self._get(url) as resp:
            with open(path, "wb") as fp:
                async for chunk in resp.content.iter_chunked(1 << 16):
                    fp.write(chunk)
        self.example_dataset_path = path
        self.example_dataset_name = url

    def _pick(self, tried: set[int]) -> _Runner | None:
        """The reachable, untried runner with the fewest rollouts in flight (ties in turn)."""
        n = len(self.runners)
        start = next(self._turn) % n
        now = time.monotonic()
        best = None
        for i in range(n):
            runner = self.runners[(start + i) % n]
            if id(runner) in tried or runner.down_until > now:
                continue
            if best is None or runner.in_flight < best.in_flight:
                best = runner
        return best

    async def run(self, task: Task, task_index: int, rollout_index: int) -> Rollout:
        body = orjson.dumps({
            "task": converter.unstructure(task), "task_index": task_index, "rollout_index": rollout_index,
            "max_steps": self.config.max_steps, "overrides": self.config.overrides,
            "max_retries": self.config.retry.max_retries,
        }, option=orjson.OPT_NON_STR_KEYS)
        tried: set[int] = set()
        while True:
            runner = self._pick(tried) or (None if tried else self._any_runner())
            if runner is None:
                raise GymError("no gym server accepts connections: " + ", ".join(r.url for r in self.runners)
                               + "; the rollouts written so far are kept: start a runner and add --resume")
            tried.add(id(runner))
            url = f"{runner.url}/agents/{self.agent}/rollouts"
            runner.in_flight += 1
            try:
                async with self.http.post(url, data=body) as resp:
                    raw = await resp.read()
            except aiohttp.ClientConnectorError:  # nothing was sent: another runner may take it
                runner.down_until = time.monotonic() + DOWN_FOR_S
                continue
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:  # lost mid-rollout: not redone
                runner.down_until = time.monotonic() + DOWN_FOR_S
                return self._failed(task, task_index, rollout_index, runner.url, f"{type(exc).__name__}: {exc}")
            finally:
                runner.in_flight -= 1
            if resp.status in (400, 401, 403, 404, 413):  # our request or set-up is wrong: stop
                raise GymError(f"gym server {runner.url}: {_error_text(resp.status, raw)}")
            if resp.status >= 400:
                return self._failed(task, task_index, rollout_index, runner.url, _error_text(resp.status, raw))
            return converter.structure(orjson.loads(raw), Rollout)

    def _any_runner(self) -> _Runner | None:
        """All runners are marked down: try the soonest back rather than give up at once."""
        return min(self.runners, key=lambda r: r.down_until)

    def _failed(self, task: Task, task_index: int, rollout_index: int, url: str, message: str) -> Rollout:
        return Rollout(task=task, task_index=task_index, rollout_index=rollout_index, agent=self.agent,
                       model=self.model_label, timing=Timing(),
                       error={"type": "server", "kind": "runner", "status": None,
                              "message": f"gym server {url}: {message}"})

    async def aclose(self) -> None:
        await self.http.close()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
