"""The lesson's exercise: the average service and its client."""
import json
import socket

import pytest

from tcpframe import lesson
import tcpframe
from tcpframe import average as avg
from tcpframe.server import Server


@pytest.mark.parametrize("request_, reply", [
    ([1, 2, 3, 4], {"average": 2.5}),
    ([2.5], {"average": 2.5}),
    ([0.1] * 10, {"average": 0.1}),
    ([10**300, 10**300], {"average": 1e300}),
    ([1e308, 1e308, 1e308], {"average": 1e308}),
    ([], {"error": "cannot average an empty list"}),
    ("1 2 3", {"error": "expected a list of numbers, got str"}),
    ({"numbers": [1]}, {"error": "expected a list of numbers, got dict"}),
    ([1, "2"], {"error": "item 1 is '2', not a number"}),
    ([1, True], {"error": "item 1 is True, not a number"}),
    ([1, None], {"error": "item 1 is None, not a number"}),
    ([10**400], {"error": "the numbers are too large to average as floats"}),
])
def test_compute(request_, reply):
    assert avg.compute(request_) == reply


@pytest.fixture
def server():
    with Server(avg.handle) as s:
        yield s


def test_client_function(server):
    assert avg.average((1, 2, 3), *server.address[:2]) == 2.0
    with pytest.raises(avg.AverageError, match="empty list"):
        avg.average([], *server.address[:2])


def test_two_requests_on_one_connection_and_in_one_segment(server):
    with socket.create_connection(server.address[:2], timeout=10) as sock:
        tcpframe.send_object(sock, [1, 3])
        assert tcpframe.read_object(sock) == {"average": 2.0}
        two = [json.dumps([1]).encode(), json.dumps([5, 7]).encode()]
        sock.sendall(b"".join(tcpframe.encode_header(len(p)) + p for p in two))
        assert tcpframe.read_object(sock) == {"average": 1.0}
        assert tcpframe.read_object(sock) == {"average": 6.0}


def test_lesson_client_with_hand_typed_helpers(server):
    with socket.create_connection(server.address[:2], timeout=10) as sock:
        lesson.send_string(sock, json.dumps([2, 4, 6]))
        assert json.loads(lesson.read_string(sock)) == {"average": 4.0}


def test_not_json_gets_an_error_reply_and_the_connection_goes_on(server):
    with socket.create_connection(server.address[:2], timeout=10) as sock:
        tcpframe.send_bytes(sock, b"[1, 2")
        assert tcpframe.read_object(sock)["error"].startswith("not JSON")
        tcpframe.send_object(sock, [8])
        assert tcpframe.read_object(sock) == {"average": 8.0}


def test_oversized_request_is_refused_and_hung_up(server):
    with socket.create_connection(server.address[:2], timeout=10) as sock:
        sock.sendall(tcpframe.encode_header(avg.MAX_REQUEST + 1))
        assert "bad frame" in tcpframe.read_object(sock)["error"]
        with pytest.raises(tcpframe.ConnectionClosed):
            tcpframe.read_bytes(sock)


def test_refused_connection():
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    with pytest.raises(ConnectionRefusedError):
        avg.average([1], "127.0.0.1", port)


HOSTILE_REQUESTS = [
    (b"[1e999]", "too large for a float"),
    (b"[1, -1e999]", "too large for a float"),
    (b"[NaN]", "not a JSON number"),
    (b"[Infinity, -Infinity]", "not a JSON number"),
    (b"[" * 1000 + b"]" * 1000, "max_depth"),
    (b"[" + b"9" * 5000 + b"]", "digits"),
    (b"\xff\xfe", "not JSON"),
    (b'{"numbers": [1]}', "expected a list"),
    (b'[1, "2"]', "not a number"),
    (b"[1" + b"0" * 400 + b"]", "too large to average"),
]


@pytest.mark.parametrize("serve", ["threaded", "asyncio"])
def test_every_bad_request_gets_a_reply_and_the_client_stays_served(serve):
    """The service answers every request, naming the problem, and goes on
    serving the same connection (the issue's [1e999], [NaN], nesting...)."""
    import asyncio
    import threading

    import tcpframe.aio

    def ask_all(address):
        with socket.create_connection(address, timeout=10) as sock:
            for payload, words in HOSTILE_REQUESTS:
                tcpframe.send_bytes(sock, payload)
                reply = tcpframe.read_object(sock)
                assert words in reply["error"], (payload[:20], reply)
            tcpframe.send_object(sock, [1, 2])
            assert tcpframe.read_object(sock) == {"average": 1.5}

    if serve == "threaded":
        with Server(avg.handle) as server:
            ask_all(server.address)
        return
    started, done = threading.Event(), threading.Event()
    holder = {}

    async def main():
        async with await tcpframe.aio.start_server(avg.handle_async, "127.0.0.1", 0,
                                                   max_size=avg.MAX_REQUEST) as server:
            holder["address"] = server.address
            started.set()
            while not done.is_set():
                await asyncio.sleep(0.01)

    thread = threading.Thread(target=asyncio.run, args=(main(),))
    thread.start()
    try:
        assert started.wait(10)
        ask_all(holder["address"])
    finally:
        done.set()
        thread.join(10)
