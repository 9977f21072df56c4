"""Signals during blocked calls: a handler that raises stops the call, one
that returns lets the transfer finish intact."""
import os
import signal
import time

import pytest

import tcpframe
from conftest import trickle

pytestmark = pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs setitimer")


class Alarm(Exception):
    pass


@pytest.fixture
def alarm():
    """Arm SIGALRM with a handler; always disarmed and restored after."""
    previous = signal.getsignal(signal.SIGALRM)

    def arm(handler, delay, interval=0.0):
        signal.signal(signal.SIGALRM, handler)
        signal.setitimer(signal.ITIMER_REAL, delay, interval)

    yield arm
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, previous)


def raise_alarm(signum, frame):
    raise Alarm


@pytest.mark.parametrize("timeout", [None, 20.0], ids=["blocking", "with-timeout"])
def test_raising_handler_interrupts_a_blocked_read(tcp_pair, alarm, timeout):
    _, server = tcp_pair
    server.settimeout(timeout)
    alarm(raise_alarm, 0.2)
    start = time.monotonic()
    with pytest.raises(Alarm):
        tcpframe.read_bytes(server)
    assert time.monotonic() - start < 5


def test_keyboard_interrupt_propagates(tcp_pair, alarm):
    _, server = tcp_pair
    server.settimeout(None)
    alarm(signal.default_int_handler, 0.1)  # what Ctrl-C runs
    with pytest.raises(KeyboardInterrupt):
        tcpframe.read_string(server)


def test_raising_handler_interrupts_a_blocked_send(tcp_pair, alarm):
    client, _ = tcp_pair
    client.settimeout(None)
    alarm(raise_alarm, 0.2)
    with pytest.raises(Alarm):
        tcpframe.send_all(client, bytes(64 << 20))


@pytest.mark.parametrize("timeout", [None, 20.0], ids=["blocking", "with-timeout"])
def test_returning_handler_lets_the_transfer_finish(tcp_pair, alarm, background, timeout):
    client, server = tcp_pair
    server.settimeout(timeout)
    fired = []

    def count(signum, frame):
        fired.append(signum)
        # CPython's test_socket trick: a handler that clobbers errno must
        # not change what the interrupted call reports.
        try:
            os.close(-1)
        except OSError:
            pass

    payload = os.urandom(300)
    bg = background(trickle, client, tcpframe.encode_header(300) + payload, 10, 0.01)
    alarm(count, 0.005, 0.005)
    assert tcpframe.read_bytes(server) == payload
    bg.join()
    assert fired, "the handler never ran: the test proved nothing"


@pytest.mark.skipif(not hasattr(BaseException, "add_note"), reason="notes are 3.11+")
def test_interrupted_transfer_says_what_was_cut(tcp_pair, alarm, background):
    client, server = tcp_pair
    server.settimeout(None)
    client.sendall(b"00000100" + b"q" * 10)
    alarm(signal.default_int_handler, 0.2)
    with pytest.raises(KeyboardInterrupt) as info:
        tcpframe.read_bytes(server)
    assert info.value.__notes__ == [
        "tcpframe: interrupted after receiving 18 of 108 bytes of the frame; "
        "the stream is no longer on a frame boundary"
    ]
