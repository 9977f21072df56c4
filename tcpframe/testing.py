"""tcpframe.testing: pytest fixtures and hostile peers for socket exercises.

Load it in a test file or conftest.py with ``pytest_plugins = ["tcpframe.testing"]``,
or on the command line with ``pytest -p tcpframe.testing``.  It is not
loaded automatically when tcpframe is installed: fixture names such as
``tcp_pair`` and ``free_port`` are common, and a library should not put
them into every project's test run uninvited.

Fixtures:
  tcp_pair     a connected (client, server) pair of loopback TCP sockets
  free_port    a port no one else will take between now and your bind()
  run_server   start a student's server, wait until it accepts, stop it after

Hostile peers, one line each in a test:
  trickle(sock, data, chunk=1, delay=0.01)   a message in pieces
  coalesce(sock, frames)                     several frames in one send
  half_close(sock)                           "I am done sending" (FIN)
  reset(sock)                                vanish with RST mid-conversation
  slow_reader(sock, n, chunk=1, delay=0.01)  a reader that drains slowly

Grader: check_average_server(address) for the lesson's exercise.
"""

import json
import os
import random
import socket
import struct
import subprocess
import sys
import threading
import time
import traceback
from typing import Any, Callable, Iterable, List, Optional, Sequence, Tuple, Union

import pytest

from ._tcpframe import encode_frame, read_bytes, send_bytes
from .errors import ConnectionClosed, FrameError, TransferTimeout

__all__ = [
    "trickle", "coalesce", "half_close", "reset", "slow_reader", "connect",
    "pick_free_port", "ServerProcess", "GradeReport", "check_average_server",
]

Address = Tuple[str, int]

# ---------------------------------------------------------------- peers


def connect(address: Address, timeout: float = 5.0, rcvbuf: Optional[int] = None) -> socket.socket:
    """A client socket to address, with a timeout (and a small receive buffer if asked)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(timeout)
        sock.connect(address)
    except BaseException:
        sock.close()
        raise
    return sock


def trickle(sock: socket.socket, data: bytes, chunk: int = 1, delay: float = 0.01) -> None:
    """Send data `chunk` bytes at a time, pausing `delay` s between pieces,
    with TCP_NODELAY so each piece really leaves alone."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for i in range(0, len(data), chunk):
        sock.sendall(data[i : i + chunk])
        if i + chunk < len(data):
            time.sleep(delay)


def coalesce(sock: socket.socket, frames: Iterable[bytes]) -> None:
    """Send several payloads, each framed, in one send: they arrive together."""
    sock.sendall(b"".join(encode_frame(f) for f in frames))


def half_close(sock: socket.socket) -> None:
    """Shut down our sending side: the peer reads EOF but may still reply."""
    sock.shutdown(socket.SHUT_WR)


