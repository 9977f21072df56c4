"""Frames: 8 ASCII digits of length, then the payload."""
import mmap
import os
import socket
import threading

import pytest

import tcpframe
from tcpframe import ConnectionClosed, FrameError, FrameTooLarge
from conftest import trickle
from test_header import BAD_HEADERS


@pytest.mark.parametrize("size", [0, 1, 1000, (1 << 20) + 3, 5 << 20])
def test_round_trip_sizes(tcp_pair, background, size):
    client, server = tcp_pair
    payload = os.urandom(size)
    bg = background(tcpframe.send_bytes, client, payload)
    assert tcpframe.read_bytes(server) == payload
    bg.join()


def test_wire_format_is_eight_digits_then_payload(tcp_pair):
    client, server = tcp_pair
    tcpframe.send_bytes(client, b"HelloWorld")
    assert tcpframe.receive_all(server, 18) == b"00000010HelloWorld"


def test_frame_of_exactly_max_size_is_read(tcp_pair):
    client, server = tcp_pair
    tcpframe.send_bytes(client, b"12345")
    assert tcpframe.read_bytes(server, max_size=5) == b"12345"


def test_frame_over_max_size_is_refused_before_its_payload(tcp_pair):
    client, server = tcp_pair
    tcpframe.send_bytes(client, b"123456")
    with pytest.raises(FrameTooLarge) as info:
        tcpframe.read_bytes(server, max_size=5)
    err = info.value
    assert (err.size, err.limit, err.header) == (6, 5, b"00000006")
    assert "max_size=5" in str(err)
    # Not one payload byte was consumed.
    assert tcpframe.receive_all(server, 6) == b"123456"


def test_the_largest_frame_eight_digits_can_say(tcp_pair, background):
    client, server = tcp_pair
    payload = b"\xab" * tcpframe.MAX_SIZE
    bg = background(tcpframe.send_bytes, client, payload)
    got = tcpframe.read_bytes(server)
    bg.join()
    assert len(got) == tcpframe.MAX_SIZE and got == payload


def test_payload_over_max_size_is_refused_before_sending(tcp_pair):
    client, server = tcp_pair
    # An anonymous mapping: a 100 MB buffer that costs no memory until touched.
    with mmap.mmap(-1, tcpframe.MAX_SIZE + 1) as huge:
        with pytest.raises(FrameTooLarge) as info:
            tcpframe.send_bytes(client, huge)
    assert info.value.size == tcpframe.MAX_SIZE + 1
    assert info.value.limit == tcpframe.MAX_SIZE
    server.setblocking(False)
    with pytest.raises(BlockingIOError):
        server.recv(1)


def test_send_string_over_max_size_is_refused(tcp_pair):
    client, _ = tcp_pair
    with pytest.raises(FrameTooLarge):
        tcpframe.send_string(client, "x" * (tcpframe.MAX_SIZE + 1))


@pytest.mark.parametrize("header", BAD_HEADERS)
def test_bad_header_from_peer(tcp_pair, header):
    client, server = tcp_pair
    client.sendall(header + b"payload")
    with pytest.raises(FrameError) as info:
        tcpframe.read_bytes(server)
    assert info.value.header == header
    assert "out of sync" in str(info.value)


def test_seven_header_bytes_then_eof(tcp_pair):
    client, server = tcp_pair
    client.sendall(b"0000001")
    client.close()
    with pytest.raises(ConnectionClosed) as info:
        tcpframe.read_bytes(server)
    assert (info.value.partial, info.value.expected) == (b"0000001", 8)
    assert "7 of 8 bytes of the frame header" in str(info.value)


def test_clean_close_between_frames(tcp_pair):
    client, server = tcp_pair
    tcpframe.send_bytes(client, b"last")
    client.close()
    assert tcpframe.read_bytes(server) == b"last"
    with pytest.raises(ConnectionClosed) as info:
        tcpframe.read_bytes(server)
    assert (info.value.partial, info.value.expected) == (b"", None)
    assert "between frames" in str(info.value)


def test_close_mid_payload_reports_the_raw_frame(tcp_pair):
    client, server = tcp_pair
    client.sendall(b"00000100" + b"x" * 30)
    client.close()
    with pytest.raises(ConnectionClosed) as info:
        tcpframe.read_bytes(server)
    assert info.value.partial == b"00000100" + b"x" * 30
    assert info.value.expected == 108
    assert "38 of 108 bytes of the frame" in str(info.value)


