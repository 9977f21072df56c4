"""Grade a whole class: ``python -m tcpframe grade DIR... [--junit FILE]``.

Every student has a directory holding a ``server.py`` that takes its port as
its first argument.  Each server is started on a port of its own, graded
with tcpframe.grading.check_average_server, and stopped -- its whole
process group killed -- a few at a time.  The result is a table (student,
checks passed, mistakes found), optionally every failing student's report,
and optionally JUnit XML, which learning platforms and CI systems import.
"""

import os
import platform
import sys
import threading
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, List, Optional, Sequence, TextIO

from ._harness import NotReady, ServerProcess, pick_free_port
from .grading import (CHECKS, FAIL, MISTAKES, PASS, SKIP, CheckResult, GradeReport,
                      check_average_server, register, unregister)

__all__ = ["Student", "find_students", "grade_student", "grade_class", "format_table",
           "junit_xml", "main"]

SERVER_FILE = "server.py"
STARTS = "starts and listens on its port"
_IGNORED = {"__pycache__", "node_modules", "venv", "env"}


class NoStudents(Exception):
    """No student directory was found where one was expected."""


@dataclass
class Student:
    name: str              # the directory's path below the DIR given, e.g. "alice"
    directory: Path
    server: Optional[Path]  # None: the directory has no server.py


def _visible(path: Path) -> bool:
    return not path.name.startswith(".") and path.name not in _IGNORED


def find_students(dirs: Iterable[str]) -> List[Student]:
    """The students under each DIR: a directory holding server.py is a
    student (named by its path below DIR, so groups may nest); a direct
    subdirectory with no server.py anywhere below is a student who handed
    in none.  A DIR that holds server.py itself is one student."""
    students: List[Student] = []
    for given in dirs:
        root = Path(given)
        if not root.is_dir():
            raise NoStudents(f"{given}: no such directory")
        if (root / SERVER_FILE).is_file():
            students.append(Student(root.resolve().name, root, root / SERVER_FILE))
            continue
        found = []
        for directory, subdirs, files in os.walk(root):
            here = Path(directory)
            subdirs[:] = sorted(d for d in subdirs if _visible(Path(d)))
            if here != root and SERVER_FILE in files:
                found.append(Student(here.relative_to(root).as_posix(), here, here / SERVER_FILE))
                subdirs[:] = []  # a student's own subpackages are not students
        holders = {s.directory.relative_to(root).parts[0] for s in found}
        for child in sorted(root.iterdir()):
            if child.is_dir() and _visible(child) and child.name not in holders:
                found.append(Student(child.name, child, None))
        if not found:
            raise NoStudents(f"{given}: no students found -- expected one subdirectory per "
                             f"student, each with a {SERVER_FILE} that takes its port as its "
                             "first argument")
        students += found
    names = [s.name for s in students]
    if len(set(names)) != len(names):  # two DIRs with the same layout: say which
        for s in students:
            s.name = s.directory.as_posix()
    return sorted(students, key=lambda s: s.name)


@dataclass
class StudentGrade:
    student: Student
    report: GradeReport
    seconds: float


def _not_started(address, mistake: str, evidence: str) -> GradeReport:
    """The report of a server that never listened: every check skipped."""
    report = GradeReport(address)
    report.checks.append(CheckResult(STARTS, FAIL, mistake, evidence))
    report.checks += [CheckResult(name, SKIP, evidence=f"not run: {MISTAKES[mistake].title}, "
                                  "above") for name, _ in CHECKS]
    return report


def grade_student(student: Student, *, timeout: float = 5.0, ready_timeout: float = 10.0,
                  started: Optional[Callable[[ServerProcess], None]] = None) -> StudentGrade:
    """Start the student's server on a free port, grade it, stop it."""
    t0 = time.monotonic()
    if student.server is None:
        files = sorted(p.name for p in student.directory.iterdir() if p.suffix == ".py")
        report = _not_started(("127.0.0.1", 0), "no-server-file",
                              f"no {SERVER_FILE} in {student.directory}"
                              + (f" (found: {', '.join(files[:5])})" if files else ""))
        return StudentGrade(student, report, time.monotonic() - t0)
    port = pick_free_port()
    address = ("127.0.0.1", port)
    server = ServerProcess([SERVER_FILE, str(port)], address, cwd=str(student.directory))
    if started is not None:
        started(server)
    register(server)
    try:
        try:
            server.wait_ready(ready_timeout)
        except NotReady as exc:
            report = _not_started(address, exc.mistake, exc.evidence)
        else:
            start = time.monotonic()
            report = check_average_server(address, timeout=timeout, raise_on_failure=False,
                                          server=server)
            report.checks.insert(0, CheckResult(STARTS, PASS, seconds=start - t0))
        report.server = f"{student.name}/{SERVER_FILE}"
    finally:
        unregister(server)
        server.kill()  # how it takes Ctrl-C is not graded here
    return StudentGrade(student, report, time.monotonic() - t0)


