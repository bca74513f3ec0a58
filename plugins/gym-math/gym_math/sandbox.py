"""Run untrusted, model-written Python in a separate process with limits, never in ours.

Each call is a fresh ``python -I`` process (isolated mode: no user site, no ``PYTHON*``
variables, no current directory on ``sys.path``) fed the code on stdin, with:

* **CPU time** (``RLIMIT_CPU``) and a **wall clock** (the whole process group is killed);
* **memory** (``RLIMIT_AS``: a big allocation raises ``MemoryError`` in the child);
* **processes** (``RLIMIT_NPROC``: a fork bomb's forks fail). Run as root, where the kernel
  does not apply that limit, the child gets an unprivileged uid of its own (one per
  concurrent call), so the limit holds, the code cannot touch root's files, and every
  process it left behind is killed by uid when the call ends;
* **output** (at most ``output_bytes`` of stdout + stderr are read; then it is killed) and
  **file size** (``RLIMIT_FSIZE``);
* **no inherited secrets**: the environment is ``PATH``, ``HOME`` (its temporary working
  directory, removed afterwards) and ``LANG`` only.

It does not isolate the network or the file system beyond file permissions: the code can
read what its uid can read and open sockets. For that, set ``GYM_MATH_SANDBOX`` to a command
prefix that wraps the interpreter (``bwrap --unshare-all --ro-bind / / --dev /dev
--tmpfs /tmp --`` , ``nsjail ... --``, ``docker run --rm -i --network none python:3.11``):
the prefix is put in front of ``python -I -`` and the limits above still apply to it.
Each call is awaited with asyncio's subprocess support, so it never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import os
import resource
import shlex
import shutil
import signal
import stat
import sys
import tempfile
from collections import deque
from pathlib import Path

import attrs

#: uids handed to sandboxed processes when gymcore runs as root: one per concurrent call,
#: in a block chosen by this process's pid so two collectors on one machine rarely meet.
UID_BASE = 1_000_000 + (os.getpid() % 1000) * 1024
UID_SLOTS = 1024
#: free uids, oldest first, shared by every Sandbox of this process: a uid comes back only
#: after all the others were used, so the killed processes of its last call have long been
#: reaped by init and do not count against its process limit
_free_uids: deque[int] = deque(range(UID_BASE, UID_BASE + UID_SLOTS))


@attrs.define
class Limits:
    wall_s: float = 10.0
    cpu_s: int = 5
    memory_mb: int = 512
    output_bytes: int = 16_384
    file_bytes: int = 16 * 1024 * 1024
    processes: int = 16


@attrs.define
class Result:
    stdout: str
    stderr: str
    exit_code: int | None
    #: which limit stopped it: ``wall``, ``cpu``, ``memory``, ``output``, or ``None``
    limit: str | None = None

    def for_model(self, limits: Limits) -> str:
        """What the model reads: the output, the error's tail, and a clear word on limits."""
        parts = []
        if self.stdout:
            parts.append(self.stdout)
        if self.stderr:
            parts.append("stderr:\n" + self.stderr[-4000:])
        messages = {
            "wall": f"the code ran longer than {limits.wall_s:g} s (wall clock) and was stopped",
            "cpu": f"the code used more than {limits.cpu_s} s of CPU and was stopped",
            "memory": f"the code tried to use more than {limits.memory_mb} MB of memory",
            "output": f"the code printed more than {limits.output_bytes} bytes; output cut there and the code stopped",
        }
        if self.limit:
            parts.append(f"[sandbox] {messages[self.limit]}")
        elif self.exit_code not in (0, None):
            parts.append(f"[sandbox] exit status {self.exit_code}")
        return "\n".join(parts) if parts else "(no output; use print() to see values)"


def _world_usable(path: str) -> bool:
    """Can a process of another, unprivileged uid execute ``path`` (every directory above
    it searchable, the file executable, by others)?"""
    real = Path(os.path.realpath(path))
    try:
        if not real.stat().st_mode & stat.S_IXOTH:
            return False
        return all(parent.stat().st_mode & stat.S_IXOTH for parent in real.parents)
    except OSError:
        return False


def interpreter() -> str:
    """The Python that runs sandboxed code: this one, unless we are root and it lives where
    an unprivileged uid cannot reach it (e.g. under /root), then the system's."""
    if os.geteuid() != 0 or _world_usable(sys.executable):
        return sys.executable
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.path.exists(candidate) and _world_usable(candidate):
            return candidate
    return sys.executable  # no unprivileged-usable Python: run as root, say so in the docs


