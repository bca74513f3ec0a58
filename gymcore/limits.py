"""Open-file limits. Every rollout in flight holds a connection, i.e. a file descriptor, and
many systems start processes with a soft limit of 1,024: without help, ``--parallel 1024``
would fail to connect, or to open its own output files, part-way through a run."""

from __future__ import annotations

#: Descriptors beyond one per rollout in flight: output, failures and input files, the event
#: loop, the runner's or plugins' own files.
HEADROOM = 128


def raise_open_file_limit(in_flight: int) -> str | None:
    """Raise this process's soft ``RLIMIT_NOFILE`` towards ``in_flight + HEADROOM`` (never past
    the hard limit, which only an administrator can raise); return a warning if even the
    hard limit is too low, else ``None``."""
    try:
        import resource
    except ImportError:  # not a Unix: nothing to raise
        return None
    need = in_flight + HEADROOM
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= need:
        return None
    target = need if hard == resource.RLIM_INFINITY else min(need, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        target = soft
    if target >= need:
        return None
    return (f"gym: warning: {in_flight} rollouts in flight need about {need} open files, but this "
            f"process may open only {target} (ulimit -n); rollouts past that will fail to connect. "
            f"Lower --parallel to about {max(target - HEADROOM, 1)} or raise the limit.")
