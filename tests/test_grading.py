"""The grader names the mistake: a gallery of student servers, one per
mistake (examples/classroom/students), graded as a class; the pytest
plugin's failure output; the class grader's discovery and errors."""
import os
import pathlib
import pickle
import re
import shutil
import subprocess
import sys
import textwrap
import time
import xml.etree.ElementTree as ET

import pytest

from tcpframe import classroom, grading
from tcpframe.grading import CheckResult, GradeReport, Reply, check_average_server
from tcpframe.testing import pick_free_port

GALLERY = pathlib.Path(__file__).resolve().parent.parent / "examples" / "classroom" / "students"
EXPECTED = {
    "good": [],
    "dead": ["not-running"],
    "wrong_port": ["wrong-port"],
    "silent": ["no-reply"],
    "prints": ["prints-reply"],
    "no_header": ["not-a-frame"],
    "not_json": ["not-json"],
    "pickle": ["pickle-not-json"],
    "repr": ["repr-not-json"],
    "one_request": ["one-request-per-connection"],
    "single_recv": ["single-recv"],
    "two_sends": ["two-sends"],
    "no_eof": ["no-eof-handling"],
    "one_client": ["one-client"],
    "one_at_a_time": ["one-at-a-time"],
    "crash_on_empty": ["crash-on-bad-input"],
}
TIMEOUT = 3  # per reply; the gallery's silent servers wait this long


