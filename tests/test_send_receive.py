"""The byte loops: send_all, receive_all, receive_into."""
import array
import os
import pickle

import pytest

import tcpframe
from tcpframe import ConnectionClosed
from conftest import trickle


@pytest.mark.parametrize("make", [bytes, bytearray, memoryview, lambda b: array.array("B", b)])
def test_send_all_accepts_any_bytes_like(tcp_pair, make):
    client, server = tcp_pair
    data = os.urandom(5000)
    assert tcpframe.send_all(client, make(data)) is None
    assert tcpframe.receive_all(server, len(data)) == data


def test_send_all_sends_multibyte_items_as_bytes(tcp_pair):
    client, server = tcp_pair
    numbers = array.array("i", range(1000))
    tcpframe.send_all(client, numbers)
    assert tcpframe.receive_all(server, len(numbers) * numbers.itemsize) == numbers.tobytes()


def test_send_all_of_a_slice_sends_only_the_slice(tcp_pair):
    client, server = tcp_pair
    tcpframe.send_all(client, memoryview(b"0123456789")[3:6])
    tcpframe.send_all(client, b"!")
    assert tcpframe.receive_all(server, 4) == b"345!"


def test_empty_transfers_touch_nothing(tcp_pair):
    client, server = tcp_pair
    tcpframe.send_all(client, b"")
    assert tcpframe.receive_all(server, 0) == b""
    assert tcpframe.receive_into(server, bytearray()) == 0


def test_receive_into_fills_the_buffer_in_place(tcp_pair):
    client, server = tcp_pair
    client.sendall(b"abcdefgh")
    buf = bytearray(b"........XY")
    assert tcpframe.receive_into(server, memoryview(buf)[:8]) == 8
    assert buf == b"abcdefghXY"
    client.sendall(bytes(range(16)))
    numbers = array.array("i", [0] * 4)
    assert tcpframe.receive_into(server, numbers) == 16
    assert numbers.tobytes() == bytes(range(16))


def test_receive_into_refuses_read_only_buffers(tcp_pair):
    _, server = tcp_pair
    with pytest.raises(TypeError, match="writable buffer.*not bytes"):
        tcpframe.receive_into(server, b"immutable")


def test_trickled_input_is_assembled(tcp_pair, background):
    client, server = tcp_pair
    data = bytes(range(200))
    bg = background(trickle, client, data, 1, 0.001)
    assert tcpframe.receive_all(server, len(data)) == data
    bg.join()


def test_peer_close_mid_receive_keeps_what_came(tcp_pair):
    client, server = tcp_pair
    client.sendall(b"four")
    client.close()
    with pytest.raises(ConnectionClosed) as info:
        tcpframe.receive_all(server, 10)
    err = info.value
    assert (err.partial, err.expected) == (b"four", 10)
    assert "4 of 10 bytes" in str(err)
    # What lesson code catches keeps catching it.
    assert isinstance(err, RuntimeError) and isinstance(err, EOFError)
    assert isinstance(err, ConnectionError)
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.partial, copy.expected, str(copy)) == (b"four", 10, str(err))


def test_receive_into_peer_close_leaves_bytes_in_buffer(tcp_pair):
    client, server = tcp_pair
    client.sendall(b"xyz")
    client.close()
    buf = bytearray(6)
    with pytest.raises(ConnectionClosed) as info:
        tcpframe.receive_into(server, buf)
    assert info.value.partial == b"xyz"
    assert buf[:3] == b"xyz"


def test_sixty_four_mib_both_ways(tcp_pair, background):
    client, server = tcp_pair
    data = os.urandom(1 << 20) * 64
    bg = background(tcpframe.send_all, client, data)
    got = tcpframe.receive_all(server, len(data))
    bg.join()
    assert got == data


def test_lesson_aliases_are_the_same_functions():
    assert tcpframe.send_all_bytes is tcpframe.send_all
    assert tcpframe.receive_all_bytes is tcpframe.receive_all
    assert tcpframe.read_all_bytes is tcpframe.receive_all


def test_caller_mistakes_raise_builtins(tcp_pair):
    client, server = tcp_pair
    with pytest.raises(ValueError, match="n must be >= 0"):
        tcpframe.receive_all(server, -1)
    with pytest.raises(TypeError):
        tcpframe.send_all(client, "text is not bytes")
    with pytest.raises(TypeError):
        tcpframe.send_all(client)
    with pytest.raises(TypeError, match="no keyword"):
        tcpframe.send_all(sock=client, data=b"")


def test_closed_socket_raises_oserror(tcp_pair):
    client, _ = tcp_pair
    client.close()
    with pytest.raises(OSError, match="closed"):
        tcpframe.send_all(client, b"x")


def test_reset_by_peer_is_an_oserror(tcp_pair):
    import socket
    import struct

    client, server = tcp_pair
    # SO_LINGER 0: close() sends RST instead of FIN.
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()
    with pytest.raises(ConnectionResetError):
        tcpframe.receive_all(server, 1)
