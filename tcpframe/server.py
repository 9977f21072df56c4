"""A TCP server for framed protocols: the lesson's bind/listen/accept, done right.

    from tcpframe.server import Server

    def handle(conn, address):          # a function of (Connection, address)
        for text in conn:               # each frame, until the client hangs up
            conn.send_bytes(text.upper())

    with Server(handle, port=8888) as server:   # serving in the background
        print("listening on", server.address)
        ...
    # leaving the block stops accepting, closes every client, joins every thread

Or ``Server(handle, port=8888).serve_forever()`` in the foreground: Ctrl-C
stops it cleanly.

A handler gets a :class:`tcpframe.Connection` (the socket is
``conn.socket``); the module's functions accept it too.  One thread per
client (the C core releases the GIL while it waits).  A
handler that raises, or a client that sends a bad frame, disconnects or goes
silent past ``client_timeout``, closes that client only; it is logged to the
``tcpframe.server`` logger and the server keeps serving.
"""

import errno
import logging
import selectors
import socket
import threading
from typing import Any, Callable, Dict, Optional, Tuple

from .connection import Connection
from ._listen import listening_socket
from ._ratelog import RateLimitedLog
from ._tcpframe import MAX_SIZE
from .errors import ConnectionClosed, FrameError

__all__ = ["Server", "Handler"]

log = logging.getLogger("tcpframe.server")

Handler = Callable[[Connection, Tuple[Any, ...]], None]

# accept() failures that mean "out of resources right now", not "stop".
_TRANSIENT_ACCEPT_ERRORS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


# Closing a socket with unread input sends RST, and an RST makes the peer
# drop what it had not read yet: the error reply to a bad request, say.  So
# send FIN first and read the peer's leftovers away, within bounds.
LINGER_SECONDS = 0.5
LINGER_BYTES = 1 << 16


def _lingering_close(conn: Connection) -> None:
    try:
        sock = conn.socket
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(LINGER_SECONDS)
        drained = 0
        while drained < LINGER_BYTES:
            chunk = sock.recv(LINGER_BYTES)
            if not chunk:
                break
            drained += len(chunk)
    except OSError:
        pass  # reset, timed out or already shut: nothing more to save
    finally:
        conn.close()


class Server:
    """Server(handler, host="127.0.0.1", port=0, *, client_timeout=None,
    max_clients=256, max_size=MAX_SIZE, backlog=128)

    Listen on (host, port) and run handler(conn, address) in a thread for
    each client, conn a Connection whose reads default to ``max_size``.  port=0 picks a free port: read it from ``address``.
    Address reuse is on, so a restart does not meet "Address already in
    use"; TCP_NODELAY is on for every client.  ``client_timeout`` (seconds)
    is each client socket's timeout, so a silent client is dropped.  Past
    ``max_clients`` at once, new connections are closed at once (logged).
    """

    def __init__(
        self,
        handler: Handler,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        client_timeout: Optional[float] = None,
        max_clients: int = 256,
        max_size: int = MAX_SIZE,
        backlog: int = 128,
    ) -> None:
        if not callable(handler):
            raise TypeError(f"Server needs a handler(conn, address) function, not "
                            f"{type(handler).__name__}")
        self._handler = handler
        self._max_size = max_size
        self._client_timeout = client_timeout
        self._max_clients = max_clients
        # SO_REUSEADDR is on (POSIX): restarts just work.  "::" is dual stack.
        self._listener = listening_socket(host, port, backlog)
        self._listener.setblocking(False)
        self._wake_r, self._wake_w = socket.socketpair()
        self._clients: Dict[Connection, threading.Thread] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._serving = False
        # What bad clients did: at most 10 lines of each kind per 10 s.
        self._client_log = RateLimitedLog(log)

    @property
    def address(self) -> Tuple[Any, ...]:
        """The (host, port) the server is bound to."""
        return self._listener.getsockname()

    @property
    def client_count(self) -> int:
        """How many clients are connected now."""
        with self._lock:
            return len(self._clients)

    def serve_forever(self) -> None:
        """Accept clients until shutdown() (or Ctrl-C in this thread)."""
        self._serving = True
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(self._listener, selectors.EVENT_READ)
                selector.register(self._wake_r, selectors.EVENT_READ)
                while not self._stopping.is_set():
                    for key, _ in selector.select():
                        if key.fileobj is self._listener:
                            self._accept()
        finally:
            self._close_everything()

    def start(self) -> "Server":
        """Serve in a background thread; returns self."""
        if self._thread is not None:
            raise RuntimeError("the server is already started")
        self._thread = threading.Thread(
            target=self.serve_forever, name=f"tcpframe-server-{self.address[1]}", daemon=True
        )
        self._thread.start()
        return self

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop accepting, close every client socket, join every thread.

        Safe to call more than once and from any thread.  Handlers blocked
        in a read wake with ConnectionClosed or OSError and end; one still
        running after ``timeout`` seconds is logged.
        """
        self._stopping.set()
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass  # already closed: already stopped
        if self._serving:
            if self._thread is not None and self._thread is not threading.current_thread():
                self._thread.join(timeout)
            self._stopped.wait(timeout)
        else:
            self._close_everything(timeout)

    def __enter__(self) -> "Server":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()

    # -- inside -----------------------------------------------------------

    def _accept(self) -> None:
        try:
            conn, address = self._listener.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        except OSError as exc:
            if exc.errno in _TRANSIENT_ACCEPT_ERRORS:
                log.error("cannot accept a client: %s; retrying shortly", exc)
                self._stopping.wait(0.1)
                return
            raise
        try:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.settimeout(self._client_timeout)
        except OSError as exc:  # reset before we got to it
            log.info("%s gone before it was served: %s", address, exc)
            conn.close()
            return
        client = Connection(conn, max_size=self._max_size)
        with self._lock:
            full = len(self._clients) >= self._max_clients
            if not full:
                thread = threading.Thread(
                    target=self._serve_client,
                    args=(client, address),
                    name=f"tcpframe-client-{address[1]}",
                    daemon=True,
                )
                self._clients[client] = thread
        if full:
            self._client_log.log(logging.WARNING, "refused", "%s refused: already serving max_clients=%d",
                           address, self._max_clients)
            client.close()
            return
        thread.start()

    def _serve_client(self, conn: Connection, address: Tuple[Any, ...]) -> None:
        try:
            self._handler(conn, address)
        except (ConnectionClosed, FrameError, OSError) as exc:
            if self._stopping.is_set():
                # We cut it off (shutdown): the client did nothing wrong.
                log.debug("%s closed by the shutdown: %s", address, exc)
            else:
                self._client_log.client_error(address, exc)
        except Exception:
            self._client_log.log(logging.ERROR, "handler failed",
                           "handler failed for %s; closing that client", address, exc_info=True)
        finally:
            with self._lock:
                self._clients.pop(conn, None)
            _lingering_close(conn)

    def _close_everything(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        self._listener.close()
        with self._lock:
            clients = list(self._clients.items())
        for conn, _ in clients:
            try:
                # Wakes a handler blocked in recv(); close() alone would not.
                conn.socket.shutdown(socket.SHUT_RDWR)
            except (OSError, ValueError):
                pass  # the client is already gone (or its Connection closed)
        for _, thread in clients:
            thread.join(timeout)
            if thread.is_alive():
                log.warning("%s still running %.0fs after shutdown", thread.name, timeout)
        self._wake_r.close()
        self._wake_w.close()
        self._stopped.set()