def reset(sock: socket.socket) -> None:
    """Close with RST instead of FIN (SO_LINGER 0): an abrupt disconnect."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def slow_reader(sock: socket.socket, n: int, chunk: int = 1, delay: float = 0.01) -> bytes:
    """Read n bytes, `chunk` at a time with pauses: a peer whose window is
    nearly always full.  Returns what was read (less if the peer closed)."""
    got = bytearray()
    while len(got) < n:
        piece = sock.recv(min(chunk, n - len(got)))
        if not piece:
            break
        got += piece
        time.sleep(delay)
    return bytes(got)


# ------------------------------------------------------------- free ports

_handed_out = set()
_ports_lock = threading.Lock()


def _ephemeral_range() -> Tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(x) for x in f.read().split())
            return low, high
    except (OSError, ValueError):
        return 32768, 60999


def pick_free_port(host: str = "127.0.0.1") -> int:
    """A port free now and safe to bind later.

    The usual trick -- bind port 0, read the port, close -- races: the kernel
    may hand that port to the next port-0 bind or outgoing connection before
    the server binds it.  Ports outside the kernel's ephemeral range are
    never handed out that way, so picking one there (checked free by binding
    it, and never given twice by this process) leaves no one to race with.
    """
    low, high = _ephemeral_range()
    candidates = [p for p in range(20000, 32768) if not low <= p <= high] or list(range(1024, low))
    rng = random.Random(os.getpid() ^ time.monotonic_ns())
    for _ in range(200):
        port = rng.choice(candidates)
        with _ports_lock:
            if port in _handed_out:
                continue
        with socket.socket() as probe:
            try:
                probe.bind((host, port))
            except OSError:
                continue
        with _ports_lock:
            _handed_out.add(port)
        return port
    raise RuntimeError("no free port found outside the ephemeral range")


# ----------------------------------------------------------- run_server


def _accepting(address: Address) -> bool:
    try:
        with socket.create_connection(address, timeout=0.5):
            return True
    except OSError:
        return False


def _listening(address: Address) -> Optional[bool]:
    """Is a socket in LISTEN state on this port?  Read from /proc/net/tcp*
    (Linux), so that asking costs the server nothing -- connecting to find
    out would use up the accept() of a server that takes one client.
    None where /proc cannot tell."""
    seen = False
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        seen = True
        for row in rows:
            fields = row.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == address[1]:
                return True
    return False if seen else None


def _serving(address: Address) -> bool:
    listening = _listening(address)
    return _accepting(address) if listening is None else listening


def _wait_accepting(address: Address, timeout: float, alive: Callable[[], bool]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _serving(address):
            return
        if not alive():
            return  # the caller reports the crash
        time.sleep(0.05)
    raise TimeoutError(
        f"the server never accepted a connection on {address[0]}:{address[1]} within "
        f"{timeout:.0f} s: does it bind that port and call listen()?"
    )


class ServerProcess:
    """A student's server as a subprocess: a script path, or ["-m", "module"]."""

    def __init__(self, command: Sequence[str], address: Address) -> None:
        self.address = address
        self.command = list(command)
        self.proc = subprocess.Popen(
            [sys.executable, "-u", *self.command],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.stdout = self.stderr = ""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float) -> List[str]:
        """Ctrl-C it; returns the problems seen (empty when all was well).

        Exiting on its own with status 0 is fine (a server may be meant to
        end); a non-zero status before Ctrl-C is a crash; after Ctrl-C any
        exit is fine (an unhandled KeyboardInterrupt exits with status 1)."""
        if not self.alive():
            self.stdout, self.stderr = self.proc.communicate()
            if self.proc.returncode != 0:
                return [f"the server crashed: it exited with status {self.proc.returncode}"]
            return []
        problems = []
        self.proc.send_signal(2)  # SIGINT, what Ctrl-C sends
        try:
            self.stdout, self.stderr = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.stdout, self.stderr = self.proc.communicate()
            problems.append(f"the server did not stop within {timeout:.0f} s of Ctrl-C (SIGINT)")
        return problems


def _substitute(args: Sequence[Any], port: int) -> List[Any]:
    """"{port}" alone becomes the port number (an int, for a function);
    inside a longer string, its digits ("--port={port}")."""
    return [port if a == "{port}" else a.replace("{port}", str(port)) if isinstance(a, str) else a
            for a in args]


