"""Errors gymcore reports to users. The CLI prints ``GymError``s as one line, no traceback."""

from __future__ import annotations


class GymError(Exception):
    """An error whose message is fit for the user as it is."""


class UsageError(GymError):
    """The command line is wrong as written (a malformed or out-of-range value, contradicting
    options, a name no installed plugin provides): the CLI exits 2, as click does for its own
    usage errors. Everything else that stops a command exits 1."""


class InputError(GymError):
    """A bad input row: names the file, the line and the field."""

    def __init__(self, path: str, line: int | None, message: str, field: str | None = None):
        self.path, self.line, self.field = path, line, field
        where = f"{path}:{line}" if line is not None else str(path)
        what = f"field {field!r}: " if field else ""
        super().__init__(f"{where}: {what}{message}")


class EnvironmentBuildError(GymError):
    """An environment cannot be built: unknown name, clashing tools, a bad tool list."""


class UnknownAgentError(EnvironmentBuildError, UsageError):
    """An agent name that no installed resource plugin provides."""


class ModelError(GymError):
    """A model backend failed to answer. ``status`` is the HTTP status when there is one;
    ``kind`` classifies it for summaries and retries (``http``, ``connection``, ``timeout``,
    ``auth``, ``protocol``, ``failed``, ``cancelled``). ``retryable`` overrides what the
    retry policy would decide from ``status`` and ``kind`` (None: let it decide).
    ``attempts`` is how many times the call was tried in all (set by
    :func:`gymcore.retry.call_with_retries`)."""

    def __init__(self, message: str, *, status: int | None = None, kind: str = "http",
                 retry_after: float | None = None, retryable: bool | None = None):
        self.status, self.kind, self.retry_after = status, kind, retry_after
        self.retryable = retryable
        self.attempts = 1
        super().__init__(message)
