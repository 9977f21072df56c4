"""The command line as a student meets it when things go wrong: one line
that says what happened and what to do, the right exit status, no
traceback; and the server's shutdown on SIGINT/SIGTERM.  Real subprocesses."""
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

import tcpframe

TIMEOUT = 60


def run(*args, timeout=TIMEOUT):
    return subprocess.run([sys.executable, "-m", "tcpframe", *args],
                          capture_output=True, text=True, timeout=timeout)


class FakeServer:
    """A listener on 127.0.0.1 that answers every connection with reply(sock)."""

    def __init__(self, reply):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.reply = reply
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                try:
                    self.reply(conn)
                except OSError:
                    pass

    def close(self):
        self.listener.close()


@pytest.fixture
def fake():
    made = []

    def make(reply):
        server = FakeServer(reply)
        made.append(server)
        return server

    yield make
    for server in made:
        server.close()


def one_line_error(result, *words):
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def read_request(conn):
    conn.settimeout(5)
    return tcpframe.read_bytes(conn)


@pytest.mark.parametrize("command", [["average", "1", "2"], ["echo", "hi"]])
def test_pointed_at_an_ssh_port(fake, command):
    def banner(conn):
        conn.sendall(b"SSH-2.0-OpenSSH_9.2p1\r\n")
        time.sleep(0.5)

    server = fake(banner)
    line = one_line_error(run(*command, "--port", str(server.port)),
                          "did not reply with a tcpframe message", "b'SSH-2.0-'")
    assert f"is port {server.port} the {command[0]} server?" in line


@pytest.mark.parametrize("reply, seen", [
    (b"2.5", None),                                    # a bare number is JSON: fine
    (pickle.dumps({"average": 2.5}), "\\x80"),
    (repr({'average': 2.5}).encode(), "{'average'"),
    (b"\xff\xfe not text", "\\xff"),
])
def test_a_reply_that_is_not_json(fake, reply, seen):
    def answer(conn):
        read_request(conn)
        tcpframe.send_bytes(conn, reply)

    server = fake(answer)
    result = run("average", "2", "3", "--port", str(server.port))
    if seen is None:
        one_line_error(result, "unexpected reply 2.5")
    else:
        one_line_error(result, "which is not JSON", "pickle or repr()", seen)


def test_a_server_that_closes_without_replying(fake):
    server = fake(lambda conn: read_request(conn))
    one_line_error(run("average", "1", "--port", str(server.port)),
                   "closed the connection before replying")


def test_connection_refused_says_to_start_the_server():
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    one_line_error(run("echo", "x", "--port", str(port)), "connection refused",
                   f"python -m tcpframe serve echo --port {port}")


def test_timeout_on_a_silent_server(fake):
    server = fake(lambda conn: (read_request(conn), time.sleep(5)))
    start = time.monotonic()
    line = one_line_error(run("average", "1", "--port", str(server.port), "--timeout", "0.5"),
                          "no reply from", "within 0.5 s", "--timeout")
    assert time.monotonic() - start < 30, line


def test_unknown_host():
    one_line_error(run("echo", "x", "--host", "no-such-host.invalid", "--timeout", "5"),
                   "cannot find the host 'no-such-host.invalid'")


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "soon"])
def test_bad_timeout_is_an_argparse_error(value):
    result = run("average", "1", "--timeout", value)
    assert result.returncode == 2 and "--timeout" in result.stderr
    assert "Traceback" not in result.stderr


def test_ctrl_c_in_a_client_exits_130_without_a_traceback(fake):
    server = fake(lambda conn: (read_request(conn), time.sleep(10)))
    proc = subprocess.Popen([sys.executable, "-m", "tcpframe", "average", "1", "--port",
                             str(server.port), "--timeout", "30"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)   # connected and waiting for the reply
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.strip() == "interrupted"


def test_version_and_the_console_script():
    result = run("--version")
    assert result.returncode == 0 and result.stdout.startswith(f"tcpframe {tcpframe.__version__}")
    script = shutil.which("tcpframe", path=os.path.dirname(sys.executable))
    assert script is not None, "the tcpframe console script is not installed next to python"
    result = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0 and result.stdout.startswith("usage: tcpframe")


# -- the server --------------------------------------------------------------------


def start_server(*options):
    proc = subprocess.Popen(
        [sys.executable, "-u", "-m", "tcpframe", "serve", "average", "--port", "0", *options],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert "listening on " in line, line + proc.stderr.read()
    port = int(line.split("listening on ")[1].split()[0].rsplit(":", 1)[1])
    return proc, port


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.parametrize("threaded", [False, True])
def test_server_stops_cleanly_on_a_signal(signum, threaded):
    proc, port = start_server(*(["--threaded"] if threaded else []))
    try:
        # A client mid-message and one idle when the signal comes.
        mid = socket.create_connection(("127.0.0.1", port), timeout=10)
        mid.sendall(b"00000010[1,")
        idle = socket.create_connection(("127.0.0.1", port), timeout=10)
        tcpframe.send_bytes(idle, b"[1, 2]")
        assert tcpframe.read_bytes(idle) == b'{"average": 1.5}'
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert out.rstrip().endswith("server: stopped"), out
    assert "Traceback" not in err, err
    # The clients did nothing wrong: the log must not say they did.
    assert "mid-message" not in err and "bad frame" not in err, err
    for sock in (mid, idle):
        assert sock.recv(100) == b""      # told the truth: the connection ended
        sock.close()


@pytest.mark.parametrize("option, value", [
    ("--client-timeout", "-1"), ("--client-timeout", "nan"), ("--max-clients", "-2"),
    ("--idle-timeout", "inf"), ("--max-memory", "lots"), ("--port", "70000"),
])
def test_serve_refuses_bad_options(option, value):
    result = run("serve", "average", option, value)
    assert result.returncode == 2 and option.split("-")[-1] in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("threaded", [False, True])
def test_zero_means_no_limit_and_the_server_serves(threaded):
    proc, port = start_server("--client-timeout", "0", "--max-clients", "0",
                              *(["--threaded"] if threaded else []))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            tcpframe.send_bytes(sock, b"[4]")
            assert tcpframe.read_bytes(sock) == b'{"average": 4.0}'
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0


def test_contradicting_budgets_are_one_line():
    one_line_error(run("serve", "echo", "--max-size", "1000", "--max-memory", "100"),
                   "max_memory=100 cannot hold one frame")


def has_ipv6():
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not has_ipv6(), reason="no IPv6 loopback on this machine")
@pytest.mark.parametrize("threaded", [False, True])
def test_host_ipv6_any_is_dual_stack(threaded):
    proc, port = start_server("--host", "::", *(["--threaded"] if threaded else []))
    try:
        for host in ("::1", "127.0.0.1"):
            result = run("average", "1", "3", "--host", host, "--port", str(port))
            assert result.returncode == 0 and result.stdout.strip() == "2.0", result.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=TIMEOUT)
    assert "[::1]:" in out and ("127.0.0.1" in out)


def test_log_lines_are_whole_and_name_the_peer():
    proc, port = start_server("--threaded")
    try:
        def client(i):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                for _ in range(20):
                    tcpframe.send_bytes(sock, f"[{i}, {i}]".encode())
                    tcpframe.read_bytes(sock)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(TIMEOUT)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=TIMEOUT)
    lines = [line for line in out.splitlines() if "asked about" in line]
    assert len(lines) == 8 * 20
    for line in lines:
        assert line.startswith("server: 127.0.0.1:") and line.count("asked about") == 1, line
        assert line.endswith("}"), line
