"""tcpframe.Connection: the core's behaviours, through a receive buffer."""
import os
import signal
import socket
import time

import pytest

import tcpframe
from tcpframe import Connection, ConnectionClosed, FrameError, FrameTooLarge, TransferTimeout
from conftest import make_pair, trickle


@pytest.fixture
def conns():
    client, server = make_pair()
    a, b = Connection(client), Connection(server)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def test_round_trips_and_helpers(conns):
    a, b = conns
    a.send_bytes(b"bytes")
    a.send_string("text ✓")
    a.send_object({"k": [1, 2]})
    a.send_object({1, 2}, codec="pickle")
    assert b.read_bytes() == b"bytes"
    assert b.read_string() == "text ✓"
    assert b.read_object() == {"k": [1, 2]}
    assert b.read_object(codec="pickle") == {1, 2}


def test_many_frames_in_one_segment_cost_one_recv(conns):
    a, b = conns
    frames = [b"%d" % i for i in range(1000)]
    a.socket.sendall(b"".join(map(tcpframe.encode_frame, frames)))
    time.sleep(0.05)
    assert b.read_bytes() == b"0"
    assert b.buffered > 0  # the rest came with the first recv()
    assert [b.read_bytes() for _ in range(999)] == frames[1:]


def test_frames_split_at_every_offset(conns):
    a, b = conns
    frames = [b"alpha", b"", b"gamma" * 10]
    stream = b"".join(map(tcpframe.encode_frame, frames))
    raw = a.socket
    for cut in range(1, len(stream)):
        raw.sendall(stream[:cut])
        time.sleep(0.001)
        raw.sendall(stream[cut:])
        assert [b.read_bytes() for _ in frames] == frames


def test_trickled_input(conns, background):
    a, b = conns
    bg = background(trickle, a.socket, tcpframe.encode_frame(b"slowly"), 1, 0.002)
    assert b.read_bytes() == b"slowly"
    bg.join()


def test_send_many_and_iteration(conns, background):
    a, b = conns
    frames = [os.urandom(n % 50) for n in range(3000)] + [os.urandom(100_000), b"end"]
    bg = background(b.__class__.__iter__, b)  # just to prove iter() is self
    assert bg.join() is b
    sent = a.send_many(frames)
    assert sent == len(frames)
    a.close()
    assert list(b) == frames  # ends cleanly at EOF on a frame boundary


def test_send_many_accepts_any_iterable_and_checks_sizes_first(conns):
    a, b = conns
    assert a.send_many(x for x in [b"1", bytearray(b"2"), memoryview(b"3")]) == 3
    assert [b.read_bytes() for _ in range(3)] == [b"1", b"2", b"3"]
    import mmap

    with mmap.mmap(-1, tcpframe.MAX_SIZE + 1) as huge:
        with pytest.raises(FrameTooLarge):
            a.send_many([b"first", huge])
    b.socket.setblocking(False)
    with pytest.raises(BlockingIOError):
        b.socket.recv(1)  # not even the first frame left
    with pytest.raises(TypeError):
        a.send_many([b"ok", "text"])
    with pytest.raises(TypeError):
        a.send_many(5)


def test_large_frame_received_in_place(conns, background):
    a, b = conns
    payload = os.urandom(5 << 20)
    bg = background(a.send_bytes, payload)
    assert b.read_bytes() == payload
    bg.join()
    assert b.buffered == 0


def test_eof_mid_frame_and_clean_eof(conns):
    a, b = conns
    a.send_bytes(b"whole")
    a.socket.sendall(b"00000010half")
    a.close()
    assert b.read_bytes() == b"whole"
    with pytest.raises(ConnectionClosed) as info:
        b.read_bytes()
    assert info.value.partial == b"00000010half"
    assert info.value.expected == 18


def test_clean_eof_between_frames(conns):
    a, b = conns
    a.close()
    with pytest.raises(ConnectionClosed) as info:
        b.read_bytes()
    assert info.value.expected is None
    assert list(b) == []


def test_bad_header(conns):
    a, b = conns
    a.socket.sendall(b"+0000001x")
    with pytest.raises(FrameError) as info:
        b.read_bytes()
    assert info.value.header == b"+0000001"


def test_max_size_default_and_override():
    client, server = make_pair()
    with Connection(client) as a, Connection(server, max_size=4) as b:
        a.send_bytes(b"12345")
        with pytest.raises(FrameTooLarge):
            b.read_bytes()
        with pytest.raises(FrameTooLarge):
            tcpframe.read_bytes(b)  # the module function honours it too
        assert b.read_bytes(max_size=5) == b"12345"


def test_timeout_is_a_deadline_and_loses_nothing(conns, background):
    a, b = conns
    b.socket.settimeout(0.3)
    bg = background(trickle, a.socket, b"00000040" + b"t" * 10, 1, 0.05)
    start = time.monotonic()
    with pytest.raises(TransferTimeout) as info:
        b.read_bytes()
    assert time.monotonic() - start < 3
    bg.join()
    partial = info.value.partial
    assert partial.startswith(b"0000")
    assert "stays buffered" in str(info.value)
    a.socket.sendall(b"t" * 30)
    assert b.read_bytes() == b"t" * 40  # carried on from the buffer


