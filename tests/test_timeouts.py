"""The socket's timeout is one deadline for the whole call."""
import os
import socket
import sys
import time

import pytest

import tcpframe
from tcpframe import TransferTimeout
from conftest import trickle


def test_trickling_peer_cannot_stretch_the_deadline(tcp_pair, background):
    client, server = tcp_pair
    # 100 payload bytes at one every 0.05 s would take 5 s; we allow 0.5 s.
    bg = background(trickle, client, b"00000100" + b"z" * 100, 1, 0.05)
    server.settimeout(0.5)
    start = time.monotonic()
    with pytest.raises(TransferTimeout) as info:
        tcpframe.read_bytes(server)
    elapsed = time.monotonic() - start
    assert elapsed < 3.0, f"deadline stretched to {elapsed:.2f}s"
    err = info.value
    assert isinstance(err, socket.timeout) and isinstance(err, OSError)
    if sys.version_info >= (3, 10):  # where socket.timeout is TimeoutError
        assert isinstance(err, TimeoutError)
    assert err.partial.startswith(b"0000")
    assert err.expected in (8, 108)
    assert "no longer on a frame boundary" in str(err)
    client.close()  # the trickler stops at the broken pipe or finishes
    with pytest.raises(Exception):
        bg.join()


def test_timeout_before_anything_arrives_leaves_the_stream_in_sync(tcp_pair):
    client, server = tcp_pair
    server.settimeout(0.2)
    with pytest.raises(TransferTimeout) as info:
        tcpframe.read_bytes(server)
    assert info.value.partial == b""
    assert "may be retried" in str(info.value)
    assert server.gettimeout() == 0.2
    tcpframe.send_bytes(client, b"later")
    assert tcpframe.read_bytes(server) == b"later"


def test_receive_all_deadline(tcp_pair, background):
    client, server = tcp_pair
    bg = background(trickle, client, b"abcdefghij", 1, 0.1)
    server.settimeout(0.35)
    with pytest.raises(TransferTimeout) as info:
        tcpframe.receive_all(server, 10)
    assert 0 < len(info.value.partial) < 10
    assert info.value.expected == 10
    bg.join()


def test_send_deadline_reports_bytes_sent(tcp_pair):
    client, server = tcp_pair
    client.settimeout(0.3)
    data = bytes(64 << 20)  # far more than the socket buffers hold
    with pytest.raises(TransferTimeout) as info:
        tcpframe.send_bytes(client, data)
    sent = info.value.sent
    assert 0 < sent < len(data) + 8
    assert info.value.partial is None and info.value.expected == len(data) + 8
    assert f"after sending {sent} of" in str(info.value)
    # What was reported sent is exactly what the peer can read.
    server.settimeout(5)
    assert tcpframe.receive_all(server, sent)[:8] == tcpframe.encode_header(len(data))


def test_blocking_socket_waits_for_data(tcp_pair, background):
    client, server = tcp_pair
    server.settimeout(None)

    def later():
        time.sleep(0.2)
        tcpframe.send_bytes(client, b"worth the wait")

    bg = background(later)
    assert tcpframe.read_bytes(server) == b"worth the wait"
    bg.join()


def test_non_blocking_socket_does_what_it_can(tcp_pair):
    client, server = tcp_pair
    server.setblocking(False)
    with pytest.raises(TransferTimeout) as info:
        tcpframe.read_bytes(server)
    assert info.value.partial == b""
    assert "non-blocking" in str(info.value)
    # A frame already in the buffer is read without waiting.
    tcpframe.send_bytes(client, b"ready")
    time.sleep(0.05)
    assert tcpframe.read_bytes(server) == b"ready"
    # Half a frame: the part is reported, the stream is no longer in sync.
    client.sendall(b"00000010abc")
    time.sleep(0.05)
    with pytest.raises(TransferTimeout) as info:
        tcpframe.read_bytes(server)
    assert info.value.partial == b"00000010abc"
    assert "no longer on a frame boundary" in str(info.value)


def test_non_blocking_send_reports_progress(tcp_pair):
    client, _ = tcp_pair
    client.setblocking(False)
    with pytest.raises(TransferTimeout) as info:
        tcpframe.send_all(client, os.urandom(32 << 20))
    assert 0 < info.value.sent < 32 << 20
    assert "send buffer was full" in str(info.value)
