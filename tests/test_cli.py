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