def run_grade(*args, timeout=240):
    return subprocess.run([sys.executable, "-m", "tcpframe", "grade", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


def processes_in(directory):
    """Processes whose working directory is below directory (the gallery's
    servers run in their student's directory)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cwd = os.readlink(f"/proc/{entry}/cwd")
            except OSError:
                continue
            if cwd.startswith(str(directory)):
                found.append(int(entry))
    return found


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="the CPU-spin check reads /proc")
def test_the_gallery_graded_as_a_class_names_each_mistake(tmp_path):
    assert sorted(p.name for p in GALLERY.iterdir() if p.is_dir()) == sorted(EXPECTED)
    junit = tmp_path / "grades.xml"
    start = time.monotonic()
    result = run_grade(GALLERY, "--junit", junit, "--jobs", 4, "--timeout", TIMEOUT)
    elapsed = time.monotonic() - start
    assert result.returncode == 1, result.stdout + result.stderr  # students failed

    # The table: student, checks passed, mistakes found.
    rows = {}
    for line in result.stdout.splitlines():
        m = re.match(r"(\w+)\s+(\d+)/(\d+)\s+(.+)$", line)
        if m:
            rows[m[1]] = (int(m[2]), int(m[3]), [] if m[4] == "-" else m[4].split(", "))
    assert {name: row[2] for name, row in rows.items()} == EXPECTED, result.stdout
    total = rows["good"][1]
    assert rows["good"][0] == total
    assert "16 graded" in result.stdout and "1 passed, 15 failed" in result.stdout
    assert "single-recv" in result.stdout and "receive_all_bytes" in result.stdout  # legend

    # Timings, from the progress lines: bounded, and a dead server at once.
    seconds = {m[1]: float(m[2]) for m in re.finditer(r"^  (\w+): .*\(([\d.]+) s\)$",
                                                       result.stderr, re.M)}
    assert set(seconds) == set(EXPECTED), result.stderr
    assert seconds["dead"] < 10 and seconds["wrong_port"] < 10
    assert seconds["silent"] < TIMEOUT + 5 and seconds["prints"] < TIMEOUT + 5
    assert seconds["no_eof"] < 10
    assert max(seconds.values()) < 6 * TIMEOUT + 10
    assert elapsed < 200
    print(f"class of {len(EXPECTED)} graded in {elapsed:.1f} s;",
          ", ".join(f"{k} {v:.1f} s" for k, v in sorted(seconds.items())))

    # JUnit XML: one testsuite, a testcase per student and check, each
    # failure typed with the mistake.
    root = ET.parse(junit).getroot()
    suites = root.findall("testsuite")
    assert len(suites) == 1
    cases = suites[0].findall("testcase")
    assert len(cases) == len(EXPECTED) * total == int(suites[0].get("tests"))
    failed = {}
    for case in cases:
        for failure in case.findall("failure"):
            failed.setdefault(case.get("classname"), []).append(failure.get("type"))
            assert "do:" in failure.text and failure.get("message")
    assert {k: sorted(set(v)) for k, v in failed.items()} == {
        k: v for k, v in EXPECTED.items() if v}
    assert int(suites[0].get("failures")) == sum(len(v) for v in failed.values())

    # Every server was stopped, the spinning one too.
    assert processes_in(GALLERY) == []


def test_dead_or_absent_server_fails_at_once():
    start = time.monotonic()
    report = check_average_server(("127.0.0.1", pick_free_port()), raise_on_failure=False)
    assert report.mistakes == ["not-running"]
    assert time.monotonic() - start < 10
    assert [c.status for c in report.checks[1:]] == ["skip"] * (len(report.checks) - 1)


def test_replies_are_classified_by_their_bytes():
    def decode(ended, data, payload=None):
        return grading._decode(Reply(ended, data, payload, data, 0.1), "[1]")[1]

    pickled = pickle.dumps({"a": 1})
    cases = {
        ("frame", b"00000003[1]", b"[1]"): None,
        ("frame", b"%08d" % len(pickled) + pickled, pickled): "pickle-not-json",
        ("frame", b"00000010{'a': 1.0}", b"{'a': 1.0}"): "repr-not-json",
        ("frame", b"00000005hello", b"hello"): "not-json",
        ("garbage", pickled, None): "not-a-frame",
        ("garbage", b"2.5\n", None): "not-a-frame",
        ("timeout", b"0000001", None): "not-a-frame",
        ("eof", b"00000010[1]", None): "not-a-frame",
        ("huge", b"99999999[1]", None): "not-a-frame",
        ("timeout", b"", None): "no-reply",
        ("eof", b"", None): "closes-without-reply",
        ("reset", b"", None): "closes-without-reply",
    }
    for (ended, data, payload), mistake in cases.items():
        finding = decode(ended, data, payload)
        assert (finding and finding.mistake) == mistake, (data, finding)
    assert "a pickle of {'a': 1}" in decode("garbage", pickled).evidence


def test_report_is_short_and_names_each_mistake_once():
    report = GradeReport(("127.0.0.1", 1))
    report.checks = [CheckResult("a", "pass"),
                     CheckResult("b", "fail", "single-recv", "seen one\nand two"),
                     CheckResult("c", "fail", "single-recv", "seen three")]
    report.checks += [CheckResult(name, "skip", evidence="not run: x") for name in "defg"]
    text = str(report)
    assert report.mistakes == ["single-recv"] and report.failed == ["b", "c"]
    assert text.count("why:") == 1 and text.count("do:") == 1
    assert "SKIP  d and 3 more (not run: x)" in text
    assert "              and two" in text  # evidence lines stay under their check
    assert report.results[1] == ("b", False, "single recv [single-recv]: seen one\nand two")
    assert isinstance(grading.GradeFailure(report), AssertionError)


def test_pytest_output_is_short_and_hides_the_grader(pytester):
    """A failing check shows the report (what, why, what to do), not the
    grader's source; a dead server fails in well under 10 s."""
    for name in ("two_sends", "dead"):
        pytester.mkdir(name)
        shutil.copy(GALLERY / name / "server.py", pytester.path / name / "server.py")
    pytester.makepyfile(test_inner="""
        from tcpframe.testing import check_average_server

        def test_two_sends(run_server):
            check_average_server(run_server("two_sends/server.py", "{port}"))

        def test_dead(run_server):
            check_average_server(run_server("dead/server.py", "{port}"))
    """)
    start = time.monotonic()
    result = pytester.runpytest_subprocess("-p", "tcpframe.testing", "-p", "no:cacheprovider",
                                           timeout=120)
    assert time.monotonic() - start < 30
    result.assert_outcomes(failed=2)
    out = result.stdout.str()
    failures = out.split("= FAILURES =", 1)[1].split("short test summary", 1)[0]
    assert len(failures.splitlines()) < 60, failures
    assert "two sends: Nagle stall [two-sends]" in failures and "do:  send header" in failures
    assert "not-running" in failures and "TypeError" in failures  # the dead one's last words
    assert "def check_average_server" not in failures and "grading.py" not in failures
    durations = re.findall(r"(\d+\.\d+)s call .*test_dead", pytester.runpytest_subprocess(
        "-p", "tcpframe.testing", "-p", "no:cacheprovider", "--durations=0", "-k", "dead",
        timeout=60).stdout.str())
    assert durations and float(durations[0]) < 10


def test_plugin_works_from_a_nested_conftest(pytester):
    """A conftest.py below the rootdir may not set pytest_plugins; importing
    the plugin's names works at any level, and run_server finds server.py
    next to the test file wherever pytest is run from."""
    sub = pytester.mkdir("exercise")
    shutil.copy(GALLERY / "good" / "server.py", sub / "server.py")
    shutil.copy(GALLERY / "good" / "server.py", sub / "student_server.py")
    (sub / "conftest.py").write_text("from tcpframe.testing import *  # noqa: F401,F403\n")
    (sub / "test_exercise.py").write_text(textwrap.dedent("""
        from tcpframe.average import average
        from tcpframe.testing import check_average_server

        def test_exercise(run_server):
            report = check_average_server(run_server("server.py", "{port}"))
            assert report.passed

        def test_a_module_next_to_the_test_file(run_server):
            host, port = run_server(["-m", "student_server"], "{port}")
            assert average([1, 2], host, port) == 1.5
    """))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=120)
    result.assert_outcomes(passed=2)


def test_class_grader_finds_students_and_reports_none(tmp_path):
    good = (GALLERY / "good" / "server.py").read_text()
    (tmp_path / "class" / "alice").mkdir(parents=True)
    (tmp_path / "class" / "alice" / "server.py").write_text(good)
    (tmp_path / "class" / "group2" / "bob" / "helpers").mkdir(parents=True)
    (tmp_path / "class" / "group2" / "bob" / "server.py").write_text(good)
    (tmp_path / "class" / "group2" / "bob" / "helpers" / "server.py").write_text("")
    (tmp_path / "class" / "carol").mkdir()
    (tmp_path / "class" / "carol" / "main.py").write_text(good)
    (tmp_path / "class" / ".git").mkdir()
    students = classroom.find_students([str(tmp_path / "class")])
    assert [(s.name, s.server is not None) for s in students] == [
        ("alice", True), ("carol", False), ("group2/bob", True)]

    carol = classroom.grade_student(students[1])
    assert carol.report.mistakes == ["no-server-file"] and "main.py" in str(carol.report.checks[0].evidence)

    (tmp_path / "empty").mkdir()
    result = run_grade(tmp_path / "empty", timeout=60)
    assert result.returncode == 2
    assert "no students found" in result.stderr and "server.py" in result.stderr
    assert "Traceback" not in result.stderr

    # A student grading their own server: the directory holding server.py.
    result = run_grade(tmp_path / "class" / "alice", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"^alice\s+(\d+)/\1\s+-$", result.stdout, re.M), result.stdout


def test_the_teachers_page_explains_every_mistake():
    page = (GALLERY.parent.parent.parent / "docs" / "teaching.md").read_text()
    for name in grading.MISTAKES:
        assert f"| `{name}` |" in page, name


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds leftover servers in /proc")
def test_ctrl_c_stops_every_server():
    import signal

    proc = subprocess.Popen(
        [sys.executable, "-m", "tcpframe", "grade", str(GALLERY), "--jobs", "4"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    time.sleep(2)  # servers are running: the silent one alone takes 5 s
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, out + err
    assert "interrupted" in err and "Traceback" not in err
    time.sleep(0.2)
    assert processes_in(GALLERY) == []
