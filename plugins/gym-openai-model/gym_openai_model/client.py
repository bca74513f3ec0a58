"""The HTTP client: one shared aiohttp session posting orjson bodies.

The ``openai`` SDK costs ~4 ms of CPU per two-call rollout against 0.23 ms for raw aiohttp
+ orjson (measured on a 2-core machine), so the hot path does not go through it; its
pydantic models validate what we accept, in the tests.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson

from gymcore import __version__
from gymcore.backends import DEFAULT_MODEL_TIMEOUT
from gymcore.errors import ModelError
from gymcore.replies import reply_failure

if TYPE_CHECKING:  # typed request params from the openai SDK, without importing it at run time
    from openai.types.responses import ResponseCreateParams

from .chat import chat_to_response, request_to_chat
from .replicas import Replicas, split_base_urls


def _retry_after(headers: Any) -> float | None:
    """Seconds the server asks us to wait: ``retry-after-ms``, or ``Retry-After`` as seconds
    or as an HTTP date (RFC 9110 allows both; proxies and gateways send dates)."""
    for name in ("retry-after-ms", "retry-after"):
        value = headers.get(name)
        if value:
            try:
                seconds = float(value)
            except ValueError:
                return _seconds_until(value) if name == "retry-after" else None
            return seconds / 1000 if name.endswith("ms") else seconds
    return None


def _seconds_until(http_date: str) -> float | None:
    try:
        when = parsedate_to_datetime(http_date)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # "-0000": UTC by RFC 5322
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def error_message(status: int, body: bytes) -> str:
    """``401 invalid_request_error: Incorrect API key`` from an OpenAI-style error body."""
    try:
        data = orjson.loads(body)
        error = data.get("error") if isinstance(data, dict) else None
        if isinstance(error, dict):
            kind = error.get("type") or error.get("code") or "error"
            return f"{status} {kind}: {error.get('message') or ''}".strip()
        if isinstance(error, str):
            return f"{status}: {error}"
        if isinstance(data, dict) and "detail" in data:
            return f"{status}: {data['detail']}"
    except (orjson.JSONDecodeError, AttributeError):
        pass
    text = body[:300].decode("utf-8", "replace").strip()
    return f"{status}: {text or 'no body'}"


class _Refused(Exception):
    """A replica refused the connection: ``error`` is what the caller sees if all do."""

    def __init__(self, error: ModelError):
        self.error = error


class OpenAIBackend:
    """``create_response`` for one model on one OpenAI-compatible server."""

    def __init__(self, model: str, *, mode: str = "openai", api_key: str | None = None,
                 base_url: str = "https://api.openai.com/v1", organization: str | None = None,
                 project: str | None = None, timeout: float = DEFAULT_MODEL_TIMEOUT, return_tokens: bool = False,
                 **_ignored: Any):
        self.model = model
        self.return_tokens = return_tokens  # Chat Completions only: ask vLLM for token ids and logprobs
        self.mode = mode
        self.label = f"{mode}:{model}"
        # several base URLs (a list, or comma-separated): replicas of one model (see replicas.py)
        self.replicas = Replicas(split_base_urls(base_url))
        self.base_url = self.replicas.replicas[0].url
        self._path = "/chat/completions" if mode == "openai-chat" else "/responses"
        self.url = self.base_url + self._path
        self._headers = {"Content-Type": "application/json", "Accept": "application/json",
                         "User-Agent": f"gymcore/{__version__}"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        if organization:
            self._headers["OpenAI-Organization"] = organization
        if project:
            self._headers["OpenAI-Project"] = project
        self.timeout = timeout  # seconds per attempt: a call with no answer by then is a timeout
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:  # never show the key
        return f"OpenAIBackend({self.label!r}, base_url={self.base_url!r})"

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # limit=0: the collector's --parallel bounds concurrency, not the pool.
            connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(headers=self._headers, connector=connector,
                                                  timeout=self._timeout, json_serialize=None)
        return self._session

    def _not_found_hint(self, url: str) -> str:
        """What a 404/405 most likely means: a base URL without ``/v1``, or (Responses mode)
        a server that speaks only Chat Completions."""
        hint = f" from POST {url} (is the base URL right? it usually ends in /v1"
        if self.mode != "openai-chat":
            hint += f"; if the server speaks only Chat Completions, use --model openai-chat:{self.model}"
        return hint + ")"

    async def post(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body`` to the rollout's replica; return the parsed JSON or raise
        :class:`ModelError`. A replica that refuses the connection (nothing was sent) is
        passed over for a while and the call goes to another, once per replica."""
        tried: set[int] = set()
        while True:
            replica = self.replicas.pick(tried)
            tried.add(id(replica))
            replica.in_flight += 1
            replica.calls += 1
            try:
                return await self._post_to(replica.url + self._path, body)
            except _Refused as refused:
                self.replicas.refused(replica)
                if len(tried) >= len(self.replicas.replicas):
                    raise refused.error from None
            finally:
                replica.in_flight -= 1

    async def _post_to(self, url: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            async with self._client().post(url, data=orjson.dumps(body)) as resp:
                raw = await resp.read()
                if resp.status >= 400:
                    kind = "auth" if resp.status in (401, 403) else "http"
                    where = self._not_found_hint(url) if resp.status in (404, 405) else ""
                    raise ModelError(f"{self.label}: {error_message(resp.status, raw)}{where}", status=resp.status,
                                     kind=kind, retry_after=_retry_after(resp.headers))
        except aiohttp.ClientConnectorError as exc:  # refused: another replica may take it
            raise _Refused(ModelError(f"{self.label}: cannot reach {url}: {exc}", kind="connection")) from None
        except aiohttp.ClientConnectionError as exc:
            raise ModelError(f"{self.label}: cannot reach {url}: {exc}", kind="connection") from None
        except asyncio.TimeoutError:
            raise ModelError(f"{self.label}: no answer from {url} within {self.timeout:g}s (--model-timeout)",
                             kind="timeout") from None
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise ModelError(f"{self.label}: {url} answered {resp.status} with a body that is not JSON",
                             status=resp.status, kind="protocol") from None
        if not isinstance(data, dict):
            raise ModelError(f"{self.label}: expected a JSON object from {url}", status=resp.status,
                             kind="protocol")
        return data

    async def create_response(self, request: ResponseCreateParams) -> dict[str, Any]:
        if self.mode == "openai-chat":
            data = await self.post(request_to_chat(request, self.model, tokens=self.return_tokens))
            try:
                return chat_to_response(data, request, tokens=self.return_tokens, label=self.label)
            except (KeyError, IndexError, TypeError) as exc:
                raise ModelError(f"{self.label}: malformed chat completion ({type(exc).__name__}: {exc})",
                                 kind="protocol") from None
        body = dict(request)
        body["model"] = self.model
        data = await self.post(body)
        if not isinstance(data.get("output"), list) and reply_failure(data, self.label) is None:
            # (a failed reply may have no output: gymcore files it as a model failure)
            raise ModelError(f"{self.label}: response has no 'output' list", kind="protocol")
        return data

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
