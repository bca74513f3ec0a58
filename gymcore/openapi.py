"""The OpenAPI 3.1 document of ``gym serve``: every route with its request and response
bodies. Served at ``GET /openapi.json``; a test checks it is valid and that it lists every
route the app has, so the two cannot drift apart."""

from __future__ import annotations

from typing import Any

from . import __version__


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _body(name: str, description: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": _ref(name)}}, "description": description}


def _errors(*statuses: int) -> dict[str, Any]:
    texts = {
        400: "Bad body: `error.field` names the field (`type`: `invalid_request`).",
        401: "Missing or wrong token (`type`: `unauthorized`); the connection is closed.",
        403: "A Host that is not the runner's address (`untrusted_host`) or an Origin that is not its own "
             "(`cross_origin`): web pages are refused; the connection is closed.",
        408: "The body did not arrive within `--read-timeout` (`type`: `request_timeout`).",
        415: "A POST body not sent as `Content-Type: application/json` (`type`: `unsupported_media_type`).",
        404: "Unknown agent (`unknown_agent`), session (`unknown_session`) or dataset (`no_dataset`).",
        413: "Body larger than `--max-body-size` (`type`: `body_too_large`).",
        500: "A plugin hook raised (`type`: `plugin_error`).",
        502: "The model backend failed (`type`: `model_error`; `upstream_status` and `kind` say how).",
        503: "`--max-sessions` are held (`type`: `too_many_sessions`), with `Retry-After`: try again then.",
    }
    return {str(s): {"description": texts[s], "content": {"application/json": {"schema": _ref("Error")}}}
            for s in sorted({401, 403, *statuses})}


def _post_errors(*statuses: int) -> dict[str, Any]:
    """Every POST also answers 408 (slow body) and 415 (not JSON)."""
    return _errors(408, 415, *statuses)


_AGENT = {"name": "agent", "in": "path", "required": True, "schema": {"type": "string"},
          "description": "A hosted agent's name, as listed by `GET /` (e.g. `weather`)."}
_SESSION = {"name": "session_id", "in": "path", "required": True, "schema": {"type": "string"},
            "description": "The id returned when the session was opened."}
_TOOL = {"name": "tool", "in": "path", "required": True, "schema": {"type": "string"},
         "description": "The tool's name, as in the agent's tool list."}

_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object", "required": ["error"],
        "properties": {"error": {
            "type": "object", "required": ["type", "message"],
            "properties": {
                "type": {"type": "string", "description": "Stable: invalid_request, unauthorized, untrusted_host, "
                         "cross_origin, request_timeout, unsupported_media_type, unknown_agent, "
                         "unknown_session, no_dataset, not_found, method_not_allowed, body_too_large, "
                         "plugin_error, model_error, internal_error, too_many_sessions, too_many_connections."},
                "message": {"type": "string"},
                "field": {"type": "string", "description": "The bad body field, for invalid_request."},
            }}},
    },
    "Health": {"type": "object", "required": ["status"], "properties": {"status": {"const": "ok"}}},
    "AgentInfo": {
        "type": "object", "required": ["name", "environments", "tools", "model", "is_replay", "example_dataset"],
        "properties": {
            "name": {"type": "string"},
            "environments": {"type": "array", "items": {"type": "string"}},
            "tools": {"type": "array", "items": {"type": "string"}},
            "model": {"type": "string", "description": "The label written into each rollout's `model`."},
            "judge_model": {"type": ["string", "null"], "description": "The judge's label (`--judge-model`)."},
            "is_replay": {"type": "boolean"},
            "example_dataset": {"type": "boolean", "description": "Whether `GET .../dataset` has rows."},
            "hook_calls_stuck": {"type": "integer", "description": "Plain `def` hook calls still running in a "
                                 "thread whose request was given up (see docs/plugins.md)."},
        },
    },
    "Index": {
        "type": "object",
        "required": ["name", "version", "runner_id", "model_spec", "agents", "sessions", "stats", "auth", "plugins"],
        "properties": {
            "name": {"type": "string"},
            "version": {"type": "string"},
            "runner_id": {"type": "string", "description": "Random per process: tells runners apart."},
            "model_spec": {"type": "string", "description": "The `--model` the runner was started with."},
            "judge_model_spec": {"type": ["string", "null"], "description": "Its `--judge-model`, if any."},
            "return_tokens": {"type": "boolean", "description": "Whether it was started with `--return-tokens`."},
            "agents": {"type": "array", "items": _ref("AgentInfo")},
            "sessions": {"type": "object", "properties": {"open": {"type": "integer"},
                                                          "idle_timeout_s": {"type": "number"},
                                                          "max": {"type": "integer"}}},
            "connections": {"type": "object", "description": "Open connections, --max-connections, "
                            "--read-timeout, and how many were closed: timed out, evicted, refused.",
                            "properties": {k: {"type": "number"} for k in (
                                "open", "max", "read_timeout_s", "connections_timed_out", "connections_evicted",
                                "connections_refused")}},
            "stats": {"type": "object", "additionalProperties": {"type": "integer"},
                      "description": "Counters since start: sessions_created, sessions_ended, sessions_reaped, "
                      "sessions_refused, tool_calls, verifies, rollouts, rollouts_in_flight, model_calls."},
            "auth": {"type": "boolean"},
            "plugins": {"type": "array", "items": {"type": "object"},
                        "description": "The rows of `gym plugins list --json`."},
        },
    },
    "Tool": {"type": "object", "required": ["type", "name"],
             "properties": {"type": {"const": "function"}, "name": {"type": "string"},
                            "description": {"type": "string"}, "parameters": {"type": "object"},
                            "strict": {"type": "boolean"}}},
    "ToolList": {"type": "object", "required": ["tools"],
                 "properties": {"tools": {"type": "array", "items": _ref("Tool")}}},
    "TaskRow": {
        "type": "object", "required": ["responses_create_params"], "additionalProperties": True,
        "description": "One input row, as in `gym collect --input`; other keys pass through.",
        "properties": {
            "responses_create_params": {
                "type": "object", "required": ["input"],
                "properties": {"input": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "object"}}]},
                               "tools": {"type": "array", "items": {"type": "object"}}}},
            "verifier_metadata": {"type": ["object", "null"]},
        },
    },
    "SessionOpened": {"type": "object", "required": ["session_id", "tools"],
                      "properties": {"session_id": {"type": "string"},
                                     "tools": {"type": "array", "items": _ref("Tool")}}},
    "ToolCall": {"type": "object", "properties": {
        "arguments": {"oneOf": [{"type": "object"}, {"type": "string"}], "default": {},
                      "description": "The tool's arguments: an object, or the JSON text a model wrote."}}},
    "ToolResult": {"type": "object", "required": ["output", "ok"], "properties": {
        "output": {"type": "string", "description": "What the model sees; on failure a JSON `{\"error\": ...}`."},
        "ok": {"type": "boolean", "description": "False when the tool raised or the call was malformed."}}},
    "VerifyRequest": {"type": "object", "required": ["response"], "properties": {
        "response": {"type": "object", "required": ["output"], "description": "The whole episode as a "
                     "Responses-API response.", "properties": {"output": {"type": "array", "items": {"type": "object"}}}}}},
    "Verdict": {"type": "object", "required": ["reward", "metrics"], "properties": {
        "reward": {"type": "number", "description": "Any finite number."}, "metrics": {"type": "object"},
        "reward_components": {"type": "object", "additionalProperties": {"type": "number"},
                              "description": "The reward's named parts, when verify gave them."}}},
    "Ended": {"type": "object", "required": ["ended"], "properties": {"ended": {"const": True}}},
    "RolloutRequest": {"type": "object", "required": ["task"], "properties": {
        "task": _ref("TaskRow"),
        "task_index": {"type": "integer", "minimum": 0, "default": 0},
        "rollout_index": {"type": "integer", "minimum": 0, "default": 0},
        "max_steps": {"type": "integer", "minimum": 1, "description": "Default: the runner's (16)."},
        "max_retries": {"type": "integer", "minimum": 0,
                        "description": "Retries of a failed model call (408/409/429/5xx, lost connection). "
                                       "Default: the runner's (5)."},
        "overrides": {"type": "object", "description": "responses_create_params overrides (temperature, ...)."},
        "seed_repeats": {"type": "boolean", "default": False,
                         "description": "Put seed = rollout_index into each model request "
                                        "(gym collect --seed-repeats)."}}},
    "Rollout": {
        "type": "object", "additionalProperties": True,
        "required": ["responses_create_params", "response", "reward", "task_index", "rollout_index", "agent",
                     "model", "turns", "tool_calls", "tool_errors", "stop_reason", "timing", "error", "metric_names"],
        "description": "Exactly the line `gym collect` writes: the task row plus these keys, and the "
                       "verifier's metrics at the top level (named in `metric_names`).",
        "properties": {
            "response": {"type": ["object", "null"]},
            "reward": {"type": ["number", "null"], "minimum": 0, "maximum": 1,
                       "description": "Null exactly when `error` is set."},
            "metric_names": {"type": "array", "items": {"type": "string"}},
            "task_index": {"type": "integer"}, "rollout_index": {"type": "integer"},
            "agent": {"type": "string"}, "model": {"type": "string"}, "turns": {"type": "integer"},
            "tool_calls": {"type": "integer"}, "tool_errors": {"type": "integer"},
            "stop_reason": {"type": ["string", "null"]},
            "timing": {"type": "object", "properties": {k: {"type": "number"} for k in
                                                        ("total_s", "model_s", "tools_s", "verify_s")}},
            "error": {"type": ["object", "null"]},
        },
    },
    "ResponsesRequest": {"type": "object", "required": ["input"], "additionalProperties": True,
                         "description": "A Responses-API request body (`model` is taken from the runner's "
                         "`--model`; `stream` is not supported).",
                         "properties": {"input": {"oneOf": [{"type": "string"},
                                                            {"type": "array", "items": {"type": "object"}}]},
                                        "tools": {"type": "array", "items": {"type": "object"}}}},
    "Response": {"type": "object", "required": ["id", "output", "status"], "additionalProperties": True,
                 "description": "A Responses-API response body.",
                 "properties": {"id": {"type": "string"}, "status": {"type": "string"},
                                "output": {"type": "array", "items": {"type": "object"}},
                                "usage": {"type": "object"}}},
}


