"""Connection(write_buffer=N): sends collected in a C buffer, sent in one
system call when the next frame would not fit, on flush(), on close(), and
before any read touches the socket.  Frames arrive whole and in order
whatever the buffer size; failures say how many whole frames left; nothing
is dropped silently.  (Threads and re-entrancy: tests/test_safety.py and
tests/test_stress_threads.py.)"""
import gc
import os
import pickle
import socket
import threading
import time

import pytest

import tcpframe
from tcpframe import Connection, TransferTimeout
from conftest import make_pair


def peer_frames(sock, limit=5.0):
    """Every frame the peer gets until EOF, read with a plain Connection."""
    sock.settimeout(limit)
    with Connection(sock) as conn:
        return list(conn)


def nothing_arrived(sock, wait=0.05):
    time.sleep(wait)
    sock.setblocking(False)
    try:
        sock.recv(1)
    except BlockingIOError:
        return True
    finally:
        sock.setblocking(True)
    return False


def small_windows(client, server):
    """A small kernel send buffer: a peer that does not read soon makes
    sends wait.  (Not the peer's receive buffer: shrunk on a connected
    socket, it can stall loopback TCP for good.)"""
    del server
    client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)


FRAMES = [os.urandom(k * 7 % 45) for k in range(120)] + [os.urandom(300), b"", b"end"]
WIRE = sum(tcpframe.HEADER_SIZE + len(f) for f in FRAMES)


@pytest.mark.parametrize("size", list(range(1, 61)) + [299, 307, 308, 309, 1000, WIRE, 65536])
def test_every_buffer_size_keeps_order_and_completeness(tcp_pair, size):
    """From 1 byte (no frame fits: all go out directly) to larger than the
    whole stream: the peer gets every frame, whole, in order, whatever mix
    of send_bytes, module functions, send_many and send_all made them."""
    client, server = tcp_pair
    got = []
    t = threading.Thread(target=lambda: got.extend(peer_frames(server)), daemon=True)
    t.start()
    with Connection(client, write_buffer=size) as conn:
        assert conn.write_buffer == size
        for i, frame in enumerate(FRAMES):
            way = i % 5
            if way == 0:
                conn.send_many([frame])
            elif way == 1:
                tcpframe.send_bytes(conn, frame)
            elif way == 2 and i % 3 == 0:
                conn.send_all(tcpframe.encode_frame(frame))  # unframed bytes, never buffered
            else:
                conn.send_bytes(frame)
            assert conn.unsent <= size
    t.join(10)
    assert got == FRAMES


def test_sends_wait_in_the_buffer_until_it_would_overflow(tcp_pair):
    client, server = tcp_pair
    conn = Connection(client, write_buffer=100)
    conn.send_bytes(b"a" * 30)      # 38 bytes with the header
    conn.send_bytes(b"b" * 30)
    assert conn.unsent == 76
    assert nothing_arrived(server)
    conn.send_bytes(b"c" * 30)      # would overflow: the first two leave, it waits
    assert conn.unsent == 38
    reader = Connection(server)
    assert [reader.read_bytes(), reader.read_bytes()] == [b"a" * 30, b"b" * 30]
    assert nothing_arrived(server)
    conn.send_bytes(b"d" * 500)     # larger than the buffer: out, after the waiting one
    assert conn.unsent == 0
    assert [reader.read_bytes(), reader.read_bytes()] == [b"c" * 30, b"d" * 500]
    conn.send_many([b"e", b"f"])    # they fit: buffered too
    assert conn.unsent == 18
    conn.flush()
    assert conn.unsent == 0 and [reader.read_bytes(), reader.read_bytes()] == [b"e", b"f"]
    conn.flush()                    # nothing waiting: nothing to do
    conn.close()


def test_default_is_unbuffered(tcp_pair):
    client, server = tcp_pair
    conn = Connection(client)
    assert conn.write_buffer == 0
    conn.send_bytes(b"now")
    assert conn.unsent == 0
    assert tcpframe.read_bytes(server) == b"now"
    conn.flush()                    # allowed, and does nothing


