"""Unpickling restricted to plain data, for pickles from a peer.

Unpickling runs code chosen by whoever made the pickle, and over a socket
that is whoever connects.  SafeUnpickler rebuilds plain data only; anything
else raises UnsafePickle before it can run.
"""

import io
import pickle
from typing import Any

__all__ = ["UnsafePickle", "SafeUnpickler", "safe_loads"]


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


def safe_loads(payload: bytes) -> Any:
    """Unpickle payload with SafeUnpickler: plain data, or UnsafePickle."""
    return SafeUnpickler(io.BytesIO(payload)).load()
