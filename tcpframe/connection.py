"""tcpframe.Connection: a socket plus a receive buffer in C.

The C type does the I/O; this subclass adds what is easier said in Python
(strings with an encoding, objects).  See ``help(tcpframe.Connection)``.
"""

from typing import Any, Optional

from . import _tcpframe
from .objects import JSON_MAX_DEPTH, LimitsArg
from .objects import read_object as _read_object
from .objects import send_object as _send_object

__all__ = ["Connection", "Decoder", "encode_frame"]

Decoder = _tcpframe.Decoder
encode_frame = _tcpframe.encode_frame


class Connection(_tcpframe.Connection):
    __doc__ = _tcpframe.Connection.__doc__
    __slots__ = ()

    def send_string(self, text: str, /, encoding: str = "utf-8") -> None:
        """send_string(text, /, encoding="utf-8"): text as one frame."""
        _tcpframe.send_string(self, text, encoding)

    def read_string(self, /, *, max_size: Optional[int] = None, encoding: str = "utf-8") -> str:
        """read_string(*, max_size=None, encoding="utf-8") -> str: one frame, decoded."""
        return _tcpframe.read_string(self, max_size=max_size, encoding=encoding)

    def send_object(self, obj: Any, /, *, codec: str = "json") -> None:
        """send_object(obj, /, *, codec="json"): see tcpframe.send_object."""
        _send_object(self, obj, codec=codec)

    def read_object(
        self, /, *, codec: str = "json", max_size: Optional[int] = None, trusted: bool = False,
        max_depth: int = JSON_MAX_DEPTH, pickle_limits: LimitsArg = None,
    ) -> Any:
        """read_object(*, codec="json", max_size=None, trusted=False, max_depth=100,
        pickle_limits=None): see tcpframe.read_object."""
        return _read_object(self, codec=codec, max_size=max_size, trusted=trusted,
                            max_depth=max_depth, pickle_limits=pickle_limits)

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"fd={self.fileno()}, buffered={self.buffered}"
        if self.write_buffer and not self.closed:
            state += f", unsent={self.unsent}"
        return f"<tcpframe.Connection {state}>"