@pytest.fixture
def tcp_pair():
    """A connected (client, server) pair of loopback TCP sockets (5 s timeouts)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = connect(listener.getsockname())
        server, _ = listener.accept()
    server.settimeout(5.0)
    try:
        yield client, server
    finally:
        client.close()
        server.close()


@pytest.fixture
def free_port() -> int:
    """A free loopback port, safe from the pick-then-bind race (see pick_free_port)."""
    return pick_free_port()


@pytest.fixture
def run_server():
    """Start a student's server, wait until it accepts, stop and check it after.

        address = run_server("server.py", "--port", "{port}")     # a script
        address = run_server(["-m", "student.server"], port=8888)  # a module
        address = run_server(serve, "{port}")                      # a function

    "{port}" in the arguments becomes a free port (or give ``port=``).  A
    script or module runs in a subprocess; at teardown it gets Ctrl-C and
    must exit within ``stop_timeout``.  A function runs in a daemon thread;
    if it raises, the test fails with its traceback, and if it returns, its
    listening socket must be closed.  Every wait is bounded, so a broken
    server fails the test instead of hanging the run.
    """
    started = []

    def start(target: Union[str, Sequence[str], Callable[..., Any]], *args: Any,
              port: Optional[int] = None, host: str = "127.0.0.1",
              ready_timeout: float = 10.0, stop_timeout: float = 5.0) -> Address:
        port = port if port is not None else pick_free_port(host)
        address = (host, port)
        args = _substitute(args, port)
        if callable(target):
            record = {"error": None}

            def run() -> None:
                try:
                    target(*args)
                except BaseException:
                    record["error"] = traceback.format_exc()

            thread = threading.Thread(target=run, daemon=True, name="student-server")
            thread.start()
            started.append(("thread", thread, record, address))
            alive = thread.is_alive
        else:
            command = [target] if isinstance(target, str) else list(target)
            server = ServerProcess([*command, *map(str, args)], address)
            started.append(("process", server, stop_timeout, address))
            alive = server.alive
        _wait_accepting(address, ready_timeout, alive)
        if not alive():
            kind, obj, extra, _ = started.pop()
            if kind == "process":
                obj.stop(stop_timeout)
                pytest.fail(f"the server exited before accepting a connection (status "
                            f"{obj.proc.returncode})\n--- its stderr ---\n{obj.stderr}",
                            pytrace=False)
            pytest.fail(f"the server function ended before accepting a connection:\n"
                        f"{extra['error'] or 'it returned'}", pytrace=False)
        return address

    yield start

    failures = []
    for kind, obj, extra, address in started:
        if kind == "process":
            problems = obj.stop(extra)
            if problems:
                failures.append("; ".join(problems) + f"\n--- its stderr ---\n{obj.stderr}")
        else:
            if extra["error"]:
                failures.append(f"the server function raised:\n{extra['error']}")
            elif not obj.is_alive() and _serving(address):
                failures.append(
                    f"the server function returned but {address[0]}:{address[1]} still "
                    "accepts connections: it leaked its listening socket (close it, or "
                    "use `with socket.socket(...) as s:`)"
                )
    if failures:
        pytest.fail("\n\n".join(failures), pytrace=False)


# ---------------------------------------------------------------- grader


class GradeReport:
    """The outcome of each check, with the mistake named in the lesson's words."""

    def __init__(self, address: Address) -> None:
        self.address = address
        self.results: List[Tuple[str, bool, str]] = []

    @property
    def passed(self) -> bool:
        return all(ok for _, ok, _ in self.results)

    @property
    def failed(self) -> List[str]:
        return [name for name, ok, _ in self.results if not ok]

    def __str__(self) -> str:
        lines = [f"average server at {self.address[0]}:{self.address[1]}:"]
        for name, ok, message in self.results:
            lines.append(f"  {'PASS' if ok else 'FAIL'}  {name}" + ("" if ok else f": {message}"))
        return "\n".join(lines)


REFUSED = ("connection refused: the server no longer accepts connections -- it served "
           "a client and stopped (a single accept() call?): accept in a loop")


def _reply_number(reply: Any) -> Optional[float]:
    if isinstance(reply, dict):
        reply = reply.get("average")
    if isinstance(reply, bool) or not isinstance(reply, (int, float)):
        return None
    return float(reply)


def _ask(address: Address, numbers: Any, timeout: float) -> Any:
    with connect(address, timeout) as sock:
        send_bytes(sock, json.dumps(numbers).encode())
        return json.loads(read_bytes(sock, max_size=1 << 20))


