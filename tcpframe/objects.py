"""Objects over frames: JSON by default, pickle restricted to plain data.

The payload of a JSON frame is the UTF-8 JSON text, so the other side may
be a hand-typed ``read_string`` followed by ``json.loads``.

Unpickling runs code chosen by whoever made the pickle, and over a socket
that is whoever connects.  So ``codec="pickle"`` unpickles through
:class:`SafeUnpickler`, which rebuilds plain data only; anything else raises
:class:`UnsafePickle` before it can run, and is bounded in time and memory
by :class:`PickleLimits` (past one: :class:`PickleTooComplex`).  Full pickle
needs ``trusted=True``, which also drops those bounds.
"""

import json
import math
import pickle
import re
from typing import Any, Optional

from ._tcpframe import read_bytes, send_bytes
from .safe_pickle import (
    LimitsArg, PickleLimits, PickleTooComplex, SafeUnpickler, UnsafePickle, _resolve_limits,
    safe_loads,
)

__all__ = [
    "send_object", "read_object", "SafeUnpickler", "UnsafePickle", "PickleLimits",
    "PickleTooComplex", "CODECS", "JSON_MAX_DEPTH", "LimitsArg",
]

CODECS = ("json", "pickle")

# The deepest nesting of lists and objects read_object accepts in JSON.
# Python's json parser recurses, so without a bound a frame of 1,000 "["
# would raise RecursionError (or, with a raised recursion limit, crash).
JSON_MAX_DEPTH = 100

# Outside strings, what changes the nesting: brackets, and a quote opening a
# string.  A string is skipped with str.find (C speed, no memory): to its
# next quote not escaped by an odd run of backslashes.  (A regex matching
# strings whole, such as '"(?:[^"\\]|\\.)*"', keeps state for each of their
# characters: 146 MiB for a 1 MiB string.)
_JSON_OUTSIDE = re.compile(r'[\[\]{}"]')


def _check_json_depth(text: str, max_depth: int) -> None:
    if text.count("[") + text.count("{") <= max_depth:
        return                # cannot nest deeper than it has brackets
    search, find = _JSON_OUTSIDE.search, text.find
    depth = pos = 0
    while True:
        match = search(text, pos)
        if match is None:
            return
        token = match.group()
        pos = match.end()
        if token == '"':
            while True:
                end = find('"', pos)
                if end < 0:
                    return    # unterminated: json.loads says so
                back = end - 1
                while back >= pos and text[back] == "\\":
                    back -= 1
                pos = end + 1
                if (end - 1 - back) % 2 == 0:
                    break     # not escaped: the string ends here
        elif token in "[{":
            depth += 1
            if depth > max_depth:
                raise ValueError(
                    f"JSON nested more than max_depth={max_depth} levels deep; refused "
                    "before parsing (pass a larger max_depth to read_object if you "
                    "trust such data)")
        else:
            depth -= 1


def _refuse_constant(name: str) -> Any:
    # Python's json reads NaN, Infinity and -Infinity; JSON has no such numbers.
    raise ValueError(f"{name} is not a JSON number (JSON has no NaN or infinities)")


def _has_non_finite(obj: Any) -> bool:
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, float):
            if not math.isfinite(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return False


def _encode(obj: Any, codec: str) -> bytes:
    if codec == "json":
        try:
            return json.dumps(obj, ensure_ascii=False, allow_nan=False).encode("utf-8")
        except ValueError as exc:
            if _has_non_finite(obj):
                raise ValueError(
                    "send_object(codec='json') cannot send NaN or infinity: JSON has no "
                    "such numbers; check for them first (math.isfinite), or use "
                    "codec='pickle'") from None
            raise ValueError(f"send_object(codec='json') cannot send this: {exc}") from exc
        except (TypeError, RecursionError) as exc:
            raise TypeError(
                f"send_object(codec='json') cannot send {type(obj).__name__}: {exc}; "
                "send lists, dicts, str, int, float, bool and None (or use "
                "codec='pickle' for tuples, sets, bytes, complex)"
            ) from exc
    if codec == "pickle":
        try:
            return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            raise TypeError(
                f"send_object(codec='pickle') cannot pickle {type(obj).__name__}: {exc}"
            ) from exc
    raise ValueError(f"unknown codec {codec!r}: choose one of {CODECS}")


def _decode(payload: bytes, codec: str, trusted: bool, max_depth: int = JSON_MAX_DEPTH,
            pickle_limits: LimitsArg = None) -> Any:
    if codec == "json":
        text = payload.decode("utf-8")
        _check_json_depth(text, max_depth)
        return json.loads(text, parse_constant=_refuse_constant)
    if trusted:
        return pickle.loads(payload)
    return safe_loads(payload, limits=pickle_limits)


def _check_arguments(codec: str, pickle_limits: LimitsArg) -> PickleLimits:
    # Before the frame is read: a caller's mistake must not cost a frame.
    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec!r}: choose one of {CODECS}")
    return _resolve_limits(pickle_limits)


def send_object(sock: Any, obj: Any, /, *, codec: str = "json") -> None:
    """send_object(sock, obj, /, *, codec="json")

    Serialise obj and send it as one frame.  Raises TypeError (before
    anything is sent) when obj cannot be serialised with that codec, and
    ValueError for NaN or an infinity in JSON (JSON has no such numbers).
    """
    send_bytes(sock, _encode(obj, codec))


def read_object(
    sock: Any, /, *, codec: str = "json", max_size: Optional[int] = None, trusted: bool = False,
    max_depth: int = JSON_MAX_DEPTH, pickle_limits: LimitsArg = None,
) -> Any:
    """read_object(sock, /, *, codec="json", max_size=None, trusted=False,
    max_depth=100, pickle_limits=None)

    Receive one frame and deserialise it.  max_size=None means MAX_SIZE, or
    a Connection's own max_size.  A JSON frame that is not valid UTF-8 JSON,
    holds NaN or Infinity (not JSON), or nests deeper than max_depth raises
    ValueError.  With codec="pickle", only plain data is rebuilt unless
    trusted=True: anything else raises UnsafePickle and runs nothing; a
    malformed pickle raises pickle.UnpicklingError; one that would cost more
    than pickle_limits allow (a PickleLimits, a dict of the limits to
    change, or None for the defaults) raises PickleTooComplex.  Either way
    the frame was consumed, so the stream is still in sync.
    """
    pickle_limits = _check_arguments(codec, pickle_limits)
    return _decode(read_bytes(sock, max_size=max_size), codec, trusted, max_depth,
                   pickle_limits)
