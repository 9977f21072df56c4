"""Objects over frames: JSON by default, pickle restricted to plain data.

The payload of a JSON frame is the UTF-8 JSON text, so the other side may
be a hand-typed ``read_string`` followed by ``json.loads``.

Unpickling runs code chosen by whoever made the pickle, and over a socket
that is whoever connects.  So ``codec="pickle"`` unpickles through
:class:`SafeUnpickler`, which rebuilds plain data only; anything else raises
:class:`UnsafePickle` before it can run.  Full pickle needs ``trusted=True``.
"""

import json
import pickle
from typing import Any, Optional

from ._tcpframe import read_bytes, send_bytes
from .safe_pickle import SafeUnpickler, UnsafePickle, safe_loads

__all__ = ["send_object", "read_object", "SafeUnpickler", "UnsafePickle", "CODECS"]

CODECS = ("json", "pickle")


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
    return safe_loads(payload)


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