def check_average_server(address: Address, *, timeout: float = 5.0,
                         raise_on_failure: bool = True) -> GradeReport:
    """Grade a server for the lesson's exercise at address.

    The protocol graded: a request is one frame (8 ASCII digits of length,
    then the bytes) holding a JSON list of numbers; the reply is one frame
    holding the average as a JSON number, or ``{"average": x}``; a bad
    request gets any other JSON reply (an error), and the server keeps
    serving.  Returns a GradeReport; raises AssertionError carrying it when
    a check fails (unless raise_on_failure=False).
    """
    report = GradeReport(address)

    def check(name: str, mistake: str, body: Callable[[], Optional[str]]) -> None:
        try:
            problem = body()
        except (ConnectionClosed, ConnectionError, socket.timeout, TransferTimeout,
                FrameError, ValueError, OSError) as exc:
            if isinstance(exc, ConnectionRefusedError) or not _serving(address):
                # Not this check's fault: the server has stopped listening.
                report.results.append((name, False, REFUSED))
                return
            problem = f"{type(exc).__name__}: {exc}"
        report.results.append((name, problem is None,
                               "" if problem is None else f"{mistake} ({problem})"))

    def expect(numbers: List[float], want: float) -> Callable[[], Optional[str]]:
        def body() -> Optional[str]:
            got = _reply_number(_ask(address, numbers, timeout))
            return None if got is not None and abs(got - want) < 1e-9 else f"got {got!r}, want {want}"
        return body

    def still_serving() -> Optional[str]:
        got = _reply_number(_ask(address, [2, 4], timeout))
        return None if got == 3.0 else f"a good request afterwards got {got!r}"

    def error_reply(request: Any) -> Callable[[], Optional[str]]:
        def body() -> Optional[str]:
            reply = _ask(address, request, timeout)
            if _reply_number(reply) is not None:
                return f"it replied {reply!r} as if the request were fine"
            return still_serving()
        return body

    def trickled() -> Optional[str]:
        with connect(address, timeout) as sock:
            trickle(sock, encode_frame(b"[10, 20, 30]"), chunk=1, delay=0.01)
            got = _reply_number(json.loads(read_bytes(sock)))
        return None if got == 20.0 else f"got {got!r}"

    def two_on_one_connection() -> Optional[str]:
        with connect(address, timeout) as sock:
            answers = []
            for request in ([1, 3], [5, 7]):
                send_bytes(sock, json.dumps(request).encode())
                answers.append(_reply_number(json.loads(read_bytes(sock))))
        return None if answers == [2.0, 6.0] else f"got {answers}"

    def two_in_one_segment() -> Optional[str]:
        with connect(address, timeout) as sock:
            coalesce(sock, [b"[1, 1]", b"[9, 11]"])
            answers = [_reply_number(json.loads(read_bytes(sock))) for _ in range(2)]
        return None if answers == [1.0, 10.0] else f"got {answers}"

    def reply_in_one_piece() -> Optional[str]:
        # A reply sent as header, then body, in two send() calls leaves the
        # body waiting on Nagle's algorithm: the client first sees the header
        # alone.  One send of header + body arrives whole.
        with connect(address, timeout) as sock:
            for _ in range(3):
                send_bytes(sock, b"[1, 2]")
                first = sock.recv(65536)
                whole = first[:8].isdigit() and len(first) == 8 + int(first[:8])
                if not whole:
                    return f"the client's first recv() got only {first!r}"
        return None

    def many_clients() -> Optional[str]:
        results: List[Optional[float]] = [None] * 20
        errors: List[str] = []
        barrier = threading.Barrier(20)

        def one(i: int) -> None:
            try:
                with connect(address, timeout) as sock:
                    barrier.wait(timeout)
                    send_bytes(sock, json.dumps([i, i + 2]).encode())
                    results[i] = _reply_number(json.loads(read_bytes(sock)))
            except Exception as exc:  # reported below
                errors.append(f"{type(exc).__name__}: {exc}")

        # A client that connects and says nothing: a server that serves one
        # client at a time is stuck on it, and the 20 below starve.
        with connect(address, timeout):
            threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(20)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout * 3)
        served = sum(1 for i, r in enumerate(results) if r == i + 1.0)
        return None if served == 20 else f"{served} of 20 served" + (f"; {errors[0]}" if errors else "")

    def disconnect_mid_frame() -> Optional[str]:
        with connect(address, timeout) as sock:
            sock.sendall(b"00000050[1, 2")
        time.sleep(0.1)
        return still_serving()

    check("a list of numbers", "the server does not return the average of [1, 2, 3, 4]",
          expect([1, 2, 3, 4], 2.5))
    check("floats", "the server mishandles floats", expect([1.5, 2.5, -1.0], 1.0))
    check("empty list", "the server crashed or replied a number for an empty list "
          "(it cannot be averaged: reply an error and keep serving)", error_reply([]))
    check("wrong types", "the server crashed or replied a number for [\"a\", 1] "
          "(reply an error and keep serving)", error_reply(["a", 1]))
    check("trickled request", "the server assumed one recv() returns one whole message: "
          "a message may arrive in pieces, so read exactly the 8 header bytes, then "
          "exactly that many bytes (receive_all_bytes)", trickled)
    check("two requests on one connection", "the server answers only one request per "
          "connection: loop, reading the next message, until the client closes",
          two_on_one_connection)
    check("two requests in one segment", "the server read more than one message in one "
          "recv() and lost the second: read exactly the header, then exactly the body",
          two_in_one_segment)
    check("reply sent whole", "the server sends the reply's header and body in separate "
          "send() calls (or the body with one send() that may send only part of it): "
          "send header + body together with sendall()/send_all_bytes, or the reply "
          "waits on Nagle's algorithm and may arrive cut short", reply_in_one_piece)
    check("20 clients at once", "the server serves one client at a time, or only one client "
          "(listen(1) and a single accept()): accept in a loop and serve each client in "
          "its own thread", many_clients)
    check("client disconnects mid-message", "the server stopped serving after a client "
          "disconnected in the middle of a message: treat a closed connection as the end "
          "of that client, not of the server", disconnect_mid_frame)
    if raise_on_failure and not report.passed:
        raise AssertionError(str(report))
    return report