def test_close_mid_large_payload_after_growth(tcp_pair, background):
    client, server = tcp_pair
    sent = b"04000000" + os.urandom(3_000_000)  # past the first 1 MiB chunk

    def send_then_close():
        client.sendall(sent)
        client.close()

    bg = background(send_then_close)
    with pytest.raises(ConnectionClosed) as info:
        tcpframe.read_bytes(server)
    bg.join()
    assert info.value.partial == sent
    assert info.value.expected == 8 + 4_000_000


def test_trickled_frame_byte_by_byte(tcp_pair, background):
    client, server = tcp_pair
    bg = background(trickle, client, b"00000011hello world", 1, 0.002)
    assert tcpframe.read_bytes(server) == b"hello world"
    bg.join()


def test_many_frames_in_one_segment(tcp_pair):
    client, server = tcp_pair
    frames = [b"", b"a", b"bb", os.urandom(300)]
    client.sendall(b"".join(tcpframe.encode_header(len(f)) + f for f in frames))
    assert [tcpframe.read_bytes(server) for _ in frames] == frames


def test_header_and_payload_leave_in_one_system_call(tcp_pair):
    """Two send() calls let Nagle hold the payload back (the lesson's 85 ms
    stall); one sendmsg() puts the whole frame in one segment, so a reader
    blocked in recv() gets header and payload together, every time."""
    client, server = tcp_pair
    for i in range(50):
        arrived = []
        reader = threading.Thread(target=lambda: arrived.append(server.recv(65536)))
        reader.start()
        tcpframe.send_bytes(client, b"ping %d" % i)
        reader.join(10)
        assert arrived == [b"%08d" % len(b"ping %d" % i) + b"ping %d" % i]


def test_strings_round_trip_as_str(tcp_pair):
    client, server = tcp_pair
    tcpframe.send_string(client, "héllo wörld ✓")
    assert tcpframe.read_string(server) == "héllo wörld ✓"
    # The header counts encoded bytes, as the lesson's does.
    tcpframe.send_string(client, "é")
    assert tcpframe.receive_all(server, 10) == b"00000002\xc3\xa9"


def test_string_encoding_option(tcp_pair):
    client, server = tcp_pair
    tcpframe.send_string(client, "é", "latin-1")
    tcpframe.send_string(client, "é", encoding="latin-1")
    assert tcpframe.read_bytes(server) == b"\xe9"
    assert tcpframe.read_string(server, encoding="latin-1") == "é"


def test_undecodable_string_keeps_the_stream_in_sync(tcp_pair):
    client, server = tcp_pair
    tcpframe.send_bytes(client, b"\xff\xfe")
    tcpframe.send_string(client, "next")
    with pytest.raises(UnicodeDecodeError):
        tcpframe.read_string(server)
    assert tcpframe.read_string(server) == "next"


def test_send_string_wants_str(tcp_pair):
    client, _ = tcp_pair
    with pytest.raises(TypeError, match="use send_bytes"):
        tcpframe.send_string(client, b"bytes")


def test_argument_checking(tcp_pair):
    client, server = tcp_pair
    with pytest.raises(TypeError, match="positional"):
        tcpframe.read_bytes(server, 5)
    with pytest.raises(TypeError, match="unexpected keyword"):
        tcpframe.read_bytes(server, maxsize=5)
    with pytest.raises(ValueError, match="max_size must be >= 0"):
        tcpframe.read_bytes(server, max_size=-1)
    with pytest.raises(TypeError, match="multiple values"):
        tcpframe.send_string(client, "x", "utf-8", encoding="utf-8")
    with pytest.raises(TypeError, match="encoding must be a str"):
        tcpframe.read_string(server, encoding=8)
    with pytest.raises(LookupError):
        tcpframe.send_string(client, "x", "no-such-codec")


def test_send_bytes_to_a_closed_peer_raises(tcp_pair):
    client, server = tcp_pair
    server.close()
    with pytest.raises((BrokenPipeError, ConnectionResetError)):
        for _ in range(100):  # the first sends may still be buffered
            tcpframe.send_bytes(client, b"x" * 65536)


def test_plain_socket_subclass_goes_through_its_methods(tcp_pair):
    client, server = tcp_pair

    class Counting(socket.socket):
        calls = 0

        def recv_into(self, *args):
            Counting.calls += 1
            return super().recv_into(*args)

    wrapped = Counting(fileno=server.detach())
    try:
        tcpframe.send_bytes(client, b"through the method")
        assert tcpframe.read_bytes(wrapped) == b"through the method"
        assert Counting.calls >= 2
    finally:
        wrapped.close()