def test_timeout_on_a_large_frame_keeps_its_bytes(conns):
    a, b = conns
    b.socket.settimeout(0.3)
    head = b"00200000" + b"L" * 150_000
    a.socket.sendall(head)
    with pytest.raises(TransferTimeout) as info:
        b.read_bytes()
    assert info.value.partial == head
    assert b.buffered == len(head)
    a.socket.sendall(b"L" * 50_000)
    assert b.read_bytes() == b"L" * 200_000


def test_receive_all_and_into_use_the_buffer_first(conns):
    a, b = conns
    a.socket.sendall(tcpframe.encode_frame(b"f") + b"RAWBYTES")
    assert b.read_bytes() == b"f"  # the raw bytes came along in the buffer
    assert b.receive_all(3) == b"RAW"
    buf = bytearray(5)
    assert tcpframe.receive_into(b, buf) == 5 and buf == b"BYTES"
    a.send_all(b"xyz")
    assert tcpframe.receive_all(b, 3) == b"xyz"


def test_module_functions_accept_a_connection(conns):
    a, b = conns
    tcpframe.send_string(a, "via module")
    tcpframe.send_bytes(a, b"second")
    tcpframe.send_object(a, [1])
    assert b.read_string() == "via module"
    assert tcpframe.read_bytes(b) == b"second"
    assert tcpframe.read_object(b) == [1]


def test_signal_handler_raising_interrupts(conns):
    _, b = conns
    b.socket.settimeout(None)

    class Alarm(Exception):
        pass

    def handler(signum, frame):
        raise Alarm

    previous = signal.signal(signal.SIGALRM, handler)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.1)
        with pytest.raises(Alarm):
            b.read_bytes()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_close_and_lifecycle():
    client, server = make_pair()
    server.close()
    conn = Connection(client)
    fd = conn.fileno()
    assert fd >= 0 and not conn.closed and "fd=" in repr(conn)
    with conn as same:
        assert same is conn
    assert conn.closed and conn.fileno() == -1 and client.fileno() == -1
    conn.close()  # again: fine
    with pytest.raises(ValueError, match="closed Connection"):
        conn.read_bytes()
    with pytest.raises(ValueError):
        conn.socket
    with socket.socket() as raw, Connection(raw) as owner:
        with pytest.raises(TypeError, match="not a Connection"):
            Connection(owner)


def test_connection_over_tls():
    ssl = pytest.importorskip("ssl")
    trustme = pytest.importorskip("trustme")
    import threading

    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    raw_client, raw_server = make_pair()
    holder = {}
    t = threading.Thread(target=lambda: holder.update(s=server_ctx.wrap_socket(raw_server, server_side=True)))
    t.start()
    tls_client = client_ctx.wrap_socket(raw_client, server_hostname="localhost")
    t.join(10)
    with Connection(tls_client) as a, Connection(holder["s"]) as b:
        frames = [b"x" * n for n in (0, 1, 70_000, 5)]
        a.send_many(frames)
        assert [b.read_bytes() for _ in frames] == frames
        b.send_string("back")
        assert a.read_string() == "back"


def test_receive_all_timeout_keeps_the_bytes_and_continues(conns):
    a, b = conns
    b.socket.settimeout(0.3)
    a.socket.sendall(b"0123")
    with pytest.raises(TransferTimeout) as info:
        b.receive_all(10)
    assert (info.value.partial, info.value.expected) == (b"0123", 10)
    assert b.buffered == 4
    a.socket.sendall(b"456789")
    assert b.receive_all(10) == b"0123456789"


def test_receive_all_closed_early_reports_what_came(conns):
    a, b = conns
    a.socket.sendall(b"xyz")
    a.close()
    with pytest.raises(ConnectionClosed) as info:
        b.receive_all(5)
    assert (info.value.partial, info.value.expected) == (b"xyz", 5)


def test_close_from_another_thread_while_a_read_waits(background):
    """close() must not free the buffer a blocked read is about to fill (CI's
    ASan run would report the use-after-free).  It wakes the reader, which
    fails with a ValueError that says why, long before its own timeout."""
    client, server = make_pair()
    with client:
        conn = Connection(server)
        server.settimeout(20.0)
        client.sendall(b"0000001")  # part of a header: the read must wait
        bg = background(conn.read_bytes)
        time.sleep(0.2)
        started = time.monotonic()
        conn.close()
        with pytest.raises(ValueError, match="was closed"):
            bg.join()
        assert time.monotonic() - started < 10
        assert conn.closed
        assert server.fileno() == -1  # the last call out closed the socket
        with pytest.raises(ValueError, match="closed Connection"):
            conn.read_bytes()
