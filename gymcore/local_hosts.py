"""Which requests a server on this machine answers: the one policy of ``gym view`` and
``gym serve`` against web pages.

A page on ``evil.example`` whose name is re-pointed at 127.0.0.1 (DNS rebinding) is
same-origin with a loopback server as far as the browser knows; only the ``Host`` header,
still ``evil.example``, gives it away. A page of another origin is told apart by its
``Origin`` header, which browsers send on every cross-origin request and every POST.
"""

from __future__ import annotations

#: The names a loopback server always answers to.
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")

#: Binds that listen on every address: the machine's names are not known, so any Host goes.
WILDCARD_BINDS = ("", "0.0.0.0", "::")


def trusted_hosts(bind: str) -> frozenset[str] | None:
    """The host names a server bound to ``bind`` answers to: that address and the loopback
    names; ``None`` (any name) for a wildcard bind."""
    if bind in WILDCARD_BINDS:
        return None
    return frozenset({bind.strip("[]").lower(), *LOCAL_HOSTS})


def host_name(header: str) -> str | None:
    """``Host: name[:port]`` or ``[v6]:port`` -> the name, lower case, without brackets;
    ``None`` when it is not a well-formed host."""
    header = header.strip().lower()
    if header.startswith("["):
        name, bracket, rest = header[1:].partition("]")
    else:
        name, colon, port = header.partition(":")
        bracket, rest = "]", colon + port
    if not name or not bracket or (rest and not (rest[0] == ":" and rest[1:].isdigit() and len(rest) <= 6)):
        return None
    return name


def host_is_trusted(header: str | None, trusted: frozenset[str] | None) -> bool:
    """Whether a request's ``Host`` header names this server (``None`` trusts any; a
    request without one, which no browser sends, passes)."""
    if trusted is None or header is None:
        return True
    return host_name(header) in trusted


def is_own_origin(origin: str | None, host_header: str | None) -> bool:
    """Whether a request's ``Origin`` is the server's own (``http(s)://`` + its ``Host``).
    No ``Origin``: not a browser's cross-origin request, so it passes; ``null`` (a sandboxed
    frame, a file) never does."""
    if origin is None:
        return True
    scheme, sep, authority = origin.strip().lower().partition("://")
    return bool(sep) and scheme in ("http", "https") and host_header is not None \
        and authority == host_header.strip().lower()
