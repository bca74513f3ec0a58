"""A fake OpenAI-compatible server for tests and benchmarks: real aiohttp, real HTTP.

It serves ``POST /v1/responses`` and ``POST /v1/chat/completions`` with a deterministic
weather-answering policy: on a fresh conversation it calls ``get_weather`` for the city it
recognises in the last user message; once a tool output is in the input it answers with
that output's temperature and conditions. Tests script it further:

* ``script``: a list of canned bodies (Responses shape), served one per request before the
  policy takes over;
* ``faults``: a list of fault specs consumed one per request, in arrival order (``None`` =
  no fault): ``{"status": 429, "retry_after": 0.1}`` (a ``Retry-After`` header),
  ``{"status": 503, "retry_after_ms": 50}`` (``retry-after-ms``), ``{"status": 500}``,
  ``{"reset": True}`` (connection dropped), ``{"hang": 5}`` (answers after 5 s),
  ``{"malformed": True}`` (a 200 whose body is not JSON);
* faults that answer 200 with a bad reply (both APIs unless said): ``{"body": {...}}`` (exactly
  this body, e.g. only an ``error`` object), ``{"patch": {...}}`` (the policy's answer with
  these top-level keys replaced, e.g. ``"status": "failed"`` and an ``error``), ``{"choice":
  {...}}`` (chat: merged into ``choices[0]``, e.g. ``"finish_reason": "abort"``),
  ``{"truncate": N}`` (the policy's tool call with its arguments cut to N characters and all
  of ``max_output_tokens`` / ``max_tokens`` used, yet reported finished, as llama.cpp does);
  ``{"json_body": {...}}`` (a 200 whose body is the usual reply updated with these keys,
  written with the stdlib ``json``, so it may hold what orjson refuses to write);
  ``{"logprob": value}`` (chat with tokens: the first generated token's logprob is ``value``,
  e.g. ``float("nan")``, written with the stdlib ``json``, which writes ``NaN`` as Python
  and some servers do);
* ``rules``: fault specs with a ``"match"`` substring, applied to every request whose raw
  body contains it (before ``faults``), so one task fails whatever the scheduling order;
  ``"times": N`` makes a rule expire after N uses;
* ``latency``: seconds to sleep before each answer; ``jitter``: each sleep is drawn
  uniformly from ``latency ± jitter`` (seeded), as real model latencies vary;
* ``gate``: a ``threading.Event``, set at start; while a test clears it, every request is
  recorded on arrival and answered only once it is set again (a run held mid-way).
* token ids as vLLM (>= 0.10.2) returns them: a chat request with ``return_token_ids: true``
  gets ``prompt_token_ids`` on the response and ``token_ids`` on the choice, with
  ``logprobs: true`` a ``logprobs.content`` entry per generated token. The tokenizer is its
  own and deterministic: the UTF-8 bytes of a fixed chat template (:func:`render_chat`), so
  a conversation's calls extend each other exactly. ``drift_tokens``: later prompts
  re-template earlier assistant turns differently (as templates that strip reasoning do);
  ``omit_tokens``: the fields are never sent, as by a server too old to know them;
* ``max_concurrent``: a rate limit on calls at once: a request that arrives while this many
  are being answered gets a 429 at once (with ``Retry-After: concurrent_retry_after`` when
  that is set); ``peak`` is the most answered at once, ``refused`` the count of such 429s
  (``refused_at``: when each arrived);
* ``chat_only``: no ``/v1/responses`` route, so it answers 404 there, as servers that speak
  only Chat Completions do.

Two servers that are not there, for reachability tests: :func:`refused_url` (a port with
nothing listening) and :func:`frozen_server` (connections are accepted by the kernel and
never answered, as by a SIGSTOPped model server).

Every request's path, headers, body and arrival time (``at``, ``time.monotonic()``) are
kept in ``requests`` (``GET /_requests``), so tests can check retry delays.
Run alone (benchmarks): ``python tests/fake_openai.py --port 0 --latency-ms 100`` prints
``listening on http://127.0.0.1:PORT``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import re
import socket
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterator

from aiohttp import web

try:  # fast JSON keeps the instrument's own latency low in benchmarks
    import orjson

    def _loads(raw: bytes) -> Any:
        return orjson.loads(raw)

    def _json_response(data: Any, status: int = 200, headers: dict | None = None) -> web.Response:
        return web.Response(body=orjson.dumps(data), status=status, headers=headers,
                            content_type="application/json")
except ImportError:  # pragma: no cover
    _loads = json.loads

    def _json_response(data: Any, status: int = 200, headers: dict | None = None) -> web.Response:
        return web.json_response(data, status=status, headers=headers)

ALIASES = {
    "sf": "San Francisco", "nyc": "New York", "la": "Los Angeles",
}
CITIES = [
    "San Francisco", "Paris", "London", "Oslo", "Sydney", "New York", "Tokyo", "Reykjavik", "Denver",
    "Mumbai", "Chicago", "Berlin", "Wellington", "Cape Town", "Toronto", "Seattle", "Buenos Aires",
    "Singapore", "Madrid", "Los Angeles", "Lisbon", "São Paulo", "Amsterdam", "Nairobi",
]


def find_city(text: str) -> str:
    low = text.casefold()
    for city in CITIES:
        if city.casefold() in low:
            return city
    for alias, city in ALIASES.items():
        if re.search(rf"\b{alias}\b", low):
            return city
    return "Nowhere"


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content or [] if isinstance(p, dict))


def spoil(reply: dict[str, Any], request: dict[str, Any], fault: dict[str, Any]) -> None:
    """Make ``reply`` (a Responses body or a chat completion) the bad 200 ``fault`` asks for."""
    chat = "choices" in reply
    if fault.get("truncate") is not None:
        limit = request.get("max_tokens" if chat else "max_output_tokens") or 16
        if chat:
            calls = reply["choices"][0]["message"].get("tool_calls") or []
            functions = [c["function"] for c in calls]
            reply["usage"].update(completion_tokens=limit, total_tokens=reply["usage"]["prompt_tokens"] + limit)
        else:
            functions = [i for i in reply["output"] if i.get("type") == "function_call"]
            reply["usage"].update(output_tokens=limit, total_tokens=reply["usage"]["input_tokens"] + limit)
        for function in functions:
            function["arguments"] = function["arguments"][:fault["truncate"]]
    reply.update(fault.get("patch") or {})
    if chat and fault.get("choice"):
        reply["choices"][0].update(fault["choice"])
    if chat and "logprob" in fault and reply["choices"][0].get("logprobs"):
        reply["choices"][0]["logprobs"]["content"][0]["logprob"] = fault["logprob"]


def _render_turn(message: dict[str, Any]) -> str:
    """What an assistant turn (or its generation) reads as in the fake chat template."""
    text = _text_of(message.get("content"))
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        text += f"<tool_call>{function.get('name')} {function.get('arguments')}</tool_call>"
    return text + "<|end|>\n"


def render_chat(messages: list[dict[str, Any]], *, drift: bool = False) -> str:
    """The fake chat template: ``<|role|>\n`` + content per message, then the generation
    prompt. With ``drift``, assistant turns read back with an extra space (a re-templating)."""
    parts = []
    for m in messages:
        role = m.get("role")
        if role == "assistant":
            parts.append("<|assistant|>\n" + (" " if drift else "") + _render_turn(m))
        else:
            parts.append(f"<|{role}|>\n{_text_of(m.get('content'))}<|end|>\n")
    return "".join(parts) + "<|assistant|>\n"


def fake_tokenize(text: str) -> list[int]:
    """The fake tokenizer: one token per UTF-8 byte."""
    return list(text.encode())


def fake_logprob(token: int) -> float:
    """A deterministic logprob per token id, so tests can check alignment."""
    return -((token % 17) + 1) / 100


class FakeOpenAI:
    """State and handlers of one fake server; start with :meth:`start_in_thread`."""

    def __init__(self, latency: float = 0.0, keep_requests: bool = True, jitter: float = 0.0,
                 chat_only: bool = False, drift_tokens: bool = False, omit_tokens: bool = False,
                 max_concurrent: int | None = None, concurrent_retry_after: float | None = None):
        self.latency = latency
        self.drift_tokens = drift_tokens
        self.omit_tokens = omit_tokens
        self.max_concurrent = max_concurrent
        self.concurrent_retry_after = concurrent_retry_after
        self.active = 0
        self.peak = 0
        self.refused = 0
        self.refused_at: list[float] = []
        self.chat_only = chat_only
        self.jitter = jitter
        self._random = random.Random(0)
        self.keep_requests = keep_requests
        self.script: list[dict[str, Any]] = []
        self.faults: list[dict[str, Any] | None] = []
        self.rules: list[dict[str, Any]] = []
        self.cached_tokens = 0  # reported in each reply's usage.input_tokens_details (Responses mode)
        self.requests: list[dict[str, Any]] = []
        self.count = 0
        self.first_request_at: float | None = None
        self.gate = threading.Event()
        self.gate.set()
        self._ids = itertools.count(1)
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None

    # --- policy -----------------------------------------------------------------------

    def policy_output(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        n = next(self._ids)
        outputs = [i for i in items if i.get("type") == "function_call_output"]
        if outputs:
            try:
                data = json.loads(outputs[-1]["output"])
                text = f"In {data['city']} it is {data['temperature_c']}°C and {data['conditions']}."
            except (ValueError, KeyError, TypeError):
                text = "The tool failed, sorry."
            return [{"type": "message", "id": f"msg_{n}", "role": "assistant", "status": "completed",
                     "content": [{"type": "output_text", "text": text, "annotations": []}]}]
        user = [i for i in items if i.get("role") == "user"]
        city = find_city(_text_of(user[-1].get("content")) if user else "")
        return [{"type": "function_call", "id": f"fc_{n}", "call_id": f"call_{n}", "name": "get_weather",
                 "arguments": json.dumps({"city": city}), "status": "completed"}]

    def response_body(self, request: dict[str, Any], output: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": f"resp_{next(self._ids)}", "object": "response", "created_at": 1700000000,
            "model": request.get("model", "fake"), "status": "completed", "output": output,
            "error": None, "incomplete_details": None, "instructions": None, "metadata": {},
            "parallel_tool_calls": True, "temperature": request.get("temperature"),
            "top_p": request.get("top_p"), "tool_choice": "auto", "tools": request.get("tools") or [],
            "usage": {"input_tokens": 10, "input_tokens_details": {"cached_tokens": self.cached_tokens, "cache_write_tokens": 0},
                      "output_tokens": 5, "output_tokens_details": {"reasoning_tokens": 0},
                      "total_tokens": 15},
        }

    def chat_body(self, request: dict[str, Any]) -> dict[str, Any]:
        items: list[dict[str, Any]] = []
        for m in request.get("messages", []):
            if m.get("role") == "tool":
                items.append({"type": "function_call_output", "output": m.get("content")})
            else:
                items.append({"role": m.get("role"), "content": m.get("content")})
        out = self.policy_output(items)[0]
        message: dict[str, Any] = {"role": "assistant", "content": None}
        finish = "stop"
        if out["type"] == "function_call":
            message["tool_calls"] = [{"id": out["call_id"], "type": "function",
                                      "function": {"name": out["name"], "arguments": out["arguments"]}}]
            finish = "tool_calls"
        else:
            message["content"] = out["content"][0]["text"]
        reply = {"id": f"chatcmpl-{next(self._ids)}", "object": "chat.completion", "created": 1700000000,
                 "model": request.get("model", "fake"),
                 "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
                 "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}
        if not self.omit_tokens and (request.get("return_token_ids") or request.get("logprobs")):
            self.add_tokens(request, reply)
        return reply

    def add_tokens(self, request: dict[str, Any], reply: dict[str, Any]) -> None:
        """vLLM's token fields, from the fake template and tokenizer."""
        messages = request.get("messages", [])
        # a drifting template re-renders every assistant turn but the generation itself
        prompt = fake_tokenize(render_chat(messages, drift=self.drift_tokens))
        choice = reply["choices"][0]
        generation = fake_tokenize(_render_turn(choice["message"]))
        if request.get("return_token_ids"):
            reply["prompt_token_ids"] = prompt
            choice["token_ids"] = generation
        if request.get("logprobs"):
            choice["logprobs"] = {"content": [{"token": f"token_id:{t}", "logprob": fake_logprob(t),
                                               "bytes": [t], "top_logprobs": []} for t in generation]}
        reply["usage"].update(prompt_tokens=len(prompt), completion_tokens=len(generation),
                              total_tokens=len(prompt) + len(generation))

    # --- HTTP ---------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if self.max_concurrent is not None and self.active >= self.max_concurrent:
            await request.read()
            self.refused += 1
            self.refused_at.append(time.monotonic())
            headers = {} if self.concurrent_retry_after is None else {"Retry-After": str(self.concurrent_retry_after)}
            error = {"error": {"message": f"rate limit: more than {self.max_concurrent} requests at once",
                               "type": "rate_limit_error", "code": "rate_limit_exceeded", "param": None}}
            return _json_response(error, status=429, headers=headers)
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            return await self._answer(request)
        finally:
            self.active -= 1

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        at = time.monotonic()
        self.count += 1
        if self.first_request_at is None:
            self.first_request_at = time.time()
        body = _loads(raw) if raw else {}
        if self.keep_requests:
            self.requests.append({"path": request.path, "headers": dict(request.headers), "body": body, "at": at})
        while not self.gate.is_set():
            await asyncio.sleep(0.01)
        fault = self._rule_for(raw)
        if fault is None and self.faults:
            fault = self.faults.pop(0)
        if self.latency:
            delay = self.latency
            if self.jitter:
                delay += self._random.uniform(-self.jitter, self.jitter)
            await asyncio.sleep(max(delay, 0.0))
        if fault:
            if fault.get("hang"):
                await asyncio.sleep(fault["hang"])
            if fault.get("reset"):
                assert request.transport is not None
                request.transport.abort()
                return web.Response(status=500)
            if fault.get("malformed"):
                return web.Response(body=b"{not json", content_type="application/json")
            if fault.get("json_body") is not None:
                reply = self.response_body(body, fault["json_body"].get("output") or []) | fault["json_body"]
                return web.Response(body=json.dumps(reply), content_type="application/json")
            if fault.get("status"):
                headers = {}
                if fault.get("retry_after") is not None:
                    headers["Retry-After"] = str(fault["retry_after"])
                if fault.get("retry_after_ms") is not None:
                    headers["retry-after-ms"] = str(fault["retry_after_ms"])
                error = {"error": {"message": fault.get("message", "injected fault"),
                                   "type": fault.get("type", "server_error"), "code": None, "param": None}}
                return _json_response(error, status=fault["status"], headers=headers)
            if fault.get("body") is not None:
                return _json_response(fault["body"])
        if request.path.endswith("/chat/completions"):
            reply = self.chat_body(body)
        elif self.script:
            canned = self.script.pop(0)
            reply = self.response_body(body, canned["output"]) | canned
        else:
            items = body.get("input") or []
            if isinstance(items, str):
                items = [{"role": "user", "content": items}]
            reply = self.response_body(body, self.policy_output(items))
        if fault:
            spoil(reply, body, fault)
            if "logprob" in fault:  # NaN as the stdlib writes it; orjson would write null
                return web.Response(body=json.dumps(reply), content_type="application/json")
        return _json_response(reply)

    def _rule_for(self, raw: bytes) -> dict[str, Any] | None:
        for rule in self.rules:
            if rule["match"].encode() in raw and rule.get("times", 1) > 0:
                if "times" in rule:
                    rule["times"] -= 1
                return rule
        return None

    async def _requests(self, _request: web.Request) -> web.Response:
        return web.json_response(self.requests)

    async def _stats(self, _request: web.Request) -> web.Response:
        """Request count and the wall-clock time of the first one (for start-up benchmarks)."""
        return web.json_response({"count": self.count, "first_request_at": self.first_request_at,
                                  "peak": self.peak, "refused": self.refused})

    async def _reset(self, _request: web.Request) -> web.Response:
        self.count, self.first_request_at = 0, None
        self.peak = self.refused = 0
        self.requests.clear()
        return web.json_response({"ok": True})

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        if not self.chat_only:
            app.router.add_post("/v1/responses", self._handle)
        app.router.add_post("/v1/chat/completions", self._handle)
        app.router.add_get("/_requests", self._requests)
        app.router.add_get("/_stats", self._stats)
        app.router.add_post("/_reset", self._reset)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0, backlog: int = 128) -> str:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, backlog=backlog)
        await site.start()
        sockets = site._server.sockets  # type: ignore[union-attr]
        self.url = f"http://{host}:{sockets[0].getsockname()[1]}/v1"
        return self.url

    def start_in_thread(self) -> str:
        """Serve on 127.0.0.1:<ephemeral> from a daemon thread; return the base URL."""
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self.start())
            ready.set()
            self._loop.run_forever()

        threading.Thread(target=run, daemon=True, name="fake-openai").start()
        if not ready.wait(10):
            raise RuntimeError("fake OpenAI server did not start")
        return self.url

    def stop(self) -> None:
        if self._loop is not None and self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)


