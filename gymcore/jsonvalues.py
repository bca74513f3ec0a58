"""What gymcore can write as a JSON line, checked where values come in.

Lines are written with orjson, which refuses a set or an object it does not know, an
integer outside 64 bits and nesting deeper than 254 levels, and writes NaN and infinity as
``null`` (so they would not read back). A value like that reaching the writer would stop the
run, and every resume after it at the same rollout. So values are checked where they enter:
an input row as it is read (an input error naming its line), a verdict as ``verify`` returns
it (a ``plugin:verify`` failure of that rollout, before its session is torn down, embedded
or served alike). What can still be refused at write time (a model reply nested too deep)
becomes a failure record through :func:`unwritable_error`, never an exception.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import orjson

#: The options of every JSON line gymcore writes.
OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY
#: orjson writes at most this many levels of nesting.
ORJSON_MAX_DEPTH = 254
#: The deepest input row gymcore takes (the row itself is level 1): a few levels under
#: orjson's limit, for the objects a row travels inside (a served rollout request, the
#: viewer's pages).
MAX_ROW_DEPTH = 250


def dumps(obj: Any) -> bytes:
    """``obj`` as one JSON line's bytes (no newline); ``TypeError`` if it cannot be written."""
    return orjson.dumps(obj, option=OPTIONS)


def non_finite(value: Any) -> float | None:
    """The first NaN or infinity in ``value`` (nested in lists, tuples, dicts and numpy
    arrays included), or ``None``: orjson would write it as ``null``."""
    if isinstance(value, (str, bytes, bool)) or value is None:
        return None
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        number = float(value)
        return None if math.isfinite(number) else number
    if isinstance(value, dict):
        value = value.values()
    elif hasattr(value, "dtype") and hasattr(value, "tolist"):  # a numpy array
        value = value.tolist()
    elif not isinstance(value, (list, tuple)):
        return None
    for item in value:
        found = non_finite(item)
        if found is not None:
            return found
    return None


def _refusal(value: Any, levels_above: int, option: int = OPTIONS) -> str | None:
    """What orjson says about ``value`` placed ``levels_above`` levels deep in a line, with
    the whole line held to :data:`MAX_ROW_DEPTH` levels; ``None`` when it writes it."""
    wrapped = value
    for _ in range(levels_above + ORJSON_MAX_DEPTH - MAX_ROW_DEPTH):
        wrapped = [wrapped]
    try:
        orjson.dumps(wrapped, option=option)
    except TypeError as exc:  # orjson.JSONEncodeError is a TypeError
        if "Recursion limit" in str(exc):
            return f"nested deeper than {MAX_ROW_DEPTH} levels (JSON lines are written with orjson, " \
                   f"which stops at {ORJSON_MAX_DEPTH})"
        return f"not writable as JSON ({exc})"
    return None


def problem(value: Any, levels_above: int = 0) -> str | None:
    """Why ``value``, placed ``levels_above`` levels deep in a line, cannot be written as it
    is and read back the same (``None`` when it can): what orjson refuses, and NaN or
    infinity, which it would write as ``null``."""
    refused = _refusal(value, levels_above)
    if refused is not None:
        return refused
    found = non_finite(value)
    if found is not None:
        where = "is" if isinstance(value, numbers.Real) else "holds"
        return f"{where} {found!r}, which JSON cannot hold (it would be written as null; use None for no value)"
    return None


def row_problem(row: dict[str, Any]) -> tuple[str | None, str] | None:
    """``(field, what is wrong)`` when a row parsed by orjson cannot be written back out
    (it nests too deep: orjson reads 1,024 levels but writes 254; what it parses holds no
    NaN, no set, no big int); ``None`` when it can. One orjson pass per row, without
    ``OPT_NON_STR_KEYS`` (parsed keys are strings; the option makes it 3x slower): under a
    microsecond for a 600-byte row, a fifth of parsing it. The field is looked for only
    when there is a problem."""
    what = _refusal(row, 0, option=0)
    if what is None:
        return None
    for key, value in row.items():
        field_what = _refusal(value, 1, option=0)
        if field_what is not None:
            return str(key), field_what
    return None, what


def unwritable_error(line: dict[str, Any]) -> dict[str, Any]:
    """The ``error`` of a rollout whose line orjson refused at write time, naming each
    top-level field it refused (``kind`` is the first: class ``unwritable:response``)."""
    fields = unwritable_fields(line)
    detail = "; ".join(f"field {name!r}: {why}" for name, why in fields.items()) or "unknown reason"
    return {"type": "unwritable", "kind": next(iter(fields), None), "status": None, "attempts": 1,
            "fields": list(fields), "message": f"the rollout cannot be written as JSON: {detail}"}


def unwritable_fields(line: dict[str, Any]) -> dict[str, str]:
    """The top-level fields of ``line`` that orjson refuses, each with orjson's reason."""
    bad = {}
    for key, value in line.items():
        try:
            dumps({key: value})
        except TypeError as exc:
            bad[str(key)] = str(exc)
    return bad
