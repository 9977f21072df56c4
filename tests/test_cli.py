"""python -m tcpframe, run as a user runs it: real subprocesses."""
import json
import signal
import socket
import subprocess
import sys

import pytest

from tcpframe import lesson

TIMEOUT = 60


def run(*args, **kwargs):
    return subprocess.run(
        [sys.executable, "-m", "tcpframe", *args],
        capture_output=True, text=True, timeout=TIMEOUT, **kwargs,
    )


@pytest.fixture
def serve():
    """Start `python -m tcpframe serve SERVICE --port 0`; yield its port."""
    procs = []

    def start(service):
        proc = subprocess.Popen(
            [sys.executable, "-u", "-m", "tcpframe", "serve", service, "--port", "0"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        procs.append(proc)
        line = proc.stdout.readline()  # "server: average service listening on H:P ..."
        assert "listening on 127.0.0.1:" in line, line + proc.stderr.read()
        return proc, int(line.split("127.0.0.1:")[1].split()[0])

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=TIMEOUT)


def free_port():
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return probe.getsockname()[1]


def test_demo_runs_end_to_end():
    result = run("demo")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Connection address: ('127.0.0.1'," in out
    assert "average = 2.5" in out
    assert "cannot average an empty list" in out


def test_help_teaches():
    result = run("--help")
    assert result.returncode == 0
    for word in ("demo", "serve", "average", "echo", "8 ASCII digits"):
        assert word in result.stdout
    assert "--port" in run("serve", "--help").stdout


def test_serve_average_answers_a_lesson_client_then_stops_on_ctrl_c(serve):
    proc, port = serve("average")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        lesson.send_string(sock, json.dumps([1, 2, 3, 4]))
        assert json.loads(lesson.read_string(sock)) == {"average": 2.5}
    result = run("average", "10", "2.5", "-3", "--port", str(port))
    assert result.returncode == 0, result.stderr
    assert float(result.stdout) == pytest.approx(9.5 / 3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, err
    assert "Connection address:" in out and "stopped" in out


def test_serve_echo_and_echo_client(serve):
    proc, port = serve("echo")
    result = run("echo", "hello", "wörld", "--port", str(port))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hello wörld\n"


def test_refused_connection_is_one_clear_line():
    port = free_port()
    result = run("average", "1", "2", "--port", str(port))
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0
    assert "connection refused" in result.stderr
    assert f"serve average --port {port}" in result.stderr


def test_bad_number_is_a_usage_error():
    result = run("average", "1", "two")
    assert result.returncode == 2
    assert "'two' is not a number" in result.stderr
    assert "not a finite number" in run("average", "nan").stderr


def test_port_in_use_is_one_clear_line():
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = run("serve", "average", "--port", str(port))
    assert result.returncode == 1
    assert f"port {port} on 127.0.0.1 is in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_near_overflow_average_and_error_reply(serve):
    _, port = serve("average")
    result = run("average", "1e308", "1e308", "--port", str(port))
    assert result.returncode == 0, result.stderr
    assert float(result.stdout) == 1e308
    result = run("average", "1" + "0" * 400, "--port", str(port))
    assert result.returncode == 1
    assert "error: the server refused: the numbers are too large" in result.stderr


def test_serve_help_lists_the_budgets():
    out = run("serve", "--help").stdout
    for option in ("--idle-timeout", "--frame-timeout", "--max-connections",
                   "--max-connections-per-peer", "--max-buffered", "--threaded"):
        assert option in out


def test_bad_budget_is_a_usage_error():
    result = run("serve", "average", "--idle-timeout", "-1")
    assert result.returncode == 2
    assert "negative" in result.stderr


def serve_with(*options):
    proc = subprocess.Popen(
        [sys.executable, "-u", "-m", "tcpframe", "serve", "average", "--port", "0",
         "--quiet", *options],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    line = proc.stdout.readline()
    assert "listening on 127.0.0.1:" in line, line + proc.stderr.read()
    return proc, int(line.split("127.0.0.1:")[1].split()[0])


def stop(proc):
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, err
    return out, err


def test_idle_sockets_from_another_address_do_not_lock_users_out():
    """The issue's lockout: 300 idle sockets from one other machine (here
    127.0.0.2) used to fill the threaded server; the asyncio server answers."""
    proc, port = serve_with()
    idle = []
    try:
        for _ in range(300):
            sock = socket.socket()
            sock.bind(("127.0.0.2", 0))
            sock.connect(("127.0.0.1", port))
            idle.append(sock)
        result = run("average", "1", "2", "3", "--port", str(port))
        assert result.returncode == 0, result.stderr
        assert float(result.stdout) == 2.0
    finally:
        for sock in idle:
            sock.close()
        stop(proc)


def test_a_shed_client_learns_why():
    proc, port = serve_with("--max-connections", "1")
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as first:
            # first is idle: the next client is served and first is shed,
            # with the protocol's error reply.
            result = run("average", "4", "6", "--port", str(port))
            assert result.returncode == 0, result.stderr
            assert float(result.stdout) == 5.0
            reply = json.loads(lesson.read_string(first))
            assert "max_connections=1" in reply["error"]
    finally:
        stop(proc)


def test_an_idle_client_is_closed_with_a_reason():
    proc, port = serve_with("--idle-timeout", "0.3")
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            reply = json.loads(lesson.read_string(sock))
            assert "idle" in reply["error"]
            assert sock.recv(1) == b""
    finally:
        stop(proc)


def test_client_says_the_server_closed_before_replying():
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        client = subprocess.Popen(
            [sys.executable, "-m", "tcpframe", "average", "1", "2", "--port", str(port)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        conn, _ = listener.accept()
        lesson.read_string(conn)      # take the request, then hang up
        conn.close()
        out, err = client.communicate(timeout=TIMEOUT)
    assert client.returncode == 1
    assert "closed the connection before replying" in err
    assert err.strip().count("\n") == 0


def test_threaded_server_still_serves():
    proc, port = serve_with("--threaded")
    try:
        result = run("average", "1", "2", "--port", str(port))
        assert result.returncode == 0, result.stderr
        assert float(result.stdout) == 1.5
    finally:
        stop(proc)


def test_echo_service_caps_a_request_at_one_mib_by_default():
    proc, port = serve_with_service("echo")
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"%08d" % ((1 << 20) + 1))     # announces 1 MiB + 1
            assert sock.recv(100) == b""                # refused, closed
        result = run("echo", "still", "serving", "--port", str(port))
        assert result.stdout == "still serving\n"
    finally:
        stop(proc)
    proc, port = serve_with_service("echo", "--max-size", "10")
    try:
        result = run("echo", "this is more than ten bytes", "--port", str(port))
        assert result.returncode == 1
        assert "closed the connection before replying" in result.stderr
    finally:
        stop(proc)


def serve_with_service(service, *options):
    proc = subprocess.Popen(
        [sys.executable, "-u", "-m", "tcpframe", "serve", service, "--port", "0",
         "--quiet", *options],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    line = proc.stdout.readline()
    assert "listening on 127.0.0.1:" in line, line + proc.stderr.read()
    return proc, int(line.split("127.0.0.1:")[1].split()[0])
