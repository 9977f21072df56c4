"""The lesson's exercise, finished: a TCP server that returns the average of
a list of numbers.

Protocol (one request, one reply, as many times as the client likes):

* request: one JSON frame holding a list of numbers, e.g. ``[1, 2, 3.5]``
* reply:   one JSON frame, ``{"average": 2.1666666666666665}`` on success,
           ``{"error": "<what was wrong>"}`` otherwise.

A frame's payload is plain UTF-8 JSON, so a client built from the lesson's
hand-typed helpers talks to this server with ``send_string(sock,
json.dumps(numbers))`` and ``json.loads(read_string(sock))``.

Run it: ``python -m tcpframe serve average`` in one terminal and
``python -m tcpframe average 1 2 3`` in another.  ``handle`` serves one
client of the threaded tcpframe.server.Server; ``handle_async`` the same
for tcpframe.aio.start_server (what ``serve average`` runs).
"""

import json
import logging
import math
import socket
from typing import Any, Callable, Dict, Iterable, Optional, Tuple

from .connection import Connection
from ._tcpframe import read_bytes
from .errors import ConnectionClosed, FrameError
from .objects import _decode, read_object, send_object

__all__ = ["DEFAULT_PORT", "MAX_REQUEST", "AverageError", "answer", "compute", "handle", "handle_async",
           "error_reply", "average"]

log = logging.getLogger("tcpframe.average")

DEFAULT_PORT = 8888  # the lesson's port
MAX_REQUEST = 1 << 20  # a list of numbers needs no more; bounds memory per client


class AverageError(ValueError):
    """The server answered with an error reply; the message is its text."""


def _short(value: Any, limit: int = 60) -> str:
    """repr() cut to a size fit for an error reply (a request may be 1 MiB)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def compute(request: Any) -> Dict[str, Any]:
    """The reply to one request: {"average": x} or {"error": why}."""
    if not isinstance(request, list):
        return {"error": f"expected a list of numbers, got {type(request).__name__}"}
    if not request:
        return {"error": "cannot average an empty list"}
    for index, item in enumerate(request):
        # bool is an int in Python, but true/false are not numbers to a user.
        if isinstance(item, bool) or not isinstance(item, (int, float)):
            return {"error": f"item {index} is {_short(item)}, not a number"}
        if isinstance(item, float) and not math.isfinite(item):
            # JSON's 1e999 reads as inf: a number too large for a float.
            return {"error": f"item {index} is too large for a float (it reads as {item!r})"}
    n = len(request)
    try:
        # fsum: no rounding drift however long the list.
        return {"average": math.fsum(request) / n}
    except OverflowError:
        pass  # the sum overflows even where the average would not
    try:
        return {"average": math.fsum(x / n for x in request)}
    except OverflowError:
        return {"error": "the numbers are too large to average as floats"}


Report = Callable[[Tuple[Any, ...], Any, Dict[str, Any]], None]


def error_reply(reason: str) -> bytes:
    """The payload of an error reply: a server closing a client (a budget
    ran out, the server is full) says why in the protocol's own words."""
    return json.dumps({"error": reason}).encode("utf-8")


def answer(payload: bytes) -> Tuple[Any, Dict[str, Any]]:
    """(request, reply) for one request frame's payload.  The reply is always
    one that can be sent: an error reply names what was wrong (bad JSON, NaN,
    nesting deeper than JSON_MAX_DEPTH, a non-number, a number too large)."""
    try:
        request = _decode(payload, "json", False)
    except ValueError as exc:  # includes UnicodeDecodeError
        return None, {"error": f"not JSON: {exc}"}
    try:
        return request, compute(request)
    except Exception as exc:  # a bug of ours: the client still gets an answer
        log.exception("compute() failed")
        return request, {"error": f"the server could not average this ({type(exc).__name__})"}


def handle(
    conn: Connection, address: Tuple[Any, ...], *, report: Optional[Report] = None
) -> None:
    """Serve one client: read a request, send its reply, until it hangs up.

    report(address, request, reply), if given, is called before each reply
    to a whole request (the command line prints it).
    """
    while True:
        try:
            payload = read_bytes(conn, max_size=MAX_REQUEST)
        except ConnectionClosed as exc:
            if exc.expected is None:
                return  # hung up between requests: the normal end
            raise  # cut mid-request: the server logs it
        except FrameError as exc:
            # A bad header (or one over MAX_REQUEST): the stream is out of
            # sync, so say why and hang up.
            send_object(conn, {"error": f"bad frame: {exc}"})
            return
        request, reply = answer(payload)
        if report is not None:
            report(address, request, reply)
        send_object(conn, reply)


async def handle_async(stream: Any, *, report: Optional[Report] = None) -> None:
    """The same service as handle(), for tcpframe.aio.start_server: stream is
    a FrameStream (its server's max_size should be MAX_REQUEST)."""
    while True:
        try:
            payload = await stream.read_bytes()
        except ConnectionClosed as exc:
            if exc.expected is None:
                return
            raise
        except FrameError as exc:
            await stream.send_object({"error": f"bad frame: {exc}"})
            return
        request, reply = answer(payload)
        if report is not None:
            report(stream.peername, request, reply)
        await stream.send_object(reply)


def average(
    numbers: Iterable[float],
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    *,
    timeout: float = 10.0,
) -> float:
    """average(numbers, host="127.0.0.1", port=8888, *, timeout=10.0) -> float

    Ask the average server at (host, port).  Raises AverageError with the
    server's reason when it replies with an error, ConnectionRefusedError
    when nothing listens there, TransferTimeout after ``timeout`` seconds.
    """
    request = list(numbers)
    with socket.create_connection((host, port), timeout=timeout) as sock:
        send_object(sock, request)
        reply = read_object(sock, max_size=MAX_REQUEST)
    return reply_value(reply)


def reply_value(reply: Any) -> float:
    """reply_value(reply) -> float: the average in a decoded reply, or
    AverageError with the server's reason (or saying the reply is not one)."""
    if not isinstance(reply, dict) or not ("average" in reply or "error" in reply):
        raise AverageError(f"unexpected reply {json.dumps(reply)[:200]}")
    if "error" in reply:
        raise AverageError(reply["error"])
    return reply["average"]