class Sandbox:
    """Runs code under :class:`Limits`; one per environment, shared by its rollouts."""

    def __init__(self, limits: Limits | None = None):
        self.limits = limits or Limits()
        self.prefix = shlex.split(os.environ.get("GYM_MATH_SANDBOX", ""))
        self.python = interpreter()
        #: as root, give each call an unprivileged uid (only if that uid can run the interpreter)
        self.drop_privileges = os.geteuid() == 0 and _world_usable(self.python)
        self._free_uids = _free_uids

    def _preexec(self, uid: int | None):
        limits = self.limits
        nproc = limits.processes if uid is not None else _process_count() + limits.processes

        def apply() -> None:  # runs in the child between fork and exec
            os.setsid()
            resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s + 1))
            memory = limits.memory_mb * 1024 * 1024
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
            resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_bytes, limits.file_bytes))
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            if uid is not None:
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)
            resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))

        return apply

    async def run(self, code: str) -> Result:
        uid = self._free_uids.popleft() if self.drop_privileges and self._free_uids else None
        workdir = tempfile.mkdtemp(prefix="gym-math-")
        if uid is not None:
            os.chown(workdir, uid, uid)
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": workdir, "LANG": "C.UTF-8",
               "PYTHONIOENCODING": "utf-8", "PYTHONDONTWRITEBYTECODE": "1"}
        proc = transport = None
        try:
            loop = asyncio.get_running_loop()
            transport, protocol = await loop.subprocess_exec(
                lambda: _Protocol(loop), *self.prefix, self.python, "-I", "-", stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=workdir, env=env,
                preexec_fn=self._preexec(uid))
            proc = asyncio.subprocess.Process(transport, protocol, loop)
            return await self._communicate(proc, protocol.exited, code.encode("utf-8", "replace"), uid)
        finally:
            if transport is not None:
                self._kill(transport.get_pid(), uid, everything=False)
                transport.close()  # our ends of the pipes; kills the process if it still runs
            if uid is not None:  # a last sweep of the uid, off the call's path; then it is free again
                sweep = asyncio.get_running_loop().run_in_executor(None, _kill_uid, uid)
                sweep.add_done_callback(lambda _done, uid=uid: self._free_uids.append(uid))
            shutil.rmtree(workdir, ignore_errors=True)

    @staticmethod
    def _kill(pid: int, uid: int | None, *, everything: bool) -> None:
        """Kill the call's process group and, ``everything`` with a uid of its own, every
        process of that uid (a child that started a new session has left the group)."""
        _kill_group(pid)
        if everything and uid is not None:
            _kill_uid(uid)

    async def _communicate(self, proc: asyncio.subprocess.Process, exited_event: asyncio.Event, code: bytes,
                           uid: int | None) -> Result:
        limits = self.limits
        budget = [limits.output_bytes]
        over = asyncio.Event()
        out: list[bytes] = []
        err: list[bytes] = []

        async def read(stream: asyncio.StreamReader, into: list[bytes]) -> None:
            while chunk := await stream.read(65536):
                into.append(chunk[: max(budget[0], 0)])
                budget[0] -= len(chunk)
                if budget[0] < 0:
                    over.set()
                    return

        async def feed() -> None:
            try:
                proc.stdin.write(code)
                await proc.stdin.drain()
                proc.stdin.close()
            except (BrokenPipeError, ConnectionResetError):
                pass

        readers = [asyncio.ensure_future(read(proc.stdout, out)), asyncio.ensure_future(read(proc.stderr, err)),
                   asyncio.ensure_future(feed())]
        # not proc.wait(): on Python 3.11 it also waits for the pipes to close, which a
        # descendant in a session of its own may hold open
        exited = asyncio.ensure_future(exited_event.wait())
        over_task = asyncio.ensure_future(over.wait())
        limit = None
        try:
            done, _ = await asyncio.wait({exited, over_task}, timeout=limits.wall_s,
                                         return_when=asyncio.FIRST_COMPLETED)
            if exited not in done:
                limit = "output" if over.is_set() else "wall"
            # the program is over (or is stopped now); its group goes with it, then the rest
            # of its output is read; a descendant in a session of its own may still hold the
            # pipes: with a uid of our own it is killed at once, else reading stops after 1 s
            self._kill(proc.pid, uid, everything=False)
            await exited
            _, pending = await asyncio.wait(readers, timeout=0.05)
            if pending:
                self._kill(proc.pid, uid, everything=True)
                await asyncio.wait(pending, timeout=1.0)
        except BaseException:
            exited.cancel()
            raise
        finally:
            for task in (*readers, over_task):
                task.cancel()
        if over.is_set():
            limit = "output"
        status = proc.returncode
        stderr = b"".join(err).decode("utf-8", "replace")
        if limit is None and "MemoryError" in stderr:
            limit = "memory"
        elif limit is None and status in (-signal.SIGXCPU, -signal.SIGKILL):
            limit = "cpu"
        return Result(b"".join(out).decode("utf-8", "replace"), stderr, status, limit)


class _Protocol(asyncio.subprocess.SubprocessStreamProtocol):
    """asyncio's stream protocol, plus an event set when the process exits (its pipes may
    stay open longer)."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        super().__init__(limit=2 ** 16, loop=loop)
        self.exited = asyncio.Event()

    def process_exited(self) -> None:
        self.exited.set()
        super().process_exited()


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _kill_uid(uid: int) -> None:
    """Kill every process of ``uid`` (what a sandboxed call left behind, even in a new
    session): a forked child takes the uid and signals everything it may, i.e. that uid."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.setgid(uid)
            os.setuid(uid)
            os.kill(-1, signal.SIGKILL)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def _process_count() -> int:
    """An upper bound of this user's processes (all processes), for RLIMIT_NPROC when we
    cannot give the child a uid of its own."""
    return sum(1 for name in os.listdir("/proc") if name.isdigit())
