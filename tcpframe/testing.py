"""tcpframe.testing: pytest fixtures and hostile peers for socket exercises.

Load it in the top-level conftest.py or pytest.ini (``pytest_plugins =
["tcpframe.testing"]``, ``addopts = -p tcpframe.testing``), or on the command
line with ``pytest -p tcpframe.testing``.  In a conftest.py further down,
where pytest refuses ``pytest_plugins``, import it instead -- that works at
any level::

    from tcpframe.testing import *   # the fixtures and helpers below

It is not loaded automatically when tcpframe is installed: fixture names
such as ``tcp_pair`` and ``free_port`` are common, and a library should not
put them into every project's test run uninvited.

Fixtures:
  tcp_pair     a connected (client, server) pair of loopback TCP sockets
  free_port    a port no one else will take between now and your bind()
  run_server   start a student's server, wait until it accepts, stop it after

Hostile peers, one line each in a test:
  trickle(sock, data, chunk=1, delay=0.01)   a message in pieces
  coalesce(sock, frames)                     several frames in one send
  half_close(sock)                           "I am done sending" (FIN)
  reset(sock)                                vanish with RST mid-conversation
  slow_reader(sock, n, chunk=1, delay=0.01)  a reader that drains slowly

Grader: check_average_server(address) for the lesson's exercise, naming
each mistake found (tcpframe.grading).
"""

import os
import pathlib
import socket
import threading
import traceback
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import pytest

from ._harness import (  # noqa: F401 - re-exported
    Address,
    NotReady,
    ServerProcess,
    _serving,
    coalesce,
    connect,
    half_close,
    pick_free_port,
    reset,
    slow_reader,
    trickle,
    wait_accepting,
)
from .grading import MISTAKES, GradeFailure, GradeReport, check_average_server, register, unregister

__all__ = [
    "trickle", "coalesce", "half_close", "reset", "slow_reader", "connect",
    "pick_free_port", "ServerProcess", "GradeReport", "GradeFailure", "check_average_server",
    "tcp_pair", "free_port", "run_server",
]


def _substitute(args: Sequence[Any], port: int) -> List[Any]:
    """"{port}" alone becomes the port number (an int, for a function);
    inside a longer string, its digits ("--port={port}")."""
    return [port if a == "{port}" else a.replace("{port}", str(port)) if isinstance(a, str) else a
            for a in args]


@pytest.fixture
def tcp_pair():
    """A connected (client, server) pair of loopback TCP sockets (5 s timeouts)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = connect(listener.getsockname())
        server, _ = listener.accept()
    server.settimeout(5.0)
    try:
        yield client, server
    finally:
        client.close()
        server.close()


@pytest.fixture
def free_port() -> int:
    """A free loopback port, safe from the pick-then-bind race (see pick_free_port)."""
    return pick_free_port()


def _resolve(target: Union[str, Sequence[str]], here: pathlib.Path) -> List[str]:
    """The command for a script or ["-m", module] target: a relative script
    path is the test file's neighbour (or, failing that, the current
    directory's); a module is looked for next to the test file too."""
    command = [target] if isinstance(target, str) else list(target)
    if command and command[0] == "-m":
        return command
    script = pathlib.Path(command[0])
    if not script.is_absolute():
        candidates = [here / script, pathlib.Path.cwd() / script]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            pytest.fail(f"run_server: no file {command[0]!r} next to the test file ({here}) "
                        f"or in the current directory ({pathlib.Path.cwd()})", pytrace=False)
        command[0] = str(found)
    elif not script.is_file():
        pytest.fail(f"run_server: no file {command[0]!r}", pytrace=False)
    return command


@pytest.fixture
def run_server(request: pytest.FixtureRequest):
    """Start a student's server, wait until it accepts, stop and check it after.

        address = run_server("server.py", "--port", "{port}")     # a script
        address = run_server(["-m", "student.server"], port=8888)  # a module
        address = run_server(serve, "{port}")                      # a function

    "{port}" in the arguments becomes a free port (or give ``port=``).  A
    relative script path is found next to the test file (else in the
    current directory); a module can be imported from there.  A script or
    module runs in a subprocess; at teardown it gets Ctrl-C and must exit
    within ``stop_timeout``.  A function runs in a daemon thread; if it
    raises, the test fails with its traceback, and if it returns, its
    listening socket must be closed.  Every wait is bounded, so a broken
    server fails the test instead of hanging the run: one that exits, or
    listens on another port, fails at once.
    """
    here = pathlib.Path(request.path).resolve().parent
    started: List[Any] = []

    def start(target: Union[str, Sequence[str], Callable[..., Any]], *args: Any,
              port: Optional[int] = None, host: str = "127.0.0.1",
              ready_timeout: float = 10.0, stop_timeout: float = 5.0) -> Address:
        __tracebackhide__ = True
        port = port if port is not None else pick_free_port(host)
        address = (host, port)
        argv = _substitute(args, port)
        if callable(target):
            record: Dict[str, Optional[str]] = {"error": None}

            def run() -> None:
                try:
                    target(*argv)
                except BaseException:
                    record["error"] = traceback.format_exc()

            thread = threading.Thread(target=run, daemon=True, name="student-server")
            thread.start()
            started.append(("thread", thread, record, address))
            wait_accepting(address, ready_timeout, thread.is_alive)
            if not thread.is_alive() and not _serving(address):
                started.pop()
                pytest.fail(f"the server function ended before accepting a connection:\n"
                            f"{record['error'] or 'it returned'}", pytrace=False)
            return address
        command = _resolve(target, here)
        env = None
        if command[0] == "-m":
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(here), env.get("PYTHONPATH")]))
        server = ServerProcess([*command, *map(str, argv)], address, env=env)
        started.append(("process", server, stop_timeout, address))
        register(server)
        try:
            server.wait_ready(ready_timeout)
            return address
        except NotReady as exc:
            problem = exc
        started.pop()  # outside the except: pytest would show the chain
        unregister(server)
        server.kill()
        mistake = MISTAKES[problem.mistake]
        pytest.fail(f"{mistake.title} [{problem.mistake}]: {problem.evidence}\n  do: "
                    f"{mistake.fix}", pytrace=False)

    yield start

    failures = []
    for kind, obj, extra, address in started:
        if kind == "process":
            unregister(obj)
            problems = obj.stop(extra)
            if problems:
                failures.append("; ".join(problems) + f"\n--- its stderr ---\n{obj.stderr}")
        else:
            if extra["error"]:
                failures.append(f"the server function raised:\n{extra['error']}")
            elif not obj.is_alive() and _serving(address):
                failures.append(
                    f"the server function returned but {address[0]}:{address[1]} still "
                    "accepts connections: it leaked its listening socket (close it, or "
                    "use `with socket.socket(...) as s:`)"
                )
    if failures:
        pytest.fail("\n\n".join(failures), pytrace=False)
