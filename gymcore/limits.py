"""Open-file limits. Every rollout in flight holds a connection, i.e. a file descriptor, and
many systems start processes with a soft limit of 1,024: without help, ``--parallel 1024``
would fail to connect, or to open its own output files, part-way through a run."""

from __future__ import annotations

#: Descriptors beyond one per rollout in flight: output, failures and input files, the event
#: loop, the runner's or plugins' own files.
HEADROOM = 128


def _raise_soft_limit(want: int | None) -> int | None:
    """Raise the soft ``RLIMIT_NOFILE`` to ``want`` (``None``: as far as allowed), never past
    the hard limit, which only an administrator can raise. Return the soft limit after;
    ``None`` for unlimited, or where there is no such limit (not a Unix)."""
    try:
        import resource
    except ImportError:
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    unlimited = resource.RLIM_INFINITY
    soft_now = None if soft == unlimited else soft
    hard_now = None if hard == unlimited else hard
    target = hard_now if want is None else (want if hard_now is None else min(want, hard_now))
    if soft_now is None or (target is not None and soft_now >= target):
        return soft_now
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (unlimited if target is None else target, hard))
    except (ValueError, OSError):
        return soft_now
    return target


def ensure_open_files(in_flight: int) -> str | None:
    """Make room for ``in_flight`` connections (``gym collect``); return a warning when even
    the hard limit is too low, else ``None``."""
    need = in_flight + HEADROOM
    soft = _raise_soft_limit(need)
    if soft is None or soft >= need:
        return None
    return (f"gym: warning: {in_flight} rollouts in flight need about {need} open files, but this "
            f"process may open only {soft} (ulimit -n); rollouts past that will fail to connect. "
            f"Lower --parallel to about {max(soft - HEADROOM, 1)} or raise the limit.")


def raise_open_files_to_hard_limit() -> None:
    """``gym serve`` cannot know how many rollouts its clients will send (each holds two
    connections there: the client's and the model's), so it takes all the system allows."""
    _raise_soft_limit(None)


def open_file_limit() -> int | None:
    """The soft ``RLIMIT_NOFILE`` now; ``None`` for unlimited or not a Unix."""
    try:
        import resource
    except ImportError:
        return None
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else soft