def default_jobs() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def grade_class(students: Sequence[Student], *, jobs: Optional[int] = None,
                timeout: float = 5.0, ready_timeout: float = 10.0,
                progress: Optional[Callable[[StudentGrade], None]] = None) -> List[StudentGrade]:
    """Grade every student, `jobs` at a time; every server is stopped at
    the end, even on Ctrl-C."""
    running: List[ServerProcess] = []
    lock = threading.Lock()
    stopping = threading.Event()  # after Ctrl-C: the grades left are of killed servers

    def started(server: ServerProcess) -> None:
        with lock:
            running.append(server)

    def one(student: Student) -> StudentGrade:
        grade = grade_student(student, timeout=timeout, ready_timeout=ready_timeout,
                              started=started)
        if progress is not None and not stopping.is_set():
            progress(grade)
        return grade

    pool = ThreadPoolExecutor(max_workers=jobs or default_jobs(), thread_name_prefix="grade")
    futures = []
    try:
        futures = [pool.submit(one, s) for s in students]
        return [f.result() for f in futures]
    finally:
        stopping.set()
        for future in futures:
            future.cancel()
        with lock:
            for server in running:
                server.kill()
        pool.shutdown(wait=True)


def format_table(grades: Sequence[StudentGrade]) -> str:
    width = max([len("student")] + [len(g.student.name) for g in grades])
    lines = [f"{'student':<{width}}  {'checks':>7}  mistakes"]
    for g in grades:
        r = g.report
        score = f"{r.passed_count}/{len(r.checks)}"
        lines.append(f"{g.student.name:<{width}}  {score:>7}  {', '.join(r.mistakes) or '-'}")
    return "\n".join(lines)


def format_legend(grades: Sequence[StudentGrade]) -> str:
    found = list(dict.fromkeys(m for g in grades for m in g.report.mistakes))
    if not found:
        return ""
    width = max(len(m) for m in found)
    lines = ["mistakes found (what to do):"]
    lines += [f"  {m:<{width}}  {MISTAKES[m].title}: {MISTAKES[m].fix}" for m in found]
    return "\n".join(lines)


def junit_xml(grades: Sequence[StudentGrade]) -> bytes:
    """One testsuite; a testcase per student and check (classname = the
    student); a failure's message names the mistake, its text the evidence,
    why and what to do."""
    cases = [(g, c) for g in grades for c in g.report.checks]
    suite = ET.Element("testsuite", {
        "name": "tcpframe grade: average server",
        "tests": str(len(cases)),
        "failures": str(sum(c.status == FAIL for _, c in cases)),
        "errors": "0",
        "skipped": str(sum(c.status not in (PASS, FAIL) for _, c in cases)),
        "time": f"{sum(g.seconds for g in grades):.3f}",
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "hostname": platform.node(),
    })
    for g, c in cases:
        case = ET.SubElement(suite, "testcase", {"classname": g.student.name, "name": c.name,
                                                  "time": f"{c.seconds:.3f}"})
        if c.status == FAIL:
            m = MISTAKES[c.mistake or "crash"]
            failure = ET.SubElement(case, "failure", {"type": m.name,
                                                      "message": f"{m.title} [{m.name}]"})
            failure.text = f"seen: {c.evidence}\nwhy: {m.why}\ndo: {m.fix}"
        elif c.status != PASS:
            ET.SubElement(case, "skipped", {"message": c.evidence})
    root = ET.Element("testsuites", {k: suite.get(k, "") for k in
                                     ("name", "tests", "failures", "errors", "skipped", "time")})
    root.append(suite)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def main(dirs: Sequence[str], *, junit: Optional[str] = None, jobs: Optional[int] = None,
         timeout: Optional[float] = 5.0, details: bool = False, out: TextIO = sys.stdout,
         err: TextIO = sys.stderr) -> int:
    """The grade command: 0 when every student passed, 1 when any failed,
    2 when there was nothing to grade or the JUnit file could not be written."""
    if not timeout or timeout <= 0:
        print("error: --timeout must be more than 0 seconds: every wait is bounded", file=err)
        return 2
    try:
        students = find_students(dirs)
    except NoStudents as exc:
        print(f"error: {exc}", file=err)
        return 2
    jobs = min(jobs or default_jobs(), len(students))
    print(f"grading {len(students)} student{'s' * (len(students) != 1)}, {jobs} at a time "
          "(each server runs with your rights)", file=err, flush=True)
    t0 = time.monotonic()

    def progress(grade: StudentGrade) -> None:
        print(f"  {grade.student.name}: {grade.report.summary()} ({grade.seconds:.1f} s)",
              file=err, flush=True)

    try:
        grades = grade_class(students, jobs=jobs, timeout=timeout, progress=progress)
    except KeyboardInterrupt:
        print("interrupted: every server started was stopped", file=err)
        return 130
    failed = [g for g in grades if not g.report.passed]
    print(format_table(grades), file=out)
    print(f"{len(grades)} graded in {time.monotonic() - t0:.1f} s: "
          f"{len(grades) - len(failed)} passed, {len(failed)} failed", file=out)
    legend = format_legend(grades)
    if legend:
        print(legend, file=out)
    if details:
        for g in failed:
            print(f"\n== {g.student.name}\n{g.report}", file=out)
    if junit:
        try:
            Path(junit).write_bytes(junit_xml(grades))
        except OSError as exc:
            print(f"error: cannot write {junit}: {exc.strerror or exc}", file=err)
            return 2
        print(f"JUnit XML written to {junit}", file=err)
    return 1 if failed else 0
