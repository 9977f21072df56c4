"""tcpframe.testing: fixtures, hostile peers and run_server's verdicts."""
import socket
import textwrap
import time

import pytest

import tcpframe
from tcpframe import _harness as harness
from tcpframe import testing as kit


def test_free_port_is_outside_the_ephemeral_range_and_bindable():
    low, high = harness._ephemeral_range()
    ports = {kit.pick_free_port() for _ in range(20)}
    assert len(ports) == 20  # never handed out twice
    for port in ports:
        assert not low <= port <= high
        with socket.create_server(("127.0.0.1", port)):
            pass


def test_hostile_peers(tcp_pair):
    client, server = tcp_pair
    kit.trickle(client, tcpframe.encode_frame(b"slow"), chunk=2, delay=0.001)
    assert tcpframe.read_bytes(server) == b"slow"
    kit.coalesce(client, [b"a", b"bb"])
    assert server.recv(100) == b"00000001a00000002bb"
    server.sendall(b"x" * 10)
    assert kit.slow_reader(client, 10, chunk=3, delay=0.001) == b"x" * 10
    kit.half_close(client)
    assert server.recv(1) == b""  # EOF, and the server may still reply:
    server.sendall(b"reply")
    assert client.recv(5) == b"reply"


def test_reset_sends_rst(tcp_pair):
    client, server = tcp_pair
    kit.reset(client)
    with pytest.raises(ConnectionResetError):
        server.recv(1)


def test_listening_is_seen_without_connecting():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        assert harness._listening(("127.0.0.1", port)) is False
        s.listen()
        assert harness._listening(("127.0.0.1", port)) is True


def run_inner(pytester, source, *args):
    pytester.makepyfile(test_inner=textwrap.dedent(source))
    return pytester.runpytest_subprocess("-p", "tcpframe.testing", *args, timeout=120)


def test_run_server_with_a_function(pytester):
    result = run_inner(pytester, """
        import socket, tcpframe

        def serve(port):
            with socket.create_server(("127.0.0.1", port)) as s:
                conn, _ = s.accept()
                with conn:
                    tcpframe.send_string(conn, tcpframe.read_string(conn).upper())

        def test_it(run_server):
            address = run_server(serve, "{port}")
            with socket.create_connection(address) as c:
                tcpframe.send_string(c, "hi")
                assert tcpframe.read_string(c) == "HI"
    """)
    result.assert_outcomes(passed=1)


def test_run_server_reports_a_crashing_function(pytester):
    result = run_inner(pytester, """
        import socket

        def serve(port):
            with socket.create_server(("127.0.0.1", port)) as s:
                s.accept()
                raise ZeroDivisionError("student bug")

        def test_it(run_server):
            socket.create_connection(run_server(serve, "{port}")).close()
            import time; time.sleep(0.3)
    """)
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*the server function raised*", "*ZeroDivisionError: student bug*"])


def test_run_server_reports_a_leaked_listening_socket(pytester):
    result = run_inner(pytester, """
        import socket
        kept = []

        def serve(port):
            s = socket.create_server(("127.0.0.1", port))
            kept.append(s)
            s.accept()[0].close()   # returns, the listener left open

        def test_it(run_server):
            socket.create_connection(run_server(serve, "{port}")).close()
            import time; time.sleep(0.3)
    """)
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*leaked its listening socket*"])


def test_run_server_reports_a_server_that_never_listens(pytester):
    result = run_inner(pytester, """
        def test_it(run_server):
            run_server(lambda port: __import__("time").sleep(5), "{port}", ready_timeout=0.5)
    """)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*never accepted a connection*listen()*"])


def test_run_server_script_crash_and_hang(pytester):
    pytester.makepyfile(crasher="""
        import socket, sys
        s = socket.create_server(("127.0.0.1", int(sys.argv[1])))
        s.accept()
        sys.exit("student server crashed: bad input")
    """, hanger="""
        import signal, socket, sys, time
        signal.signal(signal.SIGINT, signal.SIG_IGN)   # ignores Ctrl-C
        s = socket.create_server(("127.0.0.1", int(sys.argv[1])))
        time.sleep(60)
    """)
    result = run_inner(pytester, """
        import socket, time

        def test_crash(run_server):
            socket.create_connection(run_server("crasher.py", "{port}")).close()
            time.sleep(0.5)

        def test_hang(run_server):
            run_server("hanger.py", "{port}", stop_timeout=1)
    """)
    result.assert_outcomes(passed=2, errors=2)
    result.stdout.fnmatch_lines(["*the server crashed: it exited with status 1*",
                                 "*student server crashed: bad input*"])
    result.stdout.fnmatch_lines(["*did not stop within 1 s of Ctrl-C*"])


def test_grader_passes_tcpframes_own_average_server():
    from tcpframe import average
    from tcpframe.server import Server

    with Server(average.handle) as server:
        report = kit.check_average_server(server.address[:2])
    assert report.passed and len(report.checks) == 11, str(report)
    # In this process, the server's CPU time cannot be told from the grader's.
    idle = [c for c in report.checks if c.status == "unchecked"]
    assert [c.name for c in idle] == ["idle after a client leaves"]


def test_grader_raises_with_the_report():
    from tcpframe.server import Server

    def wrong(conn, address):  # always answers 42
        for _ in conn:
            conn.send_bytes(b"42")

    with Server(wrong) as server:
        start = time.monotonic()
        with pytest.raises(AssertionError) as info:
            kit.check_average_server(server.address[:2], timeout=2)
        assert time.monotonic() - start < 60
    assert "FAIL  a list of numbers" in str(info.value)
    assert "FAIL  empty list" in str(info.value)
