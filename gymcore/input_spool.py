"""Input that can be read only once: ``--input -``, ``/dev/stdin``, a FIFO, a process
substitution (``<(...)``), any path that is not a regular file.

A run reads its input twice (validate every row, then feed the workers) and ``--resume``
reads it again, days later; a pipe gives its data to the first read only (the second saw
nothing: "0/3, completed"), and a FIFO's second open waits for a writer that never comes.
So such input is copied once, as it arrives, to ``<stem>.input.jsonl`` beside the output;
the run validates, hashes, reads and resumes from that copy, and the run record names it
(``input_copy``). A resumed run reads the copy, never its standard input: the same data
cannot be piped twice.
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path
from typing import Callable

import attrs

from .errors import GymError, InputError
from .runfiles import RESUME_HINT, RunRecord, file_sha256, run_record_path, sidecar

#: How the record names standard input.
STDIN_NAME = "<stdin>"
_STDIN_PATHS = {"-", "/dev/stdin", "/dev/fd/0", "/proc/self/fd/0"}
#: A bar appears when spooling takes longer than this (seconds); a short pipe stays quiet.
BAR_DELAY = 0.5


def input_copy_path(output: Path) -> Path:
    """``results/run.jsonl`` -> ``results/run.input.jsonl``."""
    return sidecar(output, ".input.jsonl")


def is_stream(path: Path) -> bool:
    """True for ``-`` and anything that exists but is not a regular file (pipe, FIFO,
    character device): input that may not read the same twice."""
    if str(path) == "-":
        return True
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False  # the reader reports a missing file, naming it
    return not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)


@attrs.frozen
class RunInput:
    """The file a run reads, and how its record names it."""

    path: Path
    #: as the user gave it (``<stdin>``, the FIFO's path, the file's resolved path)
    name: str
    #: the copy's file name beside the output, when the input was a stream
    copy: str | None = None


def _notify(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_input(given: Path, output: Path, *, resume: bool, overwrite: bool, progress: bool,
              notify: Callable[[str], None] = _notify) -> RunInput:
    """What to read for ``--input given``: the file itself, or (a stream) its copy beside
    ``output``, spooled now or, resuming, the one spooled when the run started."""
    if not is_stream(given):
        return RunInput(given, str(given.resolve()))
    name = STDIN_NAME if str(given) in _STDIN_PATHS else str(given.absolute())
    copy = input_copy_path(output)
    record_path = run_record_path(output)
    if resume and record_path.exists():
        previous = RunRecord.load(record_path)
        if previous.input_copy:
            kept = output.with_name(previous.input_copy)
            if kept.is_file():
                notify(f"gym: resuming from {kept}, the copy of the input spooled when the run started "
                       f"(from {previous.input}); {name} is not read")
                return RunInput(kept, previous.input, kept.name)
            notify(f"gym: {kept}, the copy of the input spooled when the run started, is gone: reading {name} "
                   "again (the run resumes only if it holds the same tasks)")
            spool(given, name, copy, progress=progress, notify=notify)
            got = file_sha256(copy)
            if got != previous.input_sha256:
                copy.unlink()  # a wrong copy must not pass for the run's input next time
                raise GymError(f"cannot resume {output}: {name} is not the input the run started with (sha256 "
                               f"{got[:12]}... now, {previous.input_sha256[:12]}... then); pipe the same tasks "
                               "again, or use another --output for a new run")
            return RunInput(copy, name, copy.name)
    elif not resume and not overwrite and copy.exists():
        raise GymError(f"{copy} already exists (the input copy of an earlier run): {RESUME_HINT}")
    spool(given, name, copy, progress=progress, notify=notify)
    return RunInput(copy, name, copy.name)


def spool(given: Path, name: str, copy: Path, *, progress: bool, notify: Callable[[str], None]) -> None:
    """Copy the stream ``given`` to ``copy`` (through a temporary file, synced, then renamed:
    the copy is whole or absent), with a byte counter on stderr for a long stream."""
    what = "standard input" if name == STDIN_NAME else f"{given} (not a regular file)"
    if str(given) == "-" or name == STDIN_NAME:
        if sys.stdin is None or sys.stdin.isatty():
            raise GymError(f"--input {given}: standard input is a terminal, not tasks: pipe them in "
                           f"(cat tasks.jsonl | gym collect --input - ...) or pass a file")
    waiting = "; waiting for a writer" if stat.S_ISFIFO(_mode(given)) else ""
    notify(f"gym: reading {what} into {copy}, which the run reads (and --resume reads again){waiting}")
    copy.parent.mkdir(parents=True, exist_ok=True)
    tmp = copy.with_name(copy.name + ".tmp")
    bar = None
    try:
        source = sys.stdin.buffer if str(given) == "-" else open(given, "rb")
    except OSError as exc:
        raise InputError(str(given), None, f"cannot open: {exc.strerror}") from None
    try:
        with open(tmp, "wb") as sink:
            if progress:
                from tqdm import tqdm

                bar = tqdm(desc=f"Reading {what}", unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr,
                           delay=BAR_DELAY, mininterval=0.25, dynamic_ncols=True)
            while chunk := source.read1(1 << 20):
                sink.write(chunk)
                if bar is not None:
                    bar.update(len(chunk))
            sink.flush()
            os.fsync(sink.fileno())
        os.replace(tmp, copy)
    finally:
        if bar is not None:
            bar.close()
        if source is not sys.stdin.buffer:
            source.close()
        tmp.unlink(missing_ok=True)


def _mode(path: Path) -> int:
    try:
        return 0 if str(path) == "-" else os.stat(path).st_mode
    except OSError:
        return 0
