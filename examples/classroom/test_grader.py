"""A teacher's test file for the lesson's exercise, and its proof.

Run from this folder:  pytest          (pytest.ini loads -p tcpframe.testing)

students/ holds one directory per student, each with a server.py that takes
its port as its first argument: a correct one, and one for each mistake the
grader names.  The grader passes the first and names each other's mistake.
To grade them all at once, as a teacher grades a class:

    python -m tcpframe grade students
"""
import pytest

from tcpframe.testing import check_average_server


def test_correct_server_passes(run_server):
    # A relative path is found next to this file, wherever pytest runs from.
    address = run_server("students/good/server.py", "{port}")
    check_average_server(address)  # raises with a short report if a check fails


@pytest.mark.parametrize("student, mistake", [
    ("single_recv", "single-recv"),
    ("two_sends", "two-sends"),
    ("one_client", "one-client"),
    ("no_eof", "no-eof-handling"),
])
def test_buggy_server_fails_for_the_right_reason(run_server, student, mistake):
    address = run_server(f"students/{student}/server.py", "{port}")
    report = check_average_server(address, raise_on_failure=False)
    assert report.mistakes == [mistake], str(report)
