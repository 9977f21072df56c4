"""tcpframe: fast, correct TCP message framing, with its core in C.

The "TCP with Python" lesson's helpers, done right:

    import socket, tcpframe
    sock = socket.create_connection(("127.0.0.1", 8888))
    tcpframe.send_string(sock, "Hello World")   # 8 ASCII digits, then the bytes
    reply = tcpframe.read_string(sock)

Byte loops: send_all, receive_all, receive_into (lesson names send_all_bytes,
receive_all_bytes, read_all_bytes are aliases).  Frames: send_bytes,
read_bytes, send_string, read_string, encode_header, decode_header.
Buffered, batched: Connection (and the sans-IO Decoder, encode_frame,
encode_frames).  asyncio: tcpframe.aio.
Objects: send_object, read_object (JSON, or pickle restricted to plain data).
Errors: ConnectionClosed, FrameError, FrameTooLarge, TransferTimeout,
UnsafePickle, PickleTooComplex (past PickleLimits).  A server: tcpframe.server.Server.  The lesson's exercise:
tcpframe.average.  Command line: python -m tcpframe --help.
"""

__version__ = "0.1.0"

from .errors import ConnectionClosed, FrameError, FrameTooLarge, TransferTimeout

try:
    from ._tcpframe import (
        HEADER_SIZE,
        MAX_SIZE,
        decode_header,
        encode_frames,
        encode_header,
        read_bytes,
        read_string,
        receive_all,
        receive_into,
        send_all,
        send_bytes,
        send_string,
    )
except ImportError as exc:  # pragma: no cover - the message is the point
    raise ImportError(
        f"tcpframe's C extension is not built next to {__file__!r}. "
        "From a source checkout run `pip install -e .` (it compiles the "
        "extension into the tree); elsewhere reinstall from a checkout or a wheel "
        "(`pip install path/to/tcpframe`: it is not on the package index yet)."
    ) from exc

from .objects import (  # noqa: E402
    PickleLimits, PickleTooComplex, SafeUnpickler, UnsafePickle, read_object, send_object,
)
from .connection import Connection, Decoder, encode_frame  # noqa: E402

# The lesson's names for the same functions.
send_all_bytes = send_all
receive_all_bytes = receive_all
read_all_bytes = receive_all

__all__ = [
    "HEADER_SIZE",
    "MAX_SIZE",
    "Connection",
    "ConnectionClosed",
    "Decoder",
    "FrameError",
    "FrameTooLarge",
    "PickleLimits",
    "PickleTooComplex",
    "SafeUnpickler",
    "TransferTimeout",
    "UnsafePickle",
    "decode_header",
    "encode_frame",
    "encode_frames",
    "encode_header",
    "read_all_bytes",
    "read_bytes",
    "read_object",
    "read_string",
    "receive_all",
    "receive_all_bytes",
    "receive_into",
    "send_all",
    "send_all_bytes",
    "send_bytes",
    "send_object",
    "send_string",
]
