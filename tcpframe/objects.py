"""Objects over frames: JSON by default, pickle restricted to plain data.

The payload of a JSON frame is the UTF-8 JSON text, so the other side may
be a hand-typed ``read_string`` followed by ``json.loads``.

Unpickling runs code chosen by whoever made the pickle, and over a socket
that is whoever connects.  So ``codec="pickle"`` unpickles through
:class:`SafeUnpickler`, which rebuilds plain data only; anything else raises
:class:`UnsafePickle` before it can run.  Full pickle needs ``trusted=True``.
"""

import io
import json
import pickle
from typing import Any, Optional

from ._tcpframe import read_bytes, send_bytes

__all__ = ["send_object", "read_object", "SafeUnpickler", "UnsafePickle", "CODECS"]

CODECS = ("json", "pickle")


class UnsafePickle(pickle.UnpicklingError):
    """A pickle asked for something other than plain data; nothing was run.

    ``global_name``: the ``module.name`` it asked for.
    """

    def __init__(self, global_name: str) -> None:
        super().__init__(
            f"refused to unpickle {global_name!r}: read_object(codec='pickle') "
            "rebuilds only plain data (None, bool, int, float, complex, str, "
            "bytes, bytearray, list, tuple, dict, set, frozenset); pass "
            "trusted=True only if you trust the peer with your process"
        )
        self.global_name = global_name

    def __reduce__(self):
        return (type(self), (self.global_name,))


def _bytearray(*args):
    # bytearray(n) would allocate n bytes chosen by the peer: allow only the
    # forms pickle itself uses, a bytes or str source.
    if not args or not isinstance(args[0], (bytes, str)):
        raise UnsafePickle("builtins.bytearray with a size")
    return bytearray(*args)


def _latin1_bytes(text, encoding="latin1"):
    # Protocols 0-2 spell bytes as _codecs.encode(str, "latin1"); no other
    # codec is plain data.
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickle("_codecs.encode with another codec")
    return text.encode("latin1")


# The plain types that older pickle protocols reach through a global rather
# than an opcode.  Everything else -- os.system, any class -- is refused.
_PLAIN_GLOBALS = {
    ("builtins", "complex"): complex,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "bytearray"): _bytearray,
    ("_codecs", "encode"): _latin1_bytes,
}
# Python 2 names, which protocols 0-2 use.
_PLAIN_GLOBALS.update({("__builtin__", n): f for (m, n), f in list(_PLAIN_GLOBALS.items())
                       if m == "builtins"})


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that rebuilds plain data and refuses every other global."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _PLAIN_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickle(f"{module}.{name}") from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickle("persistent id")


def _encode(obj: Any, codec: str) -> bytes:
    if codec == "json":
        try:
            return json.dumps(obj, ensure_ascii=False, allow_nan=False).encode("utf-8")
        except (TypeError, ValueError) as exc:
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


def _decode(payload: bytes, codec: str, trusted: bool) -> Any:
    if codec == "json":
        return json.loads(payload.decode("utf-8"))
    if trusted:
        return pickle.loads(payload)
    return SafeUnpickler(io.BytesIO(payload)).load()


def send_object(sock: Any, obj: Any, /, *, codec: str = "json") -> None:
    """send_object(sock, obj, /, *, codec="json")

    Serialise obj and send it as one frame.  Raises TypeError (before
    anything is sent) when obj cannot be serialised with that codec.
    """
    send_bytes(sock, _encode(obj, codec))


def read_object(
    sock: Any, /, *, codec: str = "json", max_size: Optional[int] = None, trusted: bool = False
) -> Any:
    """read_object(sock, /, *, codec="json", max_size=None, trusted=False)

    Receive one frame and deserialise it.  max_size=None means MAX_SIZE, or
    a Connection's own max_size.  A JSON frame that is not valid
    UTF-8 JSON raises ValueError; the frame was consumed, so the stream is
    still in sync.  With codec="pickle", only plain data is rebuilt unless
    trusted=True; anything else raises UnsafePickle and runs nothing.
    """
    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec!r}: choose one of {CODECS}")
    return _decode(read_bytes(sock, max_size=max_size), codec, trusted)