@pytest.mark.parametrize("value, error", [(-1, ValueError), ("64k", TypeError), (None, TypeError)])
def test_write_buffer_argument_is_checked(tcp_pair, value, error):
    with pytest.raises(error):
        Connection(tcp_pair[0], write_buffer=value)


@pytest.mark.parametrize("read", ["read_bytes", "next", "read_string", "module_read_bytes",
                                  "receive_all", "receive_into"])
def test_a_read_sends_what_waits_first(tcp_pair, background, read):
    """Ping-pong with every read: the request must be on the wire before
    the read waits for its answer, or both sides wait forever (here: until
    the 2 s timeout)."""
    client, server = tcp_pair
    client.settimeout(2.0)
    server.settimeout(2.0)
    conn = Connection(client, write_buffer=65536)

    def echo():
        with Connection(server) as peer:
            for payload in peer:
                peer.send_bytes(payload)

    bg = background(echo)
    for i in range(50):
        request = b"ping %d" % i
        conn.send_bytes(request)
        if read == "read_bytes":
            answer = conn.read_bytes()
        elif read == "next":
            answer = next(conn)
        elif read == "read_string":
            answer = conn.read_string().encode()
        elif read == "module_read_bytes":
            answer = tcpframe.read_bytes(conn)
        elif read == "receive_all":
            answer = conn.receive_all(8 + len(request))[8:]
        else:
            buf = bytearray(8 + len(request))
            conn.receive_into(buf)
            answer = bytes(buf[8:])
        assert answer == request
        assert conn.unsent == 0
    conn.close()
    bg.join()


def test_both_sides_buffered_ping_pong(tcp_pair, background):
    """Both ends buffered, request/response for many rounds: no deadlock,
    and a server answering pipelined requests sends its answers in one
    call when it runs out of requests."""
    client, server = tcp_pair
    a = Connection(client, write_buffer=65536)
    b = Connection(server, write_buffer=65536)

    def serve():
        for payload in b:
            b.send_bytes(payload.upper())
        b.close()

    bg = background(serve)
    for i in range(200):
        a.send_bytes(b"q%d" % i)
        assert a.read_bytes() == b"Q%d" % i
    a.send_many([b"x%d" % i for i in range(100)])       # pipelined
    assert [a.read_bytes() for _ in range(100)] == [b"X%d" % i for i in range(100)]
    a.close()
    bg.join()


def test_reading_a_buffered_frame_sends_nothing(tcp_pair):
    """A frame already in the receive buffer is returned without touching
    the socket, so replies keep collecting: a server answering pipelined
    requests sends all its answers at once."""
    client, server = tcp_pair
    server.sendall(b"".join(tcpframe.encode_frame(b"r%d" % i) for i in range(3)))
    conn = Connection(client, write_buffer=1000)
    replies = []
    for _ in range(3):
        replies.append(conn.read_bytes())
        conn.send_bytes(replies[-1] + b"!")
        if len(replies) == 1:
            assert conn.frame_ready  # the other two came with the first recv()
    assert conn.unsent == 3 * 11
    assert nothing_arrived(server)
    conn.flush()
    assert [tcpframe.read_bytes(server) for _ in range(3)] == [b"r0!", b"r1!", b"r2!"]


def test_close_and_exit_send_what_waits(tcp_pair):
    client, server = tcp_pair
    with Connection(client, write_buffer=4096) as conn:
        conn.send_bytes(b"via exit")
        assert conn.unsent > 0
    assert tcpframe.read_bytes(server) == b"via exit"
    client, server = make_pair()
    with server:
        conn = Connection(client, write_buffer=4096)
        conn.send_many([b"via", b"close"])
        conn.close()
        assert peer_frames(server) == [b"via", b"close"]
    conn.close()                    # again: fine
    assert conn.unsent == 0
    with pytest.raises(ValueError, match=r"closed Connection \(flush\(\)\)"):
        conn.flush()
    with pytest.raises(ValueError, match="closed Connection"):
        conn.send_bytes(b"late")


