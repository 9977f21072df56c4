"""Rate-limited logging: a flood of bad clients costs a bounded number of lines."""
import logging
import socket

from tcpframe import echo
from tcpframe._ratelog import RateLimitedLog
from tcpframe.server import Server


def test_burst_then_a_count_of_what_was_held_back(caplog):
    now = [0.0]
    limited = RateLimitedLog(logging.getLogger("t"), burst=3, period=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="t"):
        for i in range(100):
            limited.log(logging.WARNING, "bad", "bad client %d", i)
        limited.log(logging.WARNING, "other", "another kind")   # kinds are counted apart
        assert limited.held_back() == 97
        now[0] = 11.0
        limited.log(logging.WARNING, "bad", "bad client %d", 100)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["bad client 0", "bad client 1", "bad client 2", "another kind",
                     "97 more 'bad' messages were not logged in 10 s", "bad client 100"]


def test_a_flood_of_bad_clients_costs_a_bounded_number_of_lines(caplog):
    with caplog.at_level(logging.DEBUG, logger="tcpframe.server"):
        with Server(echo.handle) as server:
            for _ in range(200):
                with socket.create_connection(server.address, timeout=10) as sock:
                    sock.sendall(b"not a header at all")
                    assert sock.recv(100) == b""      # dropped, and logged
    bad = [r for r in caplog.records if "bad frame" in r.getMessage()]
    assert 1 <= len(bad) <= 20, len(bad)
