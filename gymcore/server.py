"""``gym serve``: host environments, their model backend and the agent loop over HTTP.

Environments often must live apart from the collector (a sandbox host, a GPU box, many
machines). The runner hosts, per agent, the same :class:`~gymcore.environment.Environment`
and model backend that embedded collection builds, and runs the same
:func:`gymcore.agent.run_rollout`, so served and embedded rollouts are the same rollouts.

Routes are listed in :mod:`gymcore.openapi` (served at ``GET /openapi.json``) and in
``docs/serve.md``. Every error is ``{"error": {"type": ..., "message": ...}}`` with a stable
``type``. Sessions opened over HTTP live here, keyed by an unguessable id, and are ended
after ``idle_timeout`` seconds without a request, so a crashed client leaks nothing.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import secrets
import signal
import sys
import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import attrs
import orjson
from aiohttp import web

from . import __version__
from .agent import DEFAULT_MAX_STEPS, AgentConfig, run_rollout
from .backends import ModelBackend, ModelContext, create_backend
from .connection_guard import DEFAULT_READ_TIMEOUT, ConnectionGuard, GuardedSite
from .data import Session, converter, fail_unwritable
from .dataset import validate_row
from .eager_requests import requests_sent_at_once
from .environment import Environment
from .errors import GymError, InputError, ModelError, UsageError
from .judge import Judge
from .limits import open_file_limit, raise_open_files_to_hard_limit
from .local_hosts import host_is_trusted, is_own_origin, trusted_hosts
from .plugins import Plugins
from .runners import split_agent

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_IDLE_TIMEOUT = 600.0
DEFAULT_MAX_BODY_SIZE = 16 * 1024 * 1024
DEFAULT_GRACE = 30.0
#: Sessions held at once (opened over HTTP, or by a rollout in flight); each holds plugin state.
DEFAULT_MAX_SESSIONS = 1024
#: Seconds a client is told to wait (``Retry-After``) when the runner is full.
FULL_RETRY_AFTER_S = 1

log = logging.getLogger("gymcore.server")

_JSON_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY
_UNAUTHENTICATED = frozenset({"/health"})


class ApiError(Exception):
    """An error answered as ``{"error": {"type", "message", ["field"]}}`` with ``status``
    (and ``headers``)."""

    def __init__(self, status: int, type: str, message: str, *, field: str | None = None,
                 headers: dict[str, str] | None = None, **extra: Any):
        super().__init__(message)
        self.status, self.type, self.field, self.extra = status, type, field, extra
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        error = {"type": self.type, "message": str(self), **self.extra}
        if self.field is not None:
            error["field"] = self.field
        return {"error": error}


#: Refusals of a client that is not ours (no token, a web page): its connection is closed at
#: once, so it holds no descriptor.
_CLOSE_ON = frozenset({401, 403, 408, 415})

#: Stable ``type``s for aiohttp's own HTTP errors (unknown route, wrong method, big body).
_HTTP_ERROR_TYPES = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data, option=_JSON_OPTIONS), status=status,
                        content_type="application/json")


def is_loopback(host: str) -> bool:
    """``127.0.0.0/8``, ``::1`` and ``localhost`` are loopback; every other address or name
    (``0.0.0.0``, a LAN address, a hostname) may be reachable from elsewhere."""
    if host.casefold() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse to expose the runner beyond this machine without a token."""
    if not token and not is_loopback(host):
        raise UsageError(f"refusing to bind {host!r} without a token: anyone who can reach it could run "
                       "tools and spend model calls; set GYM_TOKEN (or --token), or bind 127.0.0.1")


@attrs.define
class HostedAgent:
    """One ``--agent``: its environment and its own model backend (replay needs the env)."""

    name: str
    env: Environment
    model: ModelBackend
    judge: Judge | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "environments": self.env.names,
            "tools": [tool["name"] for tool in self.env.tools],
            "model": self.model.label,
            "judge_model": self.judge.label if self.judge is not None else None,
            "is_replay": bool(getattr(self.model, "is_replay", False)),
            "example_dataset": self.env.example_dataset_path is not None,
            # def hook calls whose request was given up (a client that hung up) and still run
            "hook_calls_stuck": sum(self.env.threads.stuck().values()),
        }