def test_exit_sends_what_waits_when_the_body_raised(tcp_pair):
    client, server = tcp_pair
    with pytest.raises(KeyError):
        with Connection(client, write_buffer=4096) as conn:
            conn.send_bytes(b"before the error")
            raise KeyError
    assert tcpframe.read_bytes(server) == b"before the error"


def stalled_flush(conn, server, count=1000, size=1000):
    """Frames waiting in conn's buffer that cannot all leave: the peer reads
    nothing, so a flush times out part way (in the middle of a frame, most
    likely)."""
    for i in range(count):
        conn.send_bytes(bytes([i % 251]) * size)
    assert conn.unsent == count * (size + 8)


def test_timeout_mid_flush_reports_progress_and_keeps_the_rest(tcp_pair, background):
    client, server = tcp_pair
    small_windows(client, server)
    client.settimeout(0.3)
    conn = Connection(client, write_buffer=1 << 20)
    stalled_flush(conn, server)
    total = conn.unsent
    with pytest.raises(TransferTimeout) as info:
        conn.flush()
    err = info.value
    assert 0 < err.sent < total and err.expected == total
    assert err.frames_sent == err.sent // 1008      # whole frames, the cut one not counted
    assert conn.unsent == total - err.sent          # the rest waits, in order
    assert "stay in the write buffer" in str(err) and "whole frame" in str(err)
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.sent, copy.frames_sent, copy.expected) == (err.sent, err.frames_sent, total)
    # The peer reads again; a second flush finishes the cut frame and the rest.
    got = []
    bg = background(lambda: got.extend(peer_frames(server, limit=10)))
    client.settimeout(10)
    conn.flush()
    conn.close()
    bg.join()
    assert got == [bytes([i % 251]) * 1000 for i in range(1000)]


def test_timeout_in_an_overflowing_send_leaves_its_frame_out(tcp_pair, background):
    """The send whose frame did not fit flushes; when that fails, its frame
    was neither sent nor buffered, and the message says so: sending it
    again is right."""
    client, server = tcp_pair
    small_windows(client, server)
    client.settimeout(0.3)
    conn = Connection(client, write_buffer=1 << 20)
    stalled_flush(conn, server)
    before = conn.unsent
    with pytest.raises(TransferTimeout) as info:
        conn.send_bytes(b"X" * 50_000)
    err = info.value
    assert "nothing of this call's frame was sent" in str(err)
    assert conn.unsent == before - err.sent
    got = []
    bg = background(lambda: got.extend(peer_frames(server, limit=10)))
    client.settimeout(10)
    conn.send_bytes(b"X" * 50_000)
    conn.close()
    bg.join()
    assert got == [bytes([i % 251]) * 1000 for i in range(1000)] + [b"X" * 50_000]


def test_a_read_raises_its_flushs_error(tcp_pair):
    client, server = tcp_pair
    small_windows(client, server)
    client.settimeout(0.3)
    conn = Connection(client, write_buffer=1 << 20)
    stalled_flush(conn, server)
    server.sendall(tcpframe.encode_frame(b"an answer"))
    with pytest.raises(TransferTimeout) as info:
        conn.read_bytes()
    assert info.value.partial is None and info.value.sent > 0  # a send's timeout
    assert conn.buffered == 0           # nothing was read
    with pytest.raises(TransferTimeout):
        conn.close()                    # tries once more, and says what it dropped


def test_close_raises_its_flushs_error_but_closes(tcp_pair):
    client, server = tcp_pair
    small_windows(client, server)
    client.settimeout(0.3)
    conn = Connection(client, write_buffer=1 << 20)
    stalled_flush(conn, server)
    with pytest.raises(TransferTimeout, match=r"close\(\) dropped the other \d+ bytes") as info:
        conn.close()
    assert info.value.frames_sent == info.value.sent // 1008
    assert conn.closed and client.fileno() == -1 and conn.unsent == 0
    conn.close()                        # nothing more to say


