pytest_plugins = ["pytester"]

import socket
import threading

import pytest

# The kit's hostile peer, used by these tests too (one trickle, not two).
from tcpframe.testing import trickle  # noqa: F401

# Every blocking call in these tests runs under a timeout so that a broken
# build fails a test instead of hanging the run.
SAFETY_TIMEOUT = 30.0


def make_pair():
    """A connected (client, server) pair of real loopback TCP sockets."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname(), timeout=SAFETY_TIMEOUT)
        server, _ = listener.accept()
    client.settimeout(SAFETY_TIMEOUT)
    server.settimeout(SAFETY_TIMEOUT)
    return client, server


@pytest.fixture
def tcp_pair():
    client, server = make_pair()
    try:
        yield client, server
    finally:
        client.close()
        server.close()


class Background:
    """Run a function in a thread; join() re-raises what it raised."""

    def __init__(self, func, *args):
        self.result = None
        self.error = None
        self.thread = threading.Thread(target=self._run, args=(func, args), daemon=True)
        self.thread.start()

    def _run(self, func, args):
        try:
            self.result = func(*args)
        except BaseException as exc:  # reported by join()
            self.error = exc

    def join(self, timeout=SAFETY_TIMEOUT):
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "background call did not finish"
        if self.error is not None:
            raise self.error
        return self.result


@pytest.fixture
def background():
    started = []

    def start(func, *args):
        bg = Background(func, *args)
        started.append(bg)
        return bg

    yield start
    for bg in started:
        bg.thread.join(SAFETY_TIMEOUT)