def refused_url() -> str:
    """A base URL on 127.0.0.1 where nothing listens: a port the system just handed out and
    took back, so a connection to it is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


@contextmanager
def frozen_server() -> Iterator[str]:
    """The base URL of a server that never answers: its socket listens (the kernel completes
    each handshake and takes the request) but nothing ever reads or replies."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1024)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"


def _open_files_to_hard_limit() -> None:
    """Hold as many connections as the system allows a process (the soft limit is often 1,024)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--jitter-ms", type=float, default=0.0, help="latency varies uniformly by +- this")
    parser.add_argument("--max-concurrent", type=int, default=None, help="answer 429 above this many calls at once")
    parser.add_argument("--backlog", type=int, default=65535,
                        help="pending connections the kernel queues (capped by net.core.somaxconn): a "
                             "benchmark opening thousands at once must not see SYNs dropped and retried")
    args = parser.parse_args()
    _open_files_to_hard_limit()  # every connection held open is a descriptor
    server = FakeOpenAI(latency=args.latency_ms / 1000, keep_requests=False, jitter=args.jitter_ms / 1000,
                        max_concurrent=args.max_concurrent)

    async def serve() -> None:
        url = await server.start(port=args.port, backlog=args.backlog)
        print(f"listening on {url}", flush=True)
        await asyncio.Event().wait()

    try:
        import uvloop  # the benchmark's instrument should add as little latency as it can
    except ImportError:
        uvloop = None
    try:
        if uvloop is not None:
            uvloop.run(serve())
        else:
            asyncio.run(serve())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
