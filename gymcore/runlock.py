"""One run per output: an exclusive lock on ``<stem>.lock`` beside the output, held by
``gym collect`` (and ``gym verify`` on its output) for the whole run.

Two runs appending to one output would interleave their lines and write rollouts twice;
the second run must refuse before it touches any file, and say which process holds the
output. The lock is ``fcntl.flock`` on the lock file: the kernel drops it when the process
ends however it ends (``kill -9`` too), so a lock left behind by a dead run never blocks
its ``--resume``; no pid-alive guessing decides who owns the output.

Why not the ``filelock`` library: it opens the lock file with ``O_TRUNC``, so every refused
contender would erase the holder's description, and it has no place for one; what is
needed here is flock, a first line of JSON saying who holds it, and an inode check.

The holder writes one JSON line (pid, host, start time, command line with secrets masked)
into the file; a refused run reads it to name the holder. The file is removed when the run
ends (while still locked, so a contender that opened the old file sees that it is gone and
retries on the new one).
"""

from __future__ import annotations

import errno
import os
import re
import shlex
import socket
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from .errors import GymError
from .runfiles import warn

#: Option names whose values are never written into the lock file (``--token X``,
#: ``+responses_create_params.api_key=X``, ``--set ...password=X``).
_SECRET = re.compile(r"(token|key|secret|password|auth)", re.IGNORECASE)


def lock_path(output: Path) -> Path:
    """``results/run.jsonl`` -> ``results/run.lock`` (never the output itself)."""
    return output.with_name((output.name if output.suffix == ".lock" else output.stem) + ".lock")


def masked_command(argv: list[str]) -> str:
    """The command line as a shell would take it, with the values of secret-looking options
    replaced by ``***``: the lock file is readable by anyone who can list the directory."""
    out: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            out.append("***")
            hide_next = False
            continue
        name, eq, _value = arg.partition("=")
        if eq and _SECRET.search(name.rsplit(".", 1)[-1]):
            out.append(f"{name}=***")
        elif arg.startswith("--") and not eq and _SECRET.search(arg):
            out.append(arg)
            hide_next = True
        else:
            out.append(arg)
    return shlex.join(out)


def _holder() -> dict[str, Any]:
    argv = [Path(sys.argv[0]).name or "python", *sys.argv[1:]] if sys.argv else ["python"]
    return {"pid": os.getpid(), "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "command": masked_command(argv)}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def describe_holder(text: str) -> tuple[str, bool]:
    """``("pid 12 on host, started ...: gym collect ...", settled)`` from a lock file's
    first line; ``settled`` is false while the line may still be replaced (not written yet,
    or left by a process that has ended)."""
    try:
        holder = orjson.loads(text.split("\n", 1)[0])
        pid, host = int(holder["pid"]), str(holder["host"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return "a process that has not written its name yet", False
    described = f"pid {pid} on {host}, started {holder.get('started', '?')}: {holder.get('command', '?')}"
    if host == socket.gethostname() and not _alive(pid):
        # flock belongs to the open file, so a child process that inherited it still holds it
        return described + f" (pid {pid} has ended; a process it started still holds the lock)", False
    return described, True


class RunLock:
    """``with RunLock(output):`` holds the output's lock, or raises a :class:`GymError`
    naming the process that holds it."""

    #: How long a refused run waits for the holder's name to appear in the lock file (a
    #: holder writes it right after it locks); never how long it waits for the lock.
    NAME_WAIT = 2.0

    def __init__(self, output: Path):
        self.output = output
        self.path = lock_path(output)
        self._fd: int | None = None

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.release()

    def acquire(self) -> None:
        import fcntl

        while True:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as exc:
                raise GymError(f"cannot create the lock file {self.path} beside the output ({exc.strerror}); "
                               "pick an --output in a directory you can write") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    os.close(fd)  # a file system without locks: go on, and say what is not guarded
                    warn(f"cannot lock {self.path} ({exc.strerror}): nothing keeps a second run off "
                         f"{self.output} now; do not start one")
                    return
                holder = self._read_holder(fd)
                os.close(fd)
                raise GymError(f"{self.output} is in use by another gym run: {holder}. Two runs on one output "
                               "would corrupt it: wait for that run to end (or stop it), then try again") from None
            try:
                opened, named = os.fstat(fd), os.stat(self.path)
                same = (opened.st_dev, opened.st_ino) == (named.st_dev, named.st_ino)
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the previous holder removed the file as we opened it: lock the new one
        line = orjson.dumps(_holder()) + b"\n"
        os.pwrite(fd, line, 0)  # over a dead holder's line, never an empty file in between
        os.ftruncate(fd, len(line))
        self._fd = fd

    def _read_holder(self, fd: int) -> str:
        deadline = time.monotonic() + self.NAME_WAIT
        while True:
            described, settled = describe_holder(os.pread(fd, 4096, 0).decode("utf-8", "replace"))
            if settled or time.monotonic() > deadline:
                return described
            time.sleep(0.02)

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # while still locked: see the module docstring
        finally:
            os.close(self._fd)  # closing the last descriptor drops the flock
            self._fd = None
