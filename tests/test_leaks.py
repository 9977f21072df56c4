"""Every public function, success and error paths, ~100k calls each: memory
traced by Python (tracemalloc), live objects (gc) and the process's RSS must
not grow.  (A debug build's sys.gettotalrefcount is used when there is one.)"""
import gc
import os
import socket
import sys
import tracemalloc

import pytest

import tcpframe
from tcpframe import Connection, Decoder

N = int(os.environ.get("TCPFRAME_LEAK_ITERATIONS", "100000"))
SANITIZED = os.environ.get("TCPFRAME_EXPECT_SANITIZED") == "1"


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Wrapped:
    """Drives the method path (what an SSLSocket takes)."""

    def __init__(self, sock):
        self.sock = sock

    def recv_into(self, buffer):
        return self.sock.recv_into(buffer)

    def sendall(self, data):
        self.sock.sendall(data)


def expect(exc_type, func, *args, **kwargs):
    try:
        func(*args, **kwargs)
    except exc_type:
        return
    raise AssertionError(f"{func} did not raise {exc_type}")


@pytest.fixture(scope="module")
def pairs():
    a, b = socket.socketpair()
    c, d = socket.socketpair()
    closed_reader, closer = socket.socketpair()
    closer.close()
    empty_reader, keep = socket.socketpair()
    empty_reader.setblocking(False)
    ca, cb = Connection(c), Connection(d)
    # Connections holding half a frame: every read fails the same way, with
    # a new, non-empty .partial each time (the bytes stay buffered).
    half_timeout_r, half_timeout_w = socket.socketpair()
    half_timeout_w.sendall(b"00000010abc")
    half_timeout_r.setblocking(False)
    half_closed_r, half_closed_w = socket.socketpair()
    half_closed_w.sendall(b"00000010abc")
    half_closed_w.close()
    stuck, cut = Connection(half_timeout_r), Connection(half_closed_r)
    e, f = socket.socketpair()
    wa, wb = Connection(e, write_buffer=4096), Connection(f, write_buffer=4096)
    # A write buffer that cannot be flushed: the peer's socket is full and
    # never read, so every flush fails, with .sent and .frames_sent.
    full_w, full_r = socket.socketpair()
    full_w.setblocking(False)
    try:
        while True:
            full_w.send(bytes(65536))
    except BlockingIOError:
        pass
    unflushable = Connection(full_w, write_buffer=64)
    unflushable.send_bytes(b"waits")
    yield {"a": a, "b": b, "ca": ca, "cb": cb, "closed": closed_reader, "empty": empty_reader,
           "stuck": stuck, "cut": cut, "wa": wa, "wb": wb, "unflushable": unflushable}
    for s in (a, b, closed_reader, empty_reader, keep, half_timeout_w):
        s.close()
    for conn in (ca, cb, stuck, cut, wa, wb):
        conn.close()
    expect(tcpframe.TransferTimeout, unflushable.close)
    full_r.close()


