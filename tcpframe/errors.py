"""Exceptions raised by tcpframe.

Each one is also the built-in a user would reach for (``ConnectionError``,
``EOFError``, ``ValueError``, ``TimeoutError``), and each carries what was
transferred before it happened, so nothing received is lost silently.  They
pickle with their attributes, so they can cross process boundaries.
"""

import socket
from typing import Optional, Tuple

__all__ = ["ConnectionClosed", "FrameError", "FrameTooLarge", "TransferTimeout"]


class _Detailed:
    """Mixin: the message plus named attributes, kept through pickling."""

    _fields: Tuple[str, ...] = ()

    def __reduce__(self):
        values = tuple(getattr(self, name) for name in self._fields)
        return (type(self), (self.args[0],) + values)


class ConnectionClosed(_Detailed, ConnectionError, EOFError, RuntimeError):
    """The peer closed the connection before the data asked for arrived.

    ``partial``: the bytes of the current item (for a frame: the raw frame
    bytes, header included) received before the close.
    ``expected``: how many bytes the item needed, or ``None`` when the peer
    closed cleanly between frames, which is how a conversation normally ends.

    Also a ``RuntimeError``, so code written against the lesson's helpers
    (which raise ``RuntimeError("socket connection broken")``) keeps working.
    """

    _fields = ("partial", "expected")

    def __init__(self, message: str, partial: bytes = b"", expected: Optional[int] = None) -> None:
        super().__init__(message)
        self.partial = partial
        self.expected = expected


class FrameError(_Detailed, ValueError):
    """The peer sent a header that is not exactly 8 ASCII digits.

    ``header``: the offending bytes.  The stream is out of sync after this:
    close the connection.
    """

    _fields: Tuple[str, ...] = ("header",)

    def __init__(self, message: str, header: Optional[bytes] = None) -> None:
        super().__init__(message)
        self.header = header


class FrameTooLarge(FrameError):
    """A frame is larger than allowed.

    Raised on receive when the announced length exceeds ``max_size`` (before
    any payload byte is read or any memory is reserved for it), and on send
    when a payload exceeds ``MAX_SIZE`` (before any byte is sent).
    ``size``: the length; ``limit``: the bound it broke.
    """

    _fields = ("size", "limit", "header")

    def __init__(
        self, message: str, size: int, limit: int, header: Optional[bytes] = None
    ) -> None:
        super().__init__(message, header)
        self.size = size
        self.limit = limit


class TransferTimeout(_Detailed, socket.timeout):
    """The socket's timeout passed before the whole call completed.

    The timeout is one deadline for the whole call, not per system call.
    ``partial`` (receives): the bytes of the current item received so far.
    ``sent`` (sends): how many bytes of the current item were sent.
    ``expected``: the item's size when known.  Unless nothing was transferred,
    the stream is no longer on a frame boundary and the connection should be
    closed; the message says which.
    ``frames_sent`` (sends of several frames: ``Connection.send_many`` and
    anything that sends a Connection's write buffer): how many whole frames
    left, the ones that were waiting in the buffer first; else ``None``.
    What of a write buffer did not leave stays in it (``Connection.unsent``)
    and goes out with the next flush, so the stream is not cut.

    A Connection's buffered sends give the same two attributes, ``sent`` and
    ``frames_sent``, to any other exception that cuts them (an ``OSError``
    such as ``BrokenPipeError``, a signal handler's ``KeyboardInterrupt``).
    """

    _fields = ("partial", "sent", "expected", "frames_sent")

    def __init__(
        self,
        message: str,
        partial: Optional[bytes] = None,
        sent: Optional[int] = None,
        expected: Optional[int] = None,
        frames_sent: Optional[int] = None,
    ) -> None:
        super().__init__(message)
        self.partial = partial
        self.sent = sent
        self.expected = expected
        self.frames_sent = frames_sent
