"""Requests leave in the loop turn they are made (gymcore.eager_requests): real aiohttp client
and server on 127.0.0.1, with turns counted by a callback that runs once per turn."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import sys

import aiohttp
import pytest
from aiohttp import web

from gymcore.eager_requests import requests_sent_at_once

ON_311 = sys.version_info < (3, 12)


class Turns:
    """Counts turns of the running loop: a callback that puts itself back each turn."""

    def __init__(self) -> None:
        self.now = 0
        self._loop = asyncio.get_running_loop()
        self._handle = self._loop.call_soon(self._tick)

    def _tick(self) -> None:
        self.now += 1
        self._handle = self._loop.call_soon(self._tick)

    def stop(self) -> None:
        self._handle.cancel()


async def start_server(handler) -> tuple[web.AppRunner, str]:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/echo", handler)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)  # cleanup cuts a handler left waiting
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}/echo"


async def digest(request: web.Request) -> web.Response:
    body = await request.read()
    return web.json_response({"bytes": len(body), "sha256": hashlib.sha256(body).hexdigest()})


async def turns_from_request_to_body(eager: bool, requests: int = 8) -> list[int]:
    """For each of ``requests`` posts made in the same turn: how many turns after its
    headers were ready its body was handed to the socket."""
    with requests_sent_at_once() if eager else contextlib.nullcontext():
        return await _turns_from_request_to_body(requests)


async def _turns_from_request_to_body(requests: int) -> list[int]:
    turns = Turns()
    made: dict[int, int] = {}
    lags: list[int] = []

    async def headers_ready(_session, context, _params) -> None:
        made[id(context)] = turns.now

    async def body_written(_session, context, _params) -> None:
        lags.append(turns.now - made[id(context)])

    trace = aiohttp.TraceConfig()
    trace.on_request_headers_sent.append(headers_ready)
    trace.on_request_chunk_sent.append(body_written)
    runner, url = await start_server(digest)
    try:
        async with aiohttp.ClientSession(trace_configs=[trace]) as http:
            async def post(i: int) -> dict:
                async with http.post(url, data=b"x" * (100 + i)) as resp:
                    return await resp.json()

            await asyncio.gather(*(post(i) for i in range(requests)))  # connections now open
            lags.clear()
            answers = await asyncio.gather(*(post(i) for i in range(requests)))
    finally:
        turns.stop()
        await runner.cleanup()
    assert [a["bytes"] for a in answers] == [100 + i for i in range(requests)]
    return lags


def test_a_request_body_leaves_in_the_turn_the_request_is_made():
    assert asyncio.run(turns_from_request_to_body(eager=True)) == [0] * 8


@pytest.mark.skipif(not ON_311, reason="aiohttp starts its body writer eagerly itself on Python 3.12+")
def test_without_it_python_311_sends_every_body_a_turn_late():
    """What the module is for: here the eight requests made together leave together, later."""
    assert asyncio.run(turns_from_request_to_body(eager=False)) == [1] * 8


def test_a_body_larger_than_the_socket_buffer_arrives_whole():
    """The writer waits for the socket to drain, so the rest of it runs as a task."""
    body = bytes(range(256)) * (32 * 1024)  # 8 MiB
    writers_seen: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        writers_seen.extend(t.get_coro().__qualname__ for t in asyncio.all_tasks())
        return await digest(request)

    async def main() -> dict:
        runner, url = await start_server(handler)
        try:
            with requests_sent_at_once() as installed:
                assert installed is ON_311
                async with aiohttp.ClientSession() as http, http.post(url, data=body) as resp:
                    return await resp.json()
        finally:
            await runner.cleanup()

    answer = asyncio.run(main())
    assert answer == {"bytes": len(body), "sha256": hashlib.sha256(body).hexdigest()}
    if ON_311:
        assert "_go_on" in writers_seen, writers_seen


def test_a_request_given_up_on_midway_through_its_body_leaves_no_writer_behind():
    body = b"y" * (16 * 1024 * 1024)  # more than the socket buffers hold: the writer waits
    writers_seen: list[str] = []
    left_over: list[str] = []

    async def main() -> None:
        async def never_reads(_request: web.Request) -> web.Response:
            writers_seen.extend(t.get_coro().__qualname__ for t in asyncio.all_tasks())
            await asyncio.sleep(30)
            return web.Response()

        runner, url = await start_server(never_reads)
        try:
            with requests_sent_at_once():
                async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.3)) as http:
                    with pytest.raises(asyncio.TimeoutError):
                        async with http.post(url, data=body):
                            pass
            await asyncio.sleep(0.05)
            left_over.extend(t.get_coro().__qualname__ for t in asyncio.all_tasks()
                             if t is not asyncio.current_task() and not t.done())
        finally:
            await runner.cleanup()

    asyncio.run(main())
    if ON_311:
        assert "_go_on" in writers_seen, writers_seen
    assert not [name for name in left_over if "write_bytes" in name or name == "_go_on"], left_over


def test_other_tasks_are_made_as_asyncio_makes_them_and_the_loop_is_left_as_found():
    async def named() -> str:
        return asyncio.current_task().get_name()

    async def main() -> tuple[str, bool, bool, object]:
        loop = asyncio.get_running_loop()
        with requests_sent_at_once() as installed:
            task = loop.create_task(named(), name="mine")
            assert isinstance(task, asyncio.Task) and not task.done()  # not run before its turn
            with requests_sent_at_once() as nested:  # an enclosing block's factory stays
                pass
            assert (loop.get_task_factory() is not None) is ON_311
            name = await task
        return name, installed, nested, loop.get_task_factory()

    assert asyncio.run(main()) == ("mine", ON_311, False, None)


def test_a_loop_with_a_task_factory_of_its_own_keeps_it():
    def theirs(loop, coro, **kwargs):
        return asyncio.Task(coro, loop=loop, **kwargs)

    async def main() -> tuple[bool, object, object]:
        loop = asyncio.get_running_loop()
        loop.set_task_factory(theirs)
        with requests_sent_at_once() as installed:
            during = loop.get_task_factory()
        return installed, during, loop.get_task_factory()

    assert asyncio.run(main()) == (False, theirs, theirs)
