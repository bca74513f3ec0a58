"""Rollouts on ``gym serve`` runners: :class:`ServedRunner`, chosen by ``gym collect --server``.

Each rollout is one ``POST /agents/{agent}/rollouts``, so all of a rollout's model calls,
tool calls and its verify happen on the one runner that holds its session. Rollouts go to
the runner with the fewest in flight (ties in turn). A runner that refuses the connection
is skipped for a while and the rollout tries the next; one that answers 503 with
``Retry-After`` is full, and the rollout waits for it or goes to another. A runner that fails
mid-rollout, does not answer within ``server_timeout``, refuses the body as too large, or
answers something that is not a valid rollout for the request gives that rollout an
``error`` of type ``server`` (nothing is retried behind your back).
"""

from __future__ import annotations

import asyncio
import itertools
import math
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import attrs
import orjson

from .agent import AgentConfig
from .data import Rollout, Task, Timing, converter
from .errors import GymError
from .runners import split_agent

#: How long a runner that refused a connection (or froze) is passed over.
DOWN_FOR_S = 5.0
#: ``--server-timeout``: how long one rollout request may wait for its answer. Finite, so a
#: frozen runner ends in failures rather than a hung run; a rollout's own bound is --timeout.
DEFAULT_SERVER_TIMEOUT = 1800.0
#: The longest ``Retry-After`` of a full runner that is honoured as given.
MAX_RETRY_AFTER_S = 60.0
#: How long a runner that timed out gets to answer ``GET /health`` before it is sent more.
PROBE_TIMEOUT_S = 10.0


@attrs.define(eq=False)
class _Runner:
    url: str
    in_flight: int = 0
    down_until: float = 0.0
    full_until: float = 0.0  # answered 503 + Retry-After: no new rollouts before then
    suspect: bool = False  # a request to it timed out: it must answer /health before it gets more


class ProtocolError(Exception):
    """A runner's 200 reply that is not a valid rollout for the request that was sent."""


def _retry_after(value: str | None) -> float | None:
    """A ``Retry-After`` in seconds (``None`` if absent or not a number of seconds)."""
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return None
    return min(seconds, MAX_RETRY_AFTER_S)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def rollout_from_reply(raw: bytes, task: Task, task_index: int, rollout_index: int) -> Rollout:
    """The rollout in a runner's 200 reply, checked as strictly as an input row: raise
    :class:`ProtocolError` naming the field. The row is the one that was sent, not the
    runner's copy of it."""
    try:
        line = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        shown = raw[:80].decode("utf-8", "replace") if raw.strip() else "an empty body"
        raise ProtocolError(f"the reply is not JSON ({exc}): {shown!r}") from None
    if not isinstance(line, dict):
        raise ProtocolError(f"the reply is not a JSON object but {type(line).__name__}")

    def field(name: str, ok: bool, expected: str) -> None:
        if name not in line:
            raise ProtocolError(f"the reply has no field {name!r}")
        if not ok:
            raise ProtocolError(f"field {name!r}: expected {expected}, got {line[name]!r:.80}")

    for name, sent in (("task_index", task_index), ("rollout_index", rollout_index)):
        field(name, _is_count(line.get(name)) and line.get(name) == sent, f"{sent}, the one the request sent")
    error = line.get("error")
    field("error", error is None or isinstance(error, dict) and isinstance(error.get("type"), str),
          "null or an object with a 'type'")
    reward = line.get("reward")
    if error is None:
        field("reward", _is_number(reward), "a finite number")  # any: rewards as RL uses them
    else:
        field("reward", reward is None, "null, as the rollout failed")
    field("response", line.get("response") is None or isinstance(line.get("response"), dict), "an object or null")
    names = line.get("metric_names", [])
    if not (isinstance(names, list) and all(isinstance(n, str) and n in line for n in names)):
        raise ProtocolError(f"field 'metric_names': expected the names of fields in the reply, got {names!r:.80}")
    for name in ("turns", "tool_calls", "tool_errors"):
        if name in line:
            field(name, _is_count(line[name]), "a whole number >= 0")
    timing = line.get("timing", {})
    if not (isinstance(timing, dict) and all(_is_number(v) and v >= 0 for v in timing.values())
            and set(timing) <= {"total_s", "model_s", "tools_s", "verify_s"}):
        raise ProtocolError(f"field 'timing': expected an object of seconds, got {timing!r:.80}")
    for name in ("agent", "model", "stop_reason"):
        value = line.get(name)
        if value is not None and not isinstance(value, str):
            raise ProtocolError(f"field {name!r}: expected a string, got {value!r:.80}")
    line["responses_create_params"] = line.get("responses_create_params") or {}
    try:
        rollout = converter.structure(line, Rollout)
    except Exception as exc:  # anything the checks above missed is still the runner's fault
        raise ProtocolError(f"the reply is not a rollout: {type(exc).__name__}: {exc}") from None
    rollout.task = task
    return rollout


