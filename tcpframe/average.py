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
import math
import socket
from typing import Any, Callable, Dict, Iterable, Optional, Tuple

from .connection import Connection
from .errors import ConnectionClosed, FrameError
from .objects import read_object, send_object

__all__ = ["DEFAULT_PORT", "MAX_REQUEST", "AverageError", "compute", "handle", "handle_async",
           "error_reply", "average"]

DEFAULT_PORT = 8888  # the lesson's port
MAX_REQUEST = 1 << 20  # a list of numbers needs no more; bounds memory per client


class AverageError(ValueError):
    """The server answered with an error reply; the message is its text."""


def compute(request: Any) -> Dict[str, Any]:
    """The reply to one request: {"average": x} or {"error": why}."""
    if not isinstance(request, list):
        return {"error": f"expected a list of numbers, got {type(request).__name__}"}
    if not request:
        return {"error": "cannot average an empty list"}
    for index, item in enumerate(request):
        # bool is an int in Python, but true/false are not numbers to a user.
        if isinstance(item, bool) or not isinstance(item, (int, float)):
            return {"error": f"item {index} is {item!r}, not a number"}
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


def handle(
    conn: Connection, address: Tuple[Any, ...], *, report: Optional[Report] = None
) -> None:
    """Serve one client: read a request, send its reply, until it hangs up.

    report(address, request, reply), if given, is called before each reply
    to a whole request (the command line prints it).
    """
    while True:
        try:
            request = read_object(conn, max_size=MAX_REQUEST)
        except ConnectionClosed as exc:
            if exc.expected is None:
                return  # hung up between requests: the normal end
            raise  # cut mid-request: the server logs it
        except FrameError as exc:
            # A bad header (or one over MAX_REQUEST): the stream is out of
            # sync, so say why and hang up.
            send_object(conn, {"error": f"bad frame: {exc}"})
            return
        except ValueError as exc:
            # A whole frame that is not JSON: the stream is still in sync.
            send_object(conn, {"error": f"not JSON: {exc}"})
            continue
        reply = compute(request)
        if report is not None:
            report(address, request, reply)
        send_object(conn, reply)


async def handle_async(stream: Any, *, report: Optional[Report] = None) -> None:
    """The same service as handle(), for tcpframe.aio.start_server: stream is
    a FrameStream (its server's max_size should be MAX_REQUEST)."""
    while True:
        try:
            request = await stream.read_object()
        except ConnectionClosed as exc:
            if exc.expected is None:
                return
            raise
        except FrameError as exc:
            await stream.send_object({"error": f"bad frame: {exc}"})
            return
        except ValueError as exc:
            await stream.send_object({"error": f"not JSON: {exc}"})
            continue
        reply = compute(request)
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
    if not isinstance(reply, dict) or not ("average" in reply or "error" in reply):
        raise AverageError(f"unexpected reply {json.dumps(reply)[:200]}")
    if "error" in reply:
        raise AverageError(reply["error"])
    return reply["average"]
