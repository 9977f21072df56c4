"""Run a scenario in a child interpreter, so that a crash (a segfault, a
malloc abort, an ASan report) fails one test instead of killing the run.

The child inherits os.environ, so a suite run under ASan (LD_PRELOAD,
ASAN_OPTIONS, PYTHONMALLOC=malloc) runs its children under ASan too.  When
PYTHONMALLOC is not set, the child gets Python's debug allocator hooks
(PYTHONMALLOC=debug): freed memory is overwritten with 0xDD and fresh
memory with 0xCD, so a use-after-free or a read of uninitialised memory
crashes or shows, instead of reading stale bytes that happen to look right.

A scenario is Python source.  It runs after PRELUDE (below), finds its
parameters in the dict ``P`` and reports with ``report(key=value, ...)``;
run_scenario() returns the reported dict, or fails the test with the
child's exit status and the tail of its stderr.
"""
import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))

PRELUDE = """\
import errno, faulthandler, gc, json, os, select, socket, sys, threading, time
faulthandler.enable()
sys.path.insert(0, {tests_dir!r})
from conftest import make_pair  # real loopback TCP sockets
import tcpframe

P = json.loads(sys.argv[1])


def report(**fields):
    print("RESULT " + json.dumps(fields, default=repr), flush=True)


def describe(exc):
    return {{"type": type(exc).__name__, "message": str(exc),
             "mro": [k.__name__ for k in type(exc).__mro__],
             "errno": getattr(exc, "errno", None)}}


def closed_error(exc):
    # What an operation on a closed Connection or socket may honestly say.
    if isinstance(exc, ValueError) and not isinstance(exc, tcpframe.FrameError):
        return "closed" in str(exc)
    if isinstance(exc, OSError):
        return "closed" in str(exc) or exc.errno == errno.EBADF
    return False

"""


def child_env():
    env = dict(os.environ)
    env.setdefault("PYTHONMALLOC", "debug")
    env["PYTHONFAULTHANDLER"] = "1"
    return env


def describe_exit(returncode):
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


def clip(text, head=2000, tail=3000):
    """The start (the fatal error, the sanitizer's report) and the end."""
    if len(text) <= head + tail:
        return text
    return f"{text[:head]}\n[... {len(text) - head - tail} characters ...]\n{text[-tail:]}"


def run_scenario(code, timeout=60, **params):
    """Run PRELUDE + code in a child; return what it report()ed.

    Fails the calling test if the child crashed, hung or reported nothing.
    """
    source = PRELUDE.format(tests_dir=TESTS_DIR) + textwrap.dedent(code)
    try:
        proc = subprocess.run(
            [sys.executable, "-c", source, json.dumps(params)],
            env=child_env(),
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        err = exc.stderr or ""
        if isinstance(err, bytes):
            err = err.decode("utf-8", "replace")
        pytest.fail(f"the scenario hung for {timeout} s; stderr:\n{clip(err)}")
    results = [line[len("RESULT "):] for line in proc.stdout.splitlines()
               if line.startswith("RESULT ")]
    if proc.returncode != 0 or not results:
        pytest.fail(
            f"the scenario crashed or failed ({describe_exit(proc.returncode)}); "
            f"stdout tail:\n{proc.stdout[-1500:]}\nstderr:\n{clip(proc.stderr)}"
        )
    return json.loads(results[-1])