def _error_text(status: int, raw: bytes) -> str:
    try:
        error = orjson.loads(raw)["error"]
        return f"{status} {error['type']}: {error['message']}"
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return f"{status}: {raw[:300].decode('utf-8', 'replace').strip() or 'no body'}"


class ServedRunner:
    """The :class:`~gymcore.runners.RolloutRunner` of served collection; build with :meth:`create`."""

    def __init__(self, urls: list[str], agent: str, config: AgentConfig, *, token: str | None = None,
                 server_timeout: float | None = None):
        if not urls:
            raise GymError("no --server given")
        self.runners = [_Runner(url.rstrip("/")) for url in urls]
        self.agent = "+".join(split_agent(agent))
        self.config = config
        self.server_timeout = server_timeout or DEFAULT_SERVER_TIMEOUT
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
        # Idle connections are dropped after 5 s, well before a runner's --read-timeout closes
        # them, so a request never goes out on a connection the runner is closing.
        self.http = aiohttp.ClientSession(
            headers=headers, connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=5),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=30), json_serialize=None)

    @classmethod
    async def create(cls, urls: list[str], agent: str, config: AgentConfig, *, token: str | None = None,
                     model: str | None = None, need_dataset: bool = False,
                     server_timeout: float | None = None) -> "ServedRunner":
        """Check that every runner hosts ``agent`` with the same model (and ``model``, if
        given); fetch the agent's example dataset if ``need_dataset``."""
        runner = cls(urls, agent, config, token=token, server_timeout=server_timeout)
        try:
            await runner._check(model)
            if need_dataset:
                await runner._fetch_dataset()
        except BaseException:
            await runner.aclose()
            raise
        return runner

    async def _get(self, url: str) -> aiohttp.ClientResponse:
        """A quick request of the set-up (index, dataset headers): a minute at most."""
        seconds = min(self.server_timeout, 60.0)
        try:
            async with asyncio.timeout(seconds):
                resp = await self.http.get(url)
        except TimeoutError:
            raise GymError(f"gym server {url} did not answer within {seconds:g}s (frozen or overloaded?)") from None
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
        """The reachable, untried, not full runner with the fewest rollouts in flight (ties in turn)."""
        n = len(self.runners)
        start = next(self._turn) % n
        now = time.monotonic()
        best = None
        for i in range(n):
            runner = self.runners[(start + i) % n]
            if id(runner) in tried or runner.down_until > now or runner.full_until > now:
                continue
            if best is None or runner.in_flight < best.in_flight:
                best = runner
        return best

    async def run(self, task: Task, task_index: int, rollout_index: int) -> Rollout:
        body = orjson.dumps({
            "task": converter.unstructure(task), "task_index": task_index, "rollout_index": rollout_index,
            "max_steps": self.config.max_steps, "overrides": self.config.overrides,
            "max_retries": self.config.retry.max_retries,
            **({"seed_repeats": True} if self.config.seed_repeats else {}),
        }, option=orjson.OPT_NON_STR_KEYS)
        failed = lambda url, message, kind="runner", status=None: self._failed(  # noqa: E731
            task, task_index, rollout_index, url, message, kind=kind, status=status)
        tried: set[int] = set()
        while True:
            runner = self._pick(tried) or (None if tried else self._any_runner())
            if runner is None:
                full = [r for r in self.runners if r.full_until > time.monotonic() and r.down_until <= time.monotonic()]
                if not full:
                    raise GymError("no gym server accepts connections: " + ", ".join(r.url for r in self.runners)
                                   + "; the rollouts written so far are kept: start a runner and add --resume")
                # every runner that is up is full: wait for the first to have room, then try all again
                await asyncio.sleep(max(min(r.full_until for r in full) - time.monotonic(), 0.01))
                tried.clear()
                continue
            tried.add(id(runner))
            if runner.suspect and not await self._alive(runner):  # frozen: like a refused connection
                runner.down_until = time.monotonic() + DOWN_FOR_S
                continue
            url = f"{runner.url}/agents/{self.agent}/rollouts"
            runner.in_flight += 1
            try:
                async with asyncio.timeout(self.server_timeout):  # a frozen runner never answers
                    async with self.http.post(url, data=body) as resp:
                        raw = await resp.read()
            except aiohttp.ClientConnectorError:  # nothing was sent: another runner may take it
                runner.down_until = time.monotonic() + DOWN_FOR_S
                continue
            except TimeoutError:  # not redone: it may have run there
                runner.down_until = time.monotonic() + DOWN_FOR_S
                runner.suspect = True
                return failed(runner.url, f"no answer within --server-timeout {self.server_timeout:g}s (the runner "
                              "is frozen or overloaded; raise --server-timeout if rollouts take longer)", "timeout")
            except aiohttp.ClientError as exc:  # lost mid-rollout: not redone
                runner.down_until = time.monotonic() + DOWN_FOR_S
                return failed(runner.url, f"{type(exc).__name__}: {exc}")
            finally:
                runner.in_flight -= 1
            wait = _retry_after(resp.headers.get("Retry-After")) if resp.status == 503 else None
            if wait is not None:  # full, not failed: this rollout waits for room here or elsewhere
                runner.full_until = time.monotonic() + max(wait, 0.05)
                continue
            if resp.status == 413:  # this row is too big for that runner; the others may be fine
                text = _error_text(resp.status, raw)
                hint = "" if "--max-body-size" in text else "; start the runner with a larger --max-body-size"
                return failed(runner.url, f"{text} (this rollout's request is {len(body):,} bytes){hint}",
                              "http", 413)
            if resp.status in (400, 401, 403, 404, 415):  # our request or set-up is wrong: stop
                raise GymError(f"gym server {runner.url}: {_error_text(resp.status, raw)}")
            if resp.status != 200:
                return failed(runner.url, _error_text(resp.status, raw))
            try:
                return rollout_from_reply(raw, task, task_index, rollout_index)
            except ProtocolError as exc:
                return failed(runner.url, f"a wrong reply to POST /agents/{self.agent}/rollouts: {exc}", "protocol")

    async def _alive(self, runner: _Runner) -> bool:
        """Whether a runner that timed out answers ``GET /health`` now (then it is trusted again)."""
        try:
            async with asyncio.timeout(min(PROBE_TIMEOUT_S, self.server_timeout)):
                async with self.http.get(runner.url + "/health") as resp:
                    await resp.read()
        except (aiohttp.ClientError, TimeoutError):
            return False
        runner.suspect = resp.status != 200
        return not runner.suspect

    def _any_runner(self) -> _Runner | None:
        """All runners are marked down: try the soonest back rather than give up at once."""
        return min(self.runners, key=lambda r: r.down_until)

    def _failed(self, task: Task, task_index: int, rollout_index: int, url: str, message: str, *,
                kind: str = "runner", status: int | None = None) -> Rollout:
        return Rollout(task=task, task_index=task_index, rollout_index=rollout_index, agent=self.agent,
                       model=self.model_label, timing=Timing(),
                       error={"type": "server", "kind": kind, "status": status,
                              "message": f"gym server {url}: {message}"})

    async def aclose(self) -> None:
        await self.http.close()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
