"""A test environment whose hooks are plain ``def`` and block, loaded by ``gym`` subprocesses
through an entry point (see ``tests/test_hook_threads.py``).

Each task says how its ``get_weather`` call behaves, in ``verifier_metadata``:
``{"block": "forever"}`` waits on an event that is never set (a hung network call);
``{"block": 1.0}`` sleeps that long; anything else answers at once. Every hook call is logged,
one line each, to the file named by ``$BLOCKING_HOOKS_LOG``: ``start N`` when a tool call
starts (N: tool calls running at that moment, the concurrency the plugin sees), ``end``,
``setup ID`` and ``teardown ID``. Start-up, for signals sent during it: when
``$BLOCKING_HOOKS_IMPORT_MARK`` is set, the import itself writes that file and sleeps 30 s (a
plugin slow to load); ``$BLOCKING_HOOKS_LIST_TOOLS_MARK`` does the same in ``list_tools``
(inside the event loop), sleeping ``$BLOCKING_HOOKS_LIST_TOOLS_SLEEP`` seconds (default 30).
``$BLOCKING_HOOKS_VERIFY=forever`` makes ``verify`` never return (for ``gym verify``), and
:data:`LOOP_BLOCKER` is a second environment whose ``async def`` tool blocks the event loop
itself (``time.sleep`` in a coroutine, a plugin bug).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from gymcore import hookimpl

_lock = threading.Lock()
_running = 0
_never = threading.Event()

if os.environ.get("BLOCKING_HOOKS_IMPORT_MARK"):
    Path(os.environ["BLOCKING_HOOKS_IMPORT_MARK"]).write_text("importing\n")
    time.sleep(30)


def _log(line: str) -> None:
    path = os.environ.get("BLOCKING_HOOKS_LOG")
    if path:
        with _lock, open(path, "a") as file:
            file.write(line + "\n")


@hookimpl
def list_tools():
    if os.environ.get("BLOCKING_HOOKS_LIST_TOOLS_MARK"):
        Path(os.environ["BLOCKING_HOOKS_LIST_TOOLS_MARK"]).write_text("listing\n")
        time.sleep(float(os.environ.get("BLOCKING_HOOKS_LIST_TOOLS_SLEEP", 30)))
    return [{"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]


@hookimpl
def setup_session(session):
    _log(f"setup {session.task.extra.get('id')}")


@hookimpl
def call_tool(name, arguments, session):
    global _running
    block = (session.task.verifier_metadata or {}).get("block")
    with _lock:
        _running += 1
        running = _running
    _log(f"start {running}")
    try:
        if block == "forever":
            _never.wait()
        elif block:
            time.sleep(float(block))
    finally:
        with _lock:
            _running -= 1
        _log("end")
    return {"city": arguments.get("city"), "temperature_c": 20, "conditions": "sunny"}


@hookimpl
def verify(session, response):
    _log(f"verify {session.task.extra.get('id')}")
    if os.environ.get("BLOCKING_HOOKS_VERIFY") == "forever":
        _never.wait()
    return {"reward": 1.0}


@hookimpl
def teardown_session(session):
    _log(f"teardown {session.task.extra.get('id')}")


class _LoopBlocker:
    @hookimpl
    def list_tools(self):
        return list_tools()

    @hookimpl
    async def call_tool(self, name, arguments, session):
        _log("start 1")
        time.sleep(60)  # wrong in a coroutine: the whole event loop stops with it
        return {}


LOOP_BLOCKER = _LoopBlocker()