def _responses_op(summary: str, params: list[dict[str, Any]]) -> dict[str, Any]:
    return {"post": {
        "summary": summary, "parameters": params, "requestBody": _body("ResponsesRequest", "A Responses-API request."),
        "responses": {"200": _json(_ref("Response"), "The model's response."), **_post_errors(400, 404, 413, 502)}}}


def openapi_document(*, auth: bool = False) -> dict[str, Any]:
    """The document; ``auth`` says whether this runner requires the bearer token."""
    agent, session = "/agents/{agent}", "/agents/{agent}/sessions/{session_id}"
    paths: dict[str, Any] = {
        "/health": {"get": {"summary": "Liveness; never needs the token.", "security": [],
                            "responses": {"200": _json(_ref("Health"), "Alive."),
                                          "403": _errors()["403"]}}},
        "/": {"get": {"summary": "What is hosted: agents, tools, model, counters, plugin inventory.",
                      "responses": {"200": _json(_ref("Index"), "The runner."), **_errors()}}},
        "/openapi.json": {"get": {"summary": "This document.",
                                  "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1."), **_errors()}}},
        "/v1/responses": _responses_op("The first agent's model backend, for OpenAI-compatible clients "
                                       "(base URL `http://HOST:PORT/v1`, API key = the token).", []),
        agent + "/v1/responses": _responses_op("This agent's model backend (base URL `.../agents/NAME/v1`).",
                                               [_AGENT]),
        agent + "/tools": {"get": {"summary": "The agent's tools.", "parameters": [_AGENT],
                                   "responses": {"200": _json(_ref("ToolList"), "Tools."), **_errors(404)}}},
        agent + "/dataset": {"get": {
            "summary": "The agent's bundled example tasks (JSONL); `gym collect --server` reads it when no "
                       "--input is given.", "parameters": [_AGENT],
            "responses": {"200": {"description": "One task row per line.",
                                  "content": {"application/x-ndjson": {"schema": {"type": "string"}}}},
                          **_errors(404)}}},
        agent + "/sessions": {"post": {
            "summary": "Open a session for a task row (runs setup_session).", "parameters": [_AGENT],
            "requestBody": _body("TaskRow", "The task row."),
            "responses": {"201": _json(_ref("SessionOpened"), "Opened."), **_post_errors(400, 404, 413, 500, 503)}}},
        session + "/tools/{tool}": {"post": {
            "summary": "Call a tool in the session. A tool that raises gives ok=false and an error output, not "
                       "an HTTP error.", "parameters": [_AGENT, _SESSION, _TOOL],
            "requestBody": _body("ToolCall", "The arguments."),
            "responses": {"200": _json(_ref("ToolResult"), "The tool's output."), **_post_errors(400, 404, 413)}}},
        session + "/verify": {"post": {
            "summary": "Score the episode with the agent's verify hooks.", "parameters": [_AGENT, _SESSION],
            "requestBody": _body("VerifyRequest", "The episode."),
            "responses": {"200": _json(_ref("Verdict"), "Reward and metrics."), **_post_errors(400, 404, 413, 500)}}},
        session: {"delete": {
            "summary": "End the session (runs teardown_session). Idle sessions end by themselves after "
                       "--session-idle-timeout.", "parameters": [_AGENT, _SESSION],
            "responses": {"200": _json(_ref("Ended"), "Ended."), **_errors(404)}}},
        agent + "/rollouts": {"post": {
            "summary": "Run one whole rollout (model, tools, verify) with the same agent loop as embedded "
                       "collection; model failures are reported in the rollout's `error`.", "parameters": [_AGENT],
            "requestBody": _body("RolloutRequest", "The task and its indices."),
            "responses": {"200": _json(_ref("Rollout"), "The output line."),
                          **_post_errors(400, 404, 413, 503)}}},
    }
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "gym serve", "version": __version__,
                 "description": "A gymcore runner: hosted environments, their model backend and the agent loop. "
                                "Errors are `{\"error\": {\"type\", \"message\"}}`."},
        "paths": paths,
        "components": {"schemas": _SCHEMAS,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                                      "description": "The runner's --token / GYM_TOKEN."}}},
    }
    document["security"] = [{"bearer": []}] if auth else []
    return document
