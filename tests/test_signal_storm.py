"""A signal every millisecond during large transfers: data intact, no
InterruptedError, and handlers that clobber errno change nothing (the tricks
of CPython's test_socket and Lib/test/_test_eintr.py)."""
import os
import signal

import pytest

import tcpframe
from tcpframe import Connection
from conftest import make_pair

pytestmark = pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs setitimer")

SIZE = 64 << 20


@pytest.fixture
def storm():
    fired = []

    def handler(signum, frame):
        fired.append(signum)
        try:
            os.close(-1)  # leaves errno = EBADF behind, as a careless handler would
        except OSError:
            pass

    previous = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, 0.001, 0.001)
    try:
        yield fired
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module")
def payload():
    return os.urandom(1 << 20) * 64


def both_ways(main_side, other_side, background):
    """The main thread (where Python delivers signals) runs main_side."""
    bg = background(other_side)
    result = main_side()
    bg.join()
    return result, bg.result


@pytest.mark.parametrize("timeout", [None, 60.0], ids=["blocking", "deadline"])
def test_send_all_and_receive_all_under_a_storm(storm, background, payload, timeout):
    client, server = make_pair()
    with client, server:
        client.settimeout(timeout)
        server.settimeout(timeout)
        got, _ = both_ways(lambda: tcpframe.receive_all(server, SIZE),
                           lambda: tcpframe.send_all(client, payload), background)
        assert got == payload
        _, got = both_ways(lambda: tcpframe.send_all(client, payload),
                           lambda: tcpframe.receive_all(server, SIZE), background)
        assert got == payload
    assert len(storm) > 10, "the storm never hit: the test proved nothing"


def test_frames_under_a_storm(storm, background, payload):
    client, server = make_pair()
    with client, server:
        client.settimeout(None)
        server.settimeout(None)
        got, _ = both_ways(lambda: tcpframe.read_bytes(server),
                           lambda: tcpframe.send_bytes(client, payload), background)
        assert got == payload
        _, got = both_ways(lambda: tcpframe.send_bytes(client, payload),
                           lambda: tcpframe.read_bytes(server), background)
        assert got == payload
    assert len(storm) > 10


def test_connection_under_a_storm(storm, background, payload):
    client, server = make_pair()
    with Connection(client) as a, Connection(server) as b:
        small = [os.urandom(n % 300) for n in range(20000)]
        got, _ = both_ways(lambda: [b.read_bytes() for _ in range(len(small) + 1)],
                           lambda: (a.send_many(small), a.send_bytes(payload)), background)
        assert got[:-1] == small and got[-1] == payload
    assert len(storm) > 10