def scenarios(p):
    a, b, ca, cb = p["a"], p["b"], p["ca"], p["cb"]
    buf = bytearray(5)
    wa, wb = Wrapped(a), Wrapped(b)
    decoder = Decoder(max_size=4)
    frames = [b"x", b"yy", b"zzz"]
    return {
        "send_all+receive_all": lambda: (tcpframe.send_all(a, b"hello"), tcpframe.receive_all(b, 5)),
        "receive_into": lambda: (tcpframe.send_all(a, b"hello"), tcpframe.receive_into(b, buf)),
        "send_bytes+read_bytes": lambda: (tcpframe.send_bytes(a, b"abc"), tcpframe.read_bytes(b)),
        "strings": lambda: (tcpframe.send_string(a, "é"), tcpframe.read_string(b)),
        "objects json": lambda: (tcpframe.send_object(a, [1, "x"]), tcpframe.read_object(b)),
        "objects pickle": lambda: (tcpframe.send_object(a, {1: (2,)}, codec="pickle"),
                                   tcpframe.read_object(b, codec="pickle")),
        "unsafe pickle refused": lambda: (tcpframe.send_bytes(a, b"cos\nsystem\n(S'x'\ntR."),
                                          expect(tcpframe.UnsafePickle, tcpframe.read_object, b,
                                                 codec="pickle")),
        "header codec": lambda: tcpframe.decode_header(tcpframe.encode_header(123)),
        "bad header": lambda: expect(tcpframe.FrameError, tcpframe.decode_header, b"+0000001"),
        "too large to send": lambda: expect(tcpframe.FrameTooLarge, tcpframe.encode_header, 10**8),
        "peer closed": lambda: expect(tcpframe.ConnectionClosed, tcpframe.read_bytes, p["closed"]),
        "timeout (non-blocking)": lambda: expect(tcpframe.TransferTimeout, tcpframe.read_bytes,
                                                 p["empty"]),
        "caller mistakes": lambda: (expect(TypeError, tcpframe.receive_into, b, b"ro"),
                                    expect(ValueError, tcpframe.read_bytes, b, max_size=-1),
                                    expect(TypeError, tcpframe.send_string, a, b"x")),
        "wrapped socket": lambda: (tcpframe.send_bytes(wa, b"w"), tcpframe.read_bytes(wb)),
        "Connection": lambda: (ca.send_bytes(b"c"), cb.read_bytes(), ca.send_many(frames),
                               [cb.read_bytes() for _ in frames]),
        "Decoder+encode_frame": lambda: decoder.feed(tcpframe.encode_frame(b"dd")),
        "Decoder too large": lambda: expect(tcpframe.FrameTooLarge, Decoder(max_size=1).feed,
                                            b"00000002"),
        "timeout mid-frame": lambda: expect(tcpframe.TransferTimeout, p["stuck"].read_bytes),
        "closed mid-frame": lambda: expect(tcpframe.ConnectionClosed, p["cut"].read_bytes),
        "big payload refcount": lambda: (tcpframe.send_bytes(a, PAYLOAD),
                                         tcpframe.receive_into(b, RECEIVED)),
        "write buffer": lambda: write_buffer_round(p["wa"], p["wb"], frames),
        "write buffer flush fails": lambda: expect(tcpframe.TransferTimeout,
                                                   p["unflushable"].flush),
    }


PAYLOAD = b"p" * 1000
RECEIVED = bytearray(1008)


def write_buffer_round(wa, wb, frames):
    """Every path of a write buffer: frames joining it, a frame too large
    for it going out with what waits, send_all after it, flush(), and a
    read that sends what waits first."""
    wa.send_bytes(b"c")
    wa.send_many(frames)
    wa.send_bytes(PAYLOAD * 5)
    [wb.read_bytes() for _ in range(5)]
    wa.send_bytes(b"d")
    wa.send_all(b"raw")
    wb.read_bytes(), wb.receive_all(3)
    wa.send_bytes(b"ping")
    wb.send_bytes(b"pong")
    wb.flush()
    wa.read_bytes()             # sends "ping" first
    wb.read_bytes()


@pytest.mark.parametrize("name", [
    "send_all+receive_all", "receive_into", "send_bytes+read_bytes", "strings", "objects json",
    "objects pickle", "unsafe pickle refused", "header codec", "bad header", "too large to send",
    "peer closed", "timeout (non-blocking)", "caller mistakes", "wrapped socket", "Connection",
    "Decoder+encode_frame", "Decoder too large", "timeout mid-frame", "closed mid-frame",
    "big payload refcount", "write buffer", "write buffer flush fails",
])
def test_no_growth(pairs, name):
    run = scenarios(pairs)[name]
    slow = ("objects pickle", "unsafe pickle refused", "Connection", "write buffer")
    iterations = N if name not in slow else N // 4
    # Two windows: the first lets caches and free lists fill (CPython keeps
    # up to 2000 freed 1-tuples, say); a leak keeps growing in the second.
    tracemalloc.start()
    for _ in range(2000):
        run()
    before = measure()
    held_before = (sys.getrefcount(PAYLOAD), sys.getrefcount(RECEIVED))
    for _ in range(iterations // 2):
        run()
    middle = measure()
    for _ in range(iterations // 2):
        run()
    after = measure()
    tracemalloc.stop()
    traced, objects, resident, refs = (a - m for a, m in zip(after, middle))
    window = iterations // 2
    assert traced < 64 * 1024, f"{traced} bytes kept over {window} more calls ({before=})"
    assert objects < 100, f"{objects} objects kept over {window} more calls"
    if not SANITIZED:  # ASan holds freed memory in quarantine: RSS says nothing
        assert resident < 8 << 20, f"RSS grew {resident >> 10} KiB over {window} more calls"
    assert (sys.getrefcount(PAYLOAD), sys.getrefcount(RECEIVED)) == held_before
    if hasattr(sys, "gettotalrefcount"):
        assert refs < 1000


def measure():
    gc.collect()
    return (tracemalloc.get_traced_memory()[0], len(gc.get_objects()), rss(),
            sys.gettotalrefcount() if hasattr(sys, "gettotalrefcount") else 0)
