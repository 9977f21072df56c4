"""The type stubs match the API: mypy (a real subprocess) finds nothing in
the package, the examples and code that uses tcpframe right, and finds
exactly the marked mistakes in code that uses it wrong."""
import asyncio
import os
import re
import subprocess
import sys

import pytest

import tcpframe
from tcpframe import aio, testing
from tcpframe.server import Server

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TYPING = os.path.join(ROOT, "tests", "typing")

def mypy(*args, cache):
    pytest.importorskip("mypy", reason="mypy comes with the test extras: pip install -e '.[test]'")
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-error-summary", "--show-error-codes",
         "--cache-dir", str(cache), *args],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    return result.returncode, result.stdout + result.stderr


def test_the_package_and_right_usage_are_clean(tmp_path):
    # --strict for the user's code; tcpframe's own modules are checked below
    # in the default mode (as an installed package they are not reported).
    code, out = mypy("--strict", "--follow-imports=silent", os.path.join(TYPING, "right.py"),
                     cache=tmp_path)
    assert code == 0, out
    code, out = mypy("-p", "tcpframe", cache=tmp_path)
    assert code == 0, out


def test_the_classroom_examples_are_clean(tmp_path):
    examples = os.path.join(ROOT, "examples", "classroom")
    files = [os.path.join(examples, "test_grader.py")]
    students = os.path.join(examples, "students")
    files += sorted(os.path.join(students, d, "server.py") for d in os.listdir(students))
    for path in files:   # one at a time: every student's file is server.py
        code, out = mypy(path, cache=tmp_path)
        assert code == 0, out


def test_mistakes_are_caught_where_marked(tmp_path):
    path = os.path.join(TYPING, "wrong.py")
    with open(path, encoding="utf-8") as f:
        expected = {(n, m.group(1)) for n, line in enumerate(f, 1)
                    if (m := re.search(r"# error: ([\w-]+)", line))}
    code, out = mypy(path, cache=tmp_path)
    assert code == 1
    found = {(int(m.group(1)), m.group(2))
             for m in re.finditer(r"wrong\.py:(\d+): error: .*\[([\w-]+)\]", out)}
    assert found == expected, out


# -- at run time: a TypeError that names what was expected -----------------------------
NOT_SOCKETS = ["text", 5, None, b"bytes"]
SOCKET_TAKERS = {
    "send_bytes": lambda s: tcpframe.send_bytes(s, b"x"),
    "read_bytes": lambda s: tcpframe.read_bytes(s),
    "send_string": lambda s: tcpframe.send_string(s, "x"),
    "read_string": lambda s: tcpframe.read_string(s),
    "send_object": lambda s: tcpframe.send_object(s, [1]),
    "read_object": lambda s: tcpframe.read_object(s),
    "send_all": lambda s: tcpframe.send_all(s, b"x"),
    "receive_all": lambda s: tcpframe.receive_all(s, 1),
    "receive_into": lambda s: tcpframe.receive_into(s, bytearray(1)),
    "Connection": lambda s: tcpframe.Connection(s),
    "trickle": lambda s: testing.trickle(s, b"x"),
    "coalesce": lambda s: testing.coalesce(s, [b"x"]),
    "half_close": lambda s: testing.half_close(s),
    "reset": lambda s: testing.reset(s),
    "slow_reader": lambda s: testing.slow_reader(s, 1),
}


@pytest.mark.parametrize("bad", NOT_SOCKETS, ids=repr)
@pytest.mark.parametrize("name", SOCKET_TAKERS)
def test_a_non_socket_is_a_type_error_naming_a_socket(name, bad):
    with pytest.raises(TypeError, match="socket"):
        SOCKET_TAKERS[name](bad)


@pytest.mark.parametrize("bad", ["text", 5, None, [1], 1.5], ids=repr)
def test_non_bytes_data_is_a_type_error_naming_bytes(tcp_pair, bad):
    client, _ = tcp_pair
    with tcpframe.Connection(client) as conn:
        for send in (lambda d: tcpframe.send_bytes(client, d),
                     lambda d: tcpframe.send_all(client, d), tcpframe.encode_frame,
                     conn.send_bytes, lambda d: conn.send_many([d]),
                     lambda d: testing.trickle(client, d)):
            with pytest.raises(TypeError, match="bytes"):
                send(bad)


@pytest.mark.parametrize("bad", ["handler", 5, None])
def test_a_server_without_a_handler_function_is_a_type_error(bad):
    with pytest.raises(TypeError, match="handler"):
        Server(bad, "127.0.0.1", 0)

    async def start():
        with pytest.raises(TypeError, match="handler"):
            await aio.start_server(bad, "127.0.0.1", 0)

    asyncio.run(start())
