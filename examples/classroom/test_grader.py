"""A teacher's test file for the lesson's exercise, and its proof.

Run from this folder:  pytest          (pytest.ini loads -p tcpframe.testing)

The grader passes the correct server and fails each buggy one for the
right reason, in the lesson's words.
"""
import pathlib

import pytest

from tcpframe.testing import check_average_server

HERE = pathlib.Path(__file__).resolve().parent


def test_correct_server_passes(run_server):
    address = run_server(str(HERE / "good_server.py"), "{port}")
    report = check_average_server(address)
    assert report.passed, str(report)


@pytest.mark.parametrize("script, check, words", [
    ("buggy_single_recv.py", "trickled request", "one recv() returns one whole message"),
    ("buggy_two_sends.py", "reply sent whole", "header and body in separate"),
    ("buggy_one_client.py", "20 clients at once", "accept in a loop"),
])
def test_buggy_server_fails_for_the_right_reason(run_server, script, check, words):
    address = run_server(str(HERE / script), "{port}")
    report = check_average_server(address, raise_on_failure=False)
    messages = {name: message for name, ok, message in report.results if not ok}
    assert check in messages, str(report)
    assert words in messages[check], str(report)
