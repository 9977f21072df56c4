"""tcpframe.server.Server: many clients, bad clients, clean shutdown."""
import logging
import os
import socket
import struct
import threading
import time

import pytest

import tcpframe
from tcpframe import average as avg
from tcpframe.server import Server


def open_fds():
    return set(os.listdir("/proc/self/fd"))


def connect(server, timeout=10):
    return socket.create_connection(server.address[:2], timeout=timeout)


def wait_until(condition, timeout=10):
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "condition not reached"
        time.sleep(0.01)


def test_port_zero_picks_a_free_port_and_serves():
    with Server(avg.handle) as server:
        host, port = server.address[:2]
        assert host == "127.0.0.1" and port > 0
        assert avg.average([1, 2, 3], host, port) == 2.0


def test_fifty_clients_at_once():
    barrier = threading.Barrier(50)
    results, errors = {}, []

    def client(i, address):
        try:
            barrier.wait(10)
            numbers = list(range(i, i + 10))
            results[i] = avg.average(numbers, *address)
        except Exception as exc:
            errors.append(exc)

    with Server(avg.handle) as server:
        threads = [threading.Thread(target=client, args=(i, server.address[:2])) for i in range(50)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    assert not errors
    assert results == {i: i + 4.5 for i in range(50)}


def test_bad_clients_do_not_disturb_good_ones(caplog):
    caplog.set_level(logging.DEBUG, logger="tcpframe.server")
    with Server(avg.handle) as server, connect(server) as garbage, connect(server) as silent:
        garbage.sendall(b"GET / HTTP/1.1\r\n\r\n")
        with connect(server) as cut:
            cut.sendall(b"00000100[1, 2")  # then disconnects mid-frame
        assert avg.average([4, 6], *server.address[:2]) == 5.0
        # The garbage client got an error reply, then the server hung up;
        # its unread bytes did not turn the hang-up into a reset.
        reply = tcpframe.read_object(garbage)
        assert reply["error"].startswith("bad frame:")
        with pytest.raises(tcpframe.ConnectionClosed):
            tcpframe.read_bytes(garbage)
        assert silent.fileno() >= 0  # still connected, still harmless
        assert avg.average([1], *server.address[:2]) == 1.0
    assert "disconnected mid-message" in caplog.text


def test_a_handler_that_raises_closes_only_its_client(caplog):
    def handler(conn, address):
        if tcpframe.read_string(conn) == "boom":
            raise RuntimeError("handler bug")
        tcpframe.send_string(conn, "fine")

    with Server(handler) as server:
        with connect(server) as bad:
            tcpframe.send_string(bad, "boom")
            with pytest.raises(tcpframe.ConnectionClosed):
                tcpframe.read_string(bad)
        with connect(server) as good:
            tcpframe.send_string(good, "hi")
            assert tcpframe.read_string(good) == "fine"
    assert "handler failed" in caplog.text and "handler bug" in caplog.text


def test_client_timeout_drops_a_silent_client():
    with Server(avg.handle, client_timeout=0.2) as server:
        with connect(server) as silent:
            with pytest.raises(tcpframe.ConnectionClosed):
                tcpframe.read_bytes(silent)  # the server hangs up on us
        wait_until(lambda: server.client_count == 0)


def test_shutdown_leaves_no_thread_and_no_fd():
    threads_before = set(threading.enumerate())
    fds_before = open_fds()
    server = Server(avg.handle).start()
    clients = [connect(server) for _ in range(5)]
    tcpframe.send_object(clients[0], [1, 2])
    assert tcpframe.read_object(clients[0]) == {"average": 1.5}
    wait_until(lambda: server.client_count == 5)
    server.shutdown()
    # Every client was hung up on...
    for c in clients:
        with pytest.raises(tcpframe.ConnectionClosed):
            tcpframe.read_bytes(c)
        c.close()
    # ...and nothing of the server's is left.
    assert set(threading.enumerate()) == threads_before
    assert open_fds() == fds_before
    server.shutdown()  # twice is fine


def test_shutdown_of_a_server_never_started_closes_its_socket():
    fds_before = open_fds()
    Server(avg.handle).shutdown()
    assert open_fds() == fds_before


def test_restart_on_the_same_port():
    with Server(avg.handle) as server:
        port = server.address[1]
        with connect(server) as c:  # leaves a TIME_WAIT behind on close
            tcpframe.send_object(c, [1])
            tcpframe.read_object(c)
    with Server(avg.handle, port=port) as again:
        assert avg.average([3], "127.0.0.1", port) == 3.0
        assert again.address[1] == port


def test_client_sockets_have_nodelay():
    seen = []

    def handler(conn, address):
        assert isinstance(conn, tcpframe.Connection)
        seen.append(conn.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        tcpframe.send_string(conn, "ok")

    with Server(handler) as server, connect(server) as c:
        assert tcpframe.read_string(c) == "ok"
    assert seen and seen[0] != 0


def test_max_clients_refuses_extra_connections(caplog):
    release = threading.Event()

    def handler(conn, address):
        release.wait(10)

    with Server(handler, max_clients=2) as server:
        held = [connect(server) for _ in range(2)]
        wait_until(lambda: server.client_count == 2)
        with connect(server) as extra:
            with pytest.raises(tcpframe.ConnectionClosed):
                tcpframe.read_bytes(extra)
        release.set()
        for c in held:
            c.close()
    assert "max_clients=2" in caplog.text


def test_reset_client_does_not_stop_the_server():
    with Server(avg.handle) as server:
        rst = connect(server)
        rst.sendall(b"0000")
        rst.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        rst.close()
        assert avg.average([2, 4], *server.address[:2]) == 3.0