def test_reset_mid_flush_gives_the_oserror_progress(tcp_pair):
    client, server = tcp_pair
    conn = Connection(client, write_buffer=1 << 16)
    conn.send_bytes(b"first")
    server.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    server.close()                      # RST
    time.sleep(0.05)
    with pytest.raises(OSError) as info:
        for _ in range(100):            # the first send may still be accepted
            conn.send_bytes(b"more")
            conn.flush()
    err = info.value
    assert isinstance(err, (ConnectionResetError, BrokenPipeError)), err
    assert err.sent == 0 and err.frames_sent == 0
    if hasattr(err, "__notes__"):
        assert "stay in the write buffer" in err.__notes__[0]
    assert conn.unsent > 0              # kept: nothing is dropped behind the caller's back
    with pytest.raises(OSError):
        conn.close()                    # the last try fails too; it says so
    assert conn.closed


def test_collected_with_frames_waiting_warns(tcp_pair):
    client, server = tcp_pair
    conn = Connection(client, write_buffer=100)
    conn.send_bytes(b"never sent")
    with pytest.warns(ResourceWarning, match=r"1 frame\(s\) \(18 bytes\) never sent"):
        del conn
        gc.collect()
    assert nothing_arrived(server)      # dropped, not sent from a finalizer


def test_collected_without_frames_waiting_does_not_warn(tcp_pair):
    client, _ = tcp_pair
    conn = Connection(client, write_buffer=100)
    conn.send_bytes(b"x")
    conn.flush()
    del conn
    other, peer = make_pair()
    with peer:
        closed = Connection(other, write_buffer=100)
        closed.send_bytes(b"y")
        closed.close()
        del closed
        gc.collect()                    # filterwarnings = error: a warning fails


class SocketSubclass(socket.socket):
    """Driven through its sendall(): the TLS path."""


def test_wrapped_socket_gets_whole_buffers(tcp_pair):
    client, server = tcp_pair
    calls = []

    class Counting(SocketSubclass):
        def sendall(self, data, *args):
            calls.append(len(data))
            return super().sendall(data, *args)

    sock = Counting(fileno=client.detach())
    with Connection(sock, write_buffer=1000) as conn:
        for i in range(100):
            conn.send_bytes(b"%03d" % i)        # 11 bytes a frame: 90 fit
    assert calls == [990, 110]
    assert peer_frames(server) == [b"%03d" % i for i in range(100)]


def test_wrapped_sendall_failing_drops_the_rest_and_says_so(tcp_pair):
    """A wrapped sendall() that fails does not say how much it sent: the
    rest cannot be sent again without maybe repeating bytes."""
    client, server = tcp_pair

    class Failing(SocketSubclass):
        def sendall(self, data, *args):
            raise socket.timeout("timed out")

    sock = Failing(fileno=client.detach())
    sock.settimeout(1.0)
    conn = Connection(sock, write_buffer=1000)
    conn.send_many([b"a", b"b"])
    with pytest.raises(TransferTimeout) as info:
        conn.flush()
    err = info.value
    assert err.sent is None and err.frames_sent == 0
    assert "were dropped" in str(err)
    assert conn.unsent == 0
    conn.close()


def test_sends_while_a_reader_thread_waits_go_straight_out(tcp_pair, background):
    """A reader thread blocked in `for frame in conn` while this thread
    sends requests: they must not wait in the buffer for a flush nobody will
    do (the reader is already waiting); they go straight out, and the
    answers come back."""
    client, server = tcp_pair
    client.settimeout(5.0)
    conn = Connection(client, write_buffer=65536)

    def echo():
        with Connection(server) as peer:
            for payload in peer:
                peer.send_bytes(payload)

    answers = []

    def read_answers():
        for payload in conn:
            answers.append(payload)
            if len(answers) == 100:
                return

    echoer = background(echo)
    reader = background(read_answers)
    time.sleep(0.1)                     # the reader is waiting in recv()
    for i in range(100):
        conn.send_bytes(b"request %d" % i)
        time.sleep(0.001)
    reader.join()
    assert answers == [b"request %d" % i for i in range(100)]
    conn.close()
    echoer.join()


# -- found by an attacker's review ----------------------------------------------------