@attrs.define
class OpenSession:
    """A session opened over HTTP; ``busy`` requests in flight keep it from being reaped."""

    agent: HostedAgent
    session: Session
    last_used: float
    busy: int = 0


class Host:
    """The runner's state and its request handlers; :func:`create_app` wires them up."""

    def __init__(self, plugins: Plugins, agents: list[str], model_spec: str, *, token: str | None,
                 idle_timeout: float, reap_interval: float | None, agent_config: AgentConfig,
                 max_sessions: int = DEFAULT_MAX_SESSIONS, guard: ConnectionGuard | None = None):
        if not agents:
            raise GymError("gym serve needs at least one --agent")
        self.plugins = plugins
        self.agent_specs = list(agents)
        self.model_spec = model_spec
        self.token = token.encode() if token else None
        self.idle_timeout = idle_timeout
        self.max_sessions = max_sessions
        self.guard = guard or ConnectionGuard()
        self.reap_interval = reap_interval or min(max(idle_timeout / 4, 0.05), 30.0)
        self.agent_config = agent_config
        self.runner_id = secrets.token_hex(6)
        #: Host headers answered (set by :func:`serving` from the bound address)
        self.trusted_hosts = trusted_hosts(DEFAULT_HOST)
        self.agents: dict[str, HostedAgent] = {}
        self.sessions: dict[str, OpenSession] = {}
        self.inventory: list[dict[str, Any]] = []
        self.stats = {
            "sessions_created": 0, "sessions_ended": 0, "sessions_reaped": 0, "tool_calls": 0,
            "verifies": 0, "rollouts": 0, "rollouts_in_flight": 0, "model_calls": 0, "sessions_refused": 0,
        }
        self._reaper: asyncio.Task | None = None
        self._opening = 0  # sessions in setup_session, not yet in ``sessions``

    # --- life cycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Build every agent's environment and backend; start the reaper."""
        from .inventory import plugin_inventory

        try:
            for spec in self.agent_specs:
                env = await Environment.create(self.plugins, split_agent(spec))
                if env.name in self.agents:
                    raise UsageError(f"agent {env.name!r} is given twice")
                context = ModelContext(environment=env, timeout=self.agent_config.model_timeout,
                                       return_tokens=self.agent_config.return_tokens)
                model = create_backend(self.plugins, self.model_spec, context)
                judge_spec = self.agent_config.judge_model
                judge = Judge(create_backend(self.plugins, judge_spec, attrs.evolve(context, return_tokens=False),
                                             option="--judge-model"), self.agent_config.retry) \
                    if judge_spec else None
                self.agents[env.name] = HostedAgent(env.name, env, model, judge)
            # plugin_inventory runs its own event loop, so it gets a thread of its own.
            self.inventory = await asyncio.to_thread(plugin_inventory, self.plugins)
        except BaseException:
            await self._close_backends()
            raise
        self._reaper = asyncio.create_task(self._reap_forever(), name="gym-serve-reaper")

    async def stop(self) -> None:
        """End every open session (teardown hooks run) and close the model backends."""
        if self._reaper is not None:
            self._reaper.cancel()
            try:
                await self._reaper
            except asyncio.CancelledError:
                pass
        open_sessions = list(self.sessions)
        for session_id in open_sessions:
            await self._end(self.sessions.pop(session_id))
        if open_sessions:
            log.warning("ended %d open session(s) on shutdown", len(open_sessions))
        await self._close_backends()

    async def _close_backends(self) -> None:
        for agent in self.agents.values():
            for backend in (agent.model, agent.judge):
                if backend is None:
                    continue
                try:
                    await backend.aclose()
                except Exception:  # closing must not hide the other backends' close
                    log.exception("closing model backend %s failed", backend.label)

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(self.reap_interval)
            await self.reap()

    async def reap(self) -> int:
        """End sessions idle for longer than ``idle_timeout``; return how many."""
        cutoff = time.monotonic() - self.idle_timeout
        stale = [sid for sid, s in self.sessions.items() if s.busy == 0 and s.last_used < cutoff]
        for session_id in stale:
            await self._end(self.sessions.pop(session_id))
        self.stats["sessions_reaped"] += len(stale)
        return len(stale)

    async def _end(self, open_session: OpenSession) -> None:
        self.stats["sessions_ended"] += 1
        try:
            await open_session.agent.env.close_session(open_session.session)
        except Exception:
            log.exception("teardown_session of %s failed", open_session.agent.name)

    # --- helpers ----------------------------------------------------------------------

    def refuse_web_pages(self, request: web.Request) -> None:
        """Token or not, answer only requests that name this runner as their host, come from
        no other origin, and (POST) carry JSON: a web page can then neither reach the runner
        under a rebound name nor send it a "simple" cross-origin request (text/plain, a form),
        and a JSON one needs a CORS preflight, which is never granted."""
        host_header = request.headers.get("Host")
        if not host_is_trusted(host_header, self.trusted_hosts):
            names = ", ".join(sorted(self.trusted_hosts or ()))
            raise ApiError(403, "untrusted_host", f"Host {host_header!r} is not this runner's address: it answers "
                           f"to {names} (a page under a rebound DNS name is refused)")
        origin = request.headers.get("Origin")
        if not is_own_origin(origin, host_header):
            raise ApiError(403, "cross_origin",
                           f"requests from web pages of other origins are refused (Origin {origin!r})")

    def authorized(self, request: web.Request) -> bool:
        if self.token is None or request.path in _UNAUTHENTICATED:
            return True
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self.token)

    def make_room(self) -> None:
        """Refuse a new session (503, ``Retry-After``) while ``max_sessions`` are held: those
        opened over HTTP and those of rollouts in flight. Memory stays bounded; a client
        waits or goes to another runner."""
        if len(self.sessions) + self._opening + self.stats["rollouts_in_flight"] < self.max_sessions:
            return
        self.stats["sessions_refused"] += 1
        raise ApiError(503, "too_many_sessions",
                       f"this runner holds --max-sessions {self.max_sessions} sessions (open ones and rollouts in "
                       f"flight); retry after {FULL_RETRY_AFTER_S}s or use another runner",
                       headers={"Retry-After": str(FULL_RETRY_AFTER_S)})

    def agent(self, request: web.Request) -> HostedAgent:
        name = request.match_info["agent"]
        agent = self.agents.get(name)
        if agent is None:
            raise ApiError(404, "unknown_agent",
                           f"no agent {name!r} on this runner; hosted: {', '.join(self.agents)}")
        return agent

    @asynccontextmanager
    async def use_session(self, request: web.Request) -> AsyncIterator[OpenSession]:
        """The request's open session, kept from the reaper while the request runs."""
        agent = self.agent(request)
        session_id = request.match_info["session_id"]
        found = self.sessions.get(session_id)
        if found is None or found.agent is not agent:
            raise ApiError(404, "unknown_session",
                           f"no open session {session_id!r} for agent {agent.name!r}: it was ended, expired "
                           f"after {self.idle_timeout:g}s idle, or never existed; open one with "
                           f"POST /agents/{agent.name}/sessions")
        found.busy += 1
        try:
            yield found
        finally:
            found.busy -= 1
            found.last_used = time.monotonic()

    # --- handlers ---------------------------------------------------------------------

    async def health(self, request: web.Request) -> web.Response:
        return json_response({"status": "ok"})

    async def index(self, request: web.Request) -> web.Response:
        return json_response({
            "name": "gym serve",
            "version": __version__,
            "runner_id": self.runner_id,
            "model_spec": self.model_spec,
            "judge_model_spec": self.agent_config.judge_model,
            "return_tokens": self.agent_config.return_tokens,
            "agents": [agent.describe() for agent in self.agents.values()],
            "sessions": {"open": len(self.sessions), "idle_timeout_s": self.idle_timeout,
                         "max": self.max_sessions},
            "connections": {"open": len(self.guard.open), "max": self.guard.max_connections,
                            "read_timeout_s": self.guard.read_timeout, **self.guard.stats},
            "stats": self.stats,
            "auth": self.token is not None,
            "plugins": self.inventory,
        })

    async def openapi(self, request: web.Request) -> web.Response:
        from .openapi import openapi_document

        return json_response(openapi_document(auth=self.token is not None))

    async def tools(self, request: web.Request) -> web.Response:
        return json_response({"tools": self.agent(request).env.tools})

    async def dataset(self, request: web.Request) -> web.StreamResponse:
        agent = self.agent(request)
        path = agent.env.example_dataset_path
        if path is None:
            raise ApiError(404, "no_dataset", f"agent {agent.name!r} bundles no example dataset")
        return web.FileResponse(path, headers={"Content-Type": "application/x-ndjson"})

    async def open_session(self, request: web.Request) -> web.Response:
        agent = self.agent(request)
        task = task_from(await read_body(request), "request body", prefix="")
        self.make_room()
        self._opening += 1
        try:
            session = await agent.env.open_session(task)
        except Exception as exc:
            raise plugin_error("setup_session", exc) from exc
        finally:
            self._opening -= 1
        session_id = secrets.token_urlsafe(16)
        self.sessions[session_id] = OpenSession(agent, session, time.monotonic())
        self.stats["sessions_created"] += 1
        return json_response({"session_id": session_id, "tools": agent.env.tools}, status=201)

    async def call_tool(self, request: web.Request) -> web.Response:
        body = await read_body(request)
        arguments = body.get("arguments", {})
        if not isinstance(arguments, (dict, str)):
            raise ApiError(400, "invalid_request", "request body: field 'arguments': expected an object or a "
                           f"JSON string, got {type(arguments).__name__}", field="arguments")
        async with self.use_session(request) as found:
            # A plugin's exception becomes an error output for the model (ok: false), not a 500.
            output, ok = await found.agent.env.call_tool(found.session, request.match_info["tool"], arguments)
        self.stats["tool_calls"] += 1
        return json_response({"output": output, "ok": ok})

    async def verify(self, request: web.Request) -> web.Response:
        body = await read_body(request)
        response = body.get("response")
        if not isinstance(response, dict):
            raise ApiError(400, "invalid_request", "request body: field 'response': expected a Responses-API "
                           "response object", field="response")
        if not isinstance(response.get("output"), list):
            raise ApiError(400, "invalid_request", "request body: field 'response.output': expected a list",
                           field="response.output")
        async with self.use_session(request) as found:
            try:
                verdict = await found.agent.env.verify(found.session, response)
            except Exception as exc:
                raise plugin_error("verify", exc) from exc
        self.stats["verifies"] += 1
        return json_response({"reward": verdict.reward, "metrics": verdict.metrics,
                              **({"reward_components": verdict.reward_components}
                                 if verdict.reward_components is not None else {})})

    async def end_session(self, request: web.Request) -> web.Response:
        async with self.use_session(request) as found:
            self.sessions.pop(request.match_info["session_id"], None)
        await self._end(found)
        return json_response({"ended": True})

    async def rollout(self, request: web.Request) -> web.Response:
        agent = self.agent(request)
        body = await read_body(request)
        task = task_from(body.get("task"), "request body", prefix="task")
        task_index = int_field(body, "task_index", 0, 0)
        rollout_index = int_field(body, "rollout_index", 0, 0)
        retries = int_field(body, "max_retries", self.agent_config.retry.max_retries, 0)
        config = AgentConfig(max_steps=int_field(body, "max_steps", self.agent_config.max_steps, 1),
                             overrides=self.agent_config.overrides,
                             retry=attrs.evolve(self.agent_config.retry, max_retries=retries),
                             return_tokens=self.agent_config.return_tokens,
                             seed_repeats=body.get("seed_repeats") is True)
        overrides = body.get("overrides")
        if overrides is not None:
            if not isinstance(overrides, dict):
                raise ApiError(400, "invalid_request", "request body: field 'overrides': expected an object",
                               field="overrides")
            config.overrides = {**config.overrides, **overrides}
        self.make_room()
        self.stats["rollouts_in_flight"] += 1
        try:
            rollout = await run_rollout(agent.env, agent.model, task, task_index=task_index,
                                        rollout_index=rollout_index, config=config, judge=agent.judge)
        finally:
            self.stats["rollouts_in_flight"] -= 1
        self.stats["rollouts"] += 1
        line = converter.unstructure(rollout)
        try:
            return json_response(line)
        except TypeError:  # orjson refuses a part (a model reply nested too deep): a failed rollout, as embedded
            fail_unwritable(rollout, line)
            return json_response(converter.unstructure(rollout))

    async def responses(self, request: web.Request) -> web.Response:
        name = request.match_info.get("agent")
        agent = self.agent(request) if name is not None else next(iter(self.agents.values()))
        body = await read_body(request)
        value = body.get("input")
        if not isinstance(value, (str, list)):
            raise ApiError(400, "invalid_request", "request body: field 'input': expected a string or a list "
                           "of items", field="input")
        if body.get("stream"):
            raise ApiError(400, "invalid_request", "request body: field 'stream': streaming is not supported "
                           "by gym serve", field="stream")
        self.stats["model_calls"] += 1
        try:
            return json_response(await agent.model.create_response(body))
        except ModelError as exc:
            raise ApiError(502, "model_error", str(exc), upstream_status=exc.status, kind=exc.kind) from None


