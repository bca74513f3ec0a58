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
            f"process may open only {soft} (ulimit -n; the hard limit, ulimit -Hn, is as far as it can "
            f"raise itself); rollouts past that will fail to connect. Lower --parallel to about "
            f"{max(soft - HEADROOM, 1)}, or have an administrator raise the hard limit (`ulimit -Hn "
            f"{need}` in a privileged shell, LimitNOFILE= for a systemd service, nofile in "
            f"/etc/security/limits.conf, `docker run --ulimit nofile={need}`), or split the rollouts "
            f"over several collectors (`--executor ray`).")


#: Linux's range of local ports for outgoing connections.
PORT_RANGE_FILE = "/proc/sys/net/ipv4/ip_local_port_range"


def ephemeral_ports() -> tuple[int, int] | None:
    """The system's ephemeral port range ``(first, last)``; ``None`` where it cannot be read."""
    try:
        first, last = (int(part) for part in open(PORT_RANGE_FILE).read().split())
    except (OSError, ValueError):
        return None
    return first, last


def destinations(urls: list[str]) -> int:
    """How many distinct ``(host, port)`` pairs the connections go to (at least 1), as named:
    two names of one address count twice."""
    from urllib.parse import urlsplit

    pairs = set()
    for url in urls:
        parts = urlsplit(url if "//" in url else f"//{url}")
        pairs.add((parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)))
    return max(len(pairs), 1)


def check_ports(in_flight: int, targets: int) -> str | None:
    """A warning when ``in_flight`` connections spread over ``targets`` destinations need more
    local ports to one destination than the system hands out: a connection is told apart by
    its (source, destination) pair, so each destination has the whole range to itself, and
    only more destinations, a wider range or fewer in flight help."""
    span = ephemeral_ports()
    if span is None:
        return None
    ports = span[1] - span[0] + 1
    per_target = -(-in_flight // targets)
    if per_target <= ports:
        return None
    return (f"gym: warning: {in_flight} rollouts in flight over {targets} destination(s) need about "
            f"{per_target} connections to one host:port, but the system has only {ports} local ports for "
            f"that (net.ipv4.ip_local_port_range {span[0]}-{span[1]}); connections past that will fail. "
            f"Spread them over more host:port pairs ({-(-in_flight // ports)} suffice: model replicas with "
            f"--model-url, or runners), widen the range (sysctl, as root), or lower --parallel to about "
            f"{ports * targets}.")


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