def test_a_frame_larger_than_the_buffer_leaves_with_what_waits(tcp_pair):
    """One system call, not a flush and then the frame: on a connection
    without TCP_NODELAY the second would wait for an ACK (40 ms)."""
    client, server = tcp_pair
    calls = []

    class Counting(SocketSubclass):
        def sendall(self, data, *args):
            calls.append(bytes(data))
            return super().sendall(data, *args)

    sock = Counting(fileno=client.detach())
    with Connection(sock, write_buffer=64) as conn:
        conn.send_bytes(b"small")
        conn.send_bytes(b"L" * 100)              # larger than the whole buffer
        assert len(calls) == 1 and calls[0].startswith(b"00000005small00000100L")
        conn.send_bytes(b"x" * 50)               # fits once what waits is gone: as before
        conn.send_bytes(b"y" * 50)
    assert peer_frames(server) == [b"small", b"L" * 100, b"x" * 50, b"y" * 50]


def test_close_during_the_flush_that_makes_room_is_not_a_silent_loss(tcp_pair):
    """close() (another thread's, a signal handler's: here a wrapped
    socket's sendall) while a send flushes to make room: that send's frame
    can no longer leave, and the send says so instead of returning."""
    client, server = tcp_pair
    hook = []

    class Closing(SocketSubclass):
        def sendall(self, data, *args):
            result = super().sendall(data, *args)
            while hook:
                hook.pop()()
            return result

    conn = Connection(Closing(fileno=client.detach()), write_buffer=32)
    conn.send_bytes(b"aaaa")
    conn.send_bytes(b"bbbb")                     # 24 bytes waiting
    hook.append(conn.close)
    with pytest.raises(ValueError, match="cut short"):
        conn.send_bytes(b"0123456789")           # 18 bytes: must flush first
    assert conn.closed
    assert peer_frames(server) == [b"aaaa", b"bbbb"]


def test_the_cut_short_error_carries_the_progress(tcp_pair):
    client, server = tcp_pair

    class Closing(SocketSubclass):
        def sendall(self, data, *args):
            conn.close()
            raise BrokenPipeError(32, "Broken pipe")

    conn = Connection(Closing(fileno=client.detach()), write_buffer=1000)
    conn.send_many([b"a", b"b", b"c"])
    with pytest.raises(ValueError, match="cut short") as info:
        conn.flush()
    cause = info.value.__cause__
    assert (info.value.sent, info.value.frames_sent) == (cause.sent, cause.frames_sent)


def test_close_from_a_wrapped_shutdown_does_not_recurse(tcp_pair):
    """close() wakes a blocked read through the wrapper's shutdown(); a
    wrapper whose shutdown() calls close() again must not recurse (it did,
    to RecursionError, and the socket was never shut down)."""
    client, server = tcp_pair

    class Wrapper:       # not a socket.socket: driven through its methods
        def __init__(self, sock):
            self.sock = sock

        def recv_into(self, buffer, nbytes=0):
            return self.sock.recv_into(buffer, nbytes)

        def sendall(self, data):
            return self.sock.sendall(data)

        def gettimeout(self):
            return self.sock.gettimeout()

        def fileno(self):
            return self.sock.fileno()

        def close(self):
            self.sock.close()

        def shutdown(self, how):
            conn.close()                     # a no-op while close() wakes
            self.sock.shutdown(how)

    conn = Connection(Wrapper(client))
    got = []

    def reader():
        try:
            conn.read_bytes()
        except Exception as exc:  # what it raised is the point
            got.append(exc)

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    time.sleep(0.2)                          # blocked in recv
    conn.close()
    t.join(10)
    assert not t.is_alive()
    assert got and isinstance(got[0], ValueError) and "cut short" in str(got[0]), got


@pytest.mark.parametrize("value", [2 ** 31, 2 ** 62, tcpframe.MAX_SIZE + tcpframe.HEADER_SIZE + 1])
def test_a_write_buffer_larger_than_any_frame_is_refused(tcp_pair, value):
    with pytest.raises(ValueError, match="larger than the largest frame"):
        Connection(tcp_pair[0], write_buffer=value)
    Connection(tcp_pair[0], write_buffer=tcpframe.MAX_SIZE + tcpframe.HEADER_SIZE).close()