def plugin_error(hook: str, exc: Exception) -> ApiError:
    return ApiError(500, "plugin_error", f"{hook} failed: {type(exc).__name__}: {exc}")


async def read_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object; a 400 (or 413 past ``client_max_size``) otherwise, and a
    408 when it does not arrive within ``--read-timeout`` (a slow client holds nothing)."""
    seconds = request.app[HOST_KEY].guard.read_timeout
    try:
        async with asyncio.timeout(seconds):
            raw = await request.read()
    except TimeoutError:
        raise ApiError(408, "request_timeout", f"the request body did not arrive within --read-timeout "
                       f"{seconds:g}s") from None
    try:
        data = orjson.loads(raw) if raw.strip() else None
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "invalid_request", f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_request", "request body: expected a JSON object")
    return data


def task_from(row: Any, where: str, *, prefix: str):
    """Validate a task row as ``gym collect`` validates input lines; name the bad field."""
    if row is None and prefix:
        raise ApiError(400, "invalid_request", f"{where}: field {prefix!r}: missing (the task row)", field=prefix)
    try:
        return validate_row(row, where, None)
    except InputError as exc:
        field = ".".join(p for p in (prefix, exc.field) if p) or None
        message = str(exc)
        if exc.field:
            message = message.replace(f"field {exc.field!r}", f"field {field!r}", 1)
        elif field:
            message = message.replace(f"{where}: ", f"{where}: field {field!r}: ", 1)
        raise ApiError(400, "invalid_request", message, field=field) from None


def int_field(body: dict[str, Any], name: str, default: int, low: int) -> int:
    value = body.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ApiError(400, "invalid_request", f"request body: field {name!r}: expected a whole number "
                       f">= {low}, got {value!r}", field=name)
    return value


HOST_KEY = web.AppKey("gym_host", Host)


def _middleware(host: Host):
    @web.middleware
    async def errors_and_auth(request: web.Request, handler):
        try:
            host.refuse_web_pages(request)
            if not host.authorized(request):
                raise ApiError(401, "unauthorized", "missing or wrong token: send 'Authorization: Bearer TOKEN'")
            if request.method == "POST" and request.content_type != "application/json":
                raise ApiError(415, "unsupported_media_type", "request body: send it as JSON with 'Content-Type: "
                               f"application/json', not {request.headers.get('Content-Type', 'no Content-Type')!r}")
            return await handler(request)
        except ApiError as exc:
            response = json_response(exc.body(), status=exc.status)
            response.headers.update(exc.headers)
            if exc.status == 401:
                response.headers["WWW-Authenticate"] = "Bearer"
            if exc.status in _CLOSE_ON:
                response.force_close()
            return response
        except web.HTTPException as exc:  # aiohttp's own: unknown route, wrong method, body too big
            kind = _HTTP_ERROR_TYPES.get(exc.status, "http_error")
            message = f"no route {request.method} {request.path}; see GET /openapi.json" if exc.status in (404, 405) \
                else exc.text or exc.reason
            if exc.status == 413:
                message += "; start the runner with a larger --max-body-size"
            return json_response(ApiError(exc.status, kind, message).body(), status=exc.status)
        except Exception as exc:
            log.exception("%s %s failed", request.method, request.path)
            return json_response(ApiError(500, "internal_error", f"{type(exc).__name__}: {exc}").body(), status=500)

    return errors_and_auth


def create_app(
    plugins: Plugins,
    agents: list[str],
    model_spec: str,
    token: str | None = None,
    *,
    session_idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
    max_body_size: int = DEFAULT_MAX_BODY_SIZE,
    reap_interval: float | None = None,
    agent_config: AgentConfig | None = None,
    max_sessions: int = DEFAULT_MAX_SESSIONS,
    max_connections: int | None = None,
    read_timeout: float = DEFAULT_READ_TIMEOUT,
) -> web.Application:
    """The runner as an aiohttp application. Environments and backends are built when the
    app starts (``AppRunner.setup``), so a bad ``--agent`` fails before anything listens.
    ``max_connections`` ``None``: half the open-file limit (see :mod:`gymcore.connection_guard`)."""
    host = Host(plugins, agents, model_spec, token=token, idle_timeout=session_idle_timeout,
                reap_interval=reap_interval, agent_config=agent_config or AgentConfig(max_steps=DEFAULT_MAX_STEPS),
                max_sessions=max_sessions, guard=ConnectionGuard(max_connections, read_timeout))
    app = web.Application(client_max_size=max_body_size, middlewares=[host.guard.middleware(), _middleware(host)])
    app[HOST_KEY] = host

    async def life_cycle(_app: web.Application):
        with requests_sent_at_once():  # Python 3.11: model calls of rollouts served together would bunch
            await host.start()
            yield
            await host.stop()

    app.cleanup_ctx.append(life_cycle)
    agent = "/agents/{agent}"
    session = agent + "/sessions/{session_id}"
    app.router.add_get("/health", host.health)
    app.router.add_get("/", host.index)
    app.router.add_get("/openapi.json", host.openapi)
    app.router.add_post("/v1/responses", host.responses)
    app.router.add_get(agent + "/tools", host.tools)
    app.router.add_get(agent + "/dataset", host.dataset)
    app.router.add_post(agent + "/sessions", host.open_session)
    app.router.add_post(session + "/tools/{tool}", host.call_tool)
    app.router.add_post(session + "/verify", host.verify)
    app.router.add_delete(session, host.end_session)
    app.router.add_post(agent + "/rollouts", host.rollout)
    app.router.add_post(agent + "/v1/responses", host.responses)
    return app


def url_of(runner: web.AppRunner) -> str:
    """``http://HOST:PORT`` of the runner's first bound socket (the real port for port 0)."""
    host, port = runner.addresses[0][:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@asynccontextmanager
async def serving(app: web.Application, host: str = DEFAULT_HOST, port: int = 0, *,
                  grace: float = DEFAULT_GRACE) -> AsyncIterator[str]:
    """Run ``app`` on ``host:port`` for the ``with`` block; yield its URL. On exit the
    listener closes, in-flight requests get ``grace`` seconds, then sessions end.

    A request whose client hangs up is cancelled (``handler_cancellation``): a collector
    that gave up on a rollout (``--timeout``, Ctrl-C) stops its model calls and tools here
    too, and the session ends, instead of the rollout running on for nobody."""
    app[HOST_KEY].trusted_hosts = trusted_hosts(host)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=grace, handler_cancellation=True)
    await runner.setup()
    try:
        site = GuardedSite(runner, host, port, app[HOST_KEY].guard, open_files=open_file_limit())
        try:
            await site.start()
        except OSError as exc:
            raise GymError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        yield url_of(runner)
    finally:
        await runner.cleanup()


async def serve_until_signalled(app: web.Application, host: str, port: int, grace: float) -> None:
    """``gym serve``'s main loop: print the URL, run until SIGINT/SIGTERM, then stop taking
    connections, give in-flight requests ``grace`` seconds, end open sessions."""
    raise_open_files_to_hard_limit()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with serving(app, host, port, grace=grace) as url:
        print(f"serving on {url}", flush=True)
        print(f"gym serve: routes at {url}/openapi.json; Ctrl-C stops", file=sys.stderr, flush=True)
        await stop.wait()
        for sig in (signal.SIGINT, signal.SIGTERM):  # a second signal stops at once
            loop.remove_signal_handler(sig)
        print(f"gym serve: stopping; in-flight requests get up to {grace:g}s (signal again to force)",
              file=sys.stderr, flush=True)
    print("gym serve: stopped", file=sys.stderr, flush=True)

