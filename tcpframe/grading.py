"""tcpframe.grading: grade a student's average server, naming the mistake.

``check_average_server(address)`` runs the lesson's exercise against a
server and names, for every check that fails, the mistake the lesson
teaches about -- "single recv", "two sends: Nagle stall", "no handling of
EOF: CPU spin" -- with what was seen: the bytes, the timings, the server's
CPU time, its last words on stderr.  Each mistake has a stable name
(``report.mistakes``) for scripts, and a why and a what-to-do for people.

It stops early when going on would teach nothing: a server that is not
running, never replies, or replies in the wrong format fails in one check's
time, not ten.  No pytest needed: tcpframe.testing re-exports it for test
files, ``python -m tcpframe grade`` (tcpframe.classroom) runs it on a class.
"""

import ast
import functools
import json
import os
import socket
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

from ._harness import Address, ServerProcess, connect, cpu_seconds, last_lines
from ._harness import _serving, pid_listening_on, trickle
from ._tcpframe import encode_frame
from .safe_pickle import safe_loads

__all__ = ["Mistake", "MISTAKES", "CheckResult", "GradeReport", "GradeFailure",
           "check_average_server", "CHECKS"]

SEND = "send_all_bytes(conn, str(len(body)).zfill(8).encode() + body)"


@dataclass(frozen=True)
class Mistake:
    name: str   # stable, for scripts: "no-eof-handling"
    title: str  # the lesson's name for it
    why: str    # the concept behind it
    fix: str    # what to do


MISTAKES: Dict[str, Mistake] = {m.name: m for m in [
    Mistake("no-server-file", "no server.py",
            "the grader runs server.py in the student's directory",
            "name the server file server.py; it takes its port as its first argument"),
    Mistake("not-running", "the server is not running",
            "a server must bind its port, listen() and keep running to be reached",
            "run it yourself (python server.py 8888) and fix the error it prints"),
    Mistake("wrong-port", "listens on the wrong port",
            "a client connects to the port it was told; the grader gives the port as the "
            "first argument",
            "port = int(sys.argv[1]), then s.bind((\"\", port))"),
    Mistake("not-listening", "not listening where clients connect",
            "clients connect to 127.0.0.1 and the port given; the server must bind() that "
            "address (\"\" is every address) and call listen()",
            "s.bind((\"\", int(sys.argv[1]))), then s.listen(), first thing (before any input())"),
    Mistake("no-reply", "no reply at all",
            "the client waits for a reply message, and waits until one is sent on its "
            "connection",
            f"after reading a request, send the reply on the same connection: {SEND}"),
    Mistake("prints-reply", "prints instead of sending",
            "print() writes to the server's own terminal; the client receives only what "
            "is sent on its connection",
            f"replace print(reply) by sending it: {SEND}"),
    Mistake("closes-without-reply", "closes without replying",
            "the connection ended before any reply (an exception in the handler?)",
            "read the server's error output; reply to every request before closing"),
    Mistake("not-a-frame", "reply not a frame",
            "TCP is a stream without message boundaries: the client reads 8 ASCII digits "
            "of length, then exactly that many bytes (self-sizing messages)",
            f"put the 8-digit length before the body: {SEND}"),
    Mistake("not-json", "reply not JSON",
            "the exercise's messages are JSON, so that any client can read them",
            "body = json.dumps(reply).encode()"),
    Mistake("pickle-not-json", "pickle instead of JSON",
            "the exercise's protocol is JSON: a pickle is for Python only, and unpickling "
            "what a peer sent runs code the peer chose",
            "body = json.dumps(reply).encode(), not pickle.dumps(reply)"),
    Mistake("repr-not-json", "repr() instead of JSON",
            "str()/repr() writes Python's syntax ({'average': 2.5}: single quotes, True, "
            "None), which JSON readers reject",
            "body = json.dumps(reply).encode(), not str(reply).encode()"),
    Mistake("wrong-answer", "wrong average",
            "the reply is the average of the numbers sent, as a JSON number or "
            "{\"average\": x}",
            "average = sum(numbers) / len(numbers), sent as json.dumps({\"average\": average})"),
    Mistake("no-error-reply", "bad input answered as if fine",
            "an empty list has no average and \"a\" is not a number: the reply must say so",
            "check the request and reply {\"error\": \"why\"} to one that cannot be averaged"),
    Mistake("crash-on-bad-input", "a bad request kills the connection",
            "an exception in the handler ends the connection without a reply: the client "
            "never learns what was wrong",
            "catch it (try/except around json.loads and the average) and reply "
            "{\"error\": \"why\"}"),
    Mistake("crash", "the server crashed",
            "an exception nobody caught ended the whole server, for every client",
            "catch errors per client, in the handler, so that one client cannot end the server"),
    Mistake("one-client", "single accept()",
            "accept() takes one connection: called once, the server serves one client "
            "and stops",
            "call accept() in a loop: while True: conn, addr = s.accept(); ..."),
    Mistake("one-at-a-time", "one client at a time",
            "while the server waits in one client's recv(), no other client is served",
            "serve each client in its own thread: "
            "threading.Thread(target=handle, args=(conn,), daemon=True).start()"),
    Mistake("one-request-per-connection", "one request per connection",
            "a client may send many requests on one connection; the server reads until "
            "recv() returns b'' (the client closed)",
            "loop in the handler: read a message, reply, again, until the connection closes"),
    Mistake("single-recv", "single recv",
            "recv(1024) returns what has arrived: part of a message, or two messages "
            "glued together -- TCP keeps no message boundaries",
            "read exactly 8 header bytes, then exactly that many bytes (receive_all_bytes)"),
    Mistake("two-sends", "two sends: Nagle stall",
            "header and body in two send() calls: Nagle's algorithm holds the second "
            "until the client acknowledges the first, which it delays (~40 ms): every "
            "round trip stalls",
            f"send header and body in one call: {SEND}"),
    Mistake("no-eof-handling", "no handling of EOF: CPU spin",
            "recv() returns b'' once the client has closed; a loop with no `if not chunk:` "
            "calls it again forever, at 100 % CPU",
            "after every recv(): if not chunk: stop serving this client (receive_all_bytes "
            "raises)"),
    Mistake("dies-on-disconnect", "a client leaving mid-message breaks the server",
            "a client may vanish mid-message; that ends that client, not the server",
            "treat b'' or ConnectionResetError as the end of that client; keep accepting"),
]}

PASS, FAIL, SKIP, UNCHECKED = "pass", "fail", "skip", "unchecked"
_LABEL = {PASS: "PASS", FAIL: "FAIL", SKIP: "SKIP", UNCHECKED: "N/A "}


@dataclass
class CheckResult:
    """One check's outcome: status pass, fail, skip (not run: an earlier
    failure decides it) or unchecked (cannot be measured here)."""

    name: str
    status: str
    mistake: Optional[str] = None
    evidence: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status != FAIL

    @property
    def message(self) -> str:
        """The mistake's title and the evidence, in one line."""
        if self.status == FAIL and self.mistake:
            return f"{MISTAKES[self.mistake].title} [{self.mistake}]: {self.evidence}"
        return self.evidence


@dataclass
class GradeReport:
    """Every check's outcome, each failure with the mistake named."""

    address: Address
    checks: List[CheckResult] = field(default_factory=list)
    seconds: float = 0.0
    server: str = ""

    @property
    def passed(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def failed(self) -> List[str]:
        return [c.name for c in self.checks if c.status == FAIL]

    @property
    def passed_count(self) -> int:
        return sum(c.status == PASS for c in self.checks)

    @property
    def mistakes(self) -> List[str]:
        """The mistakes found, named as in MISTAKES, each once."""
        return list(dict.fromkeys(c.mistake for c in self.checks if c.status == FAIL and c.mistake))

    @property
    def results(self) -> List[Tuple[str, bool, str]]:
        """(check, ok, message) for each check."""
        return [(c.name, c.ok, c.message) for c in self.checks]

    def summary(self) -> str:
        if self.passed:
            return f"passed ({self.passed_count} of {len(self.checks)} checks; none failed)"
        return (f"FAILED: {self.passed_count} of {len(self.checks)} checks passed "
                f"({', '.join(self.mistakes)})")

    def __str__(self) -> str:
        where = f"{self.address[0]}:{self.address[1]}" + (f" ({self.server})" if self.server else "")
        lines = [f"average server at {where}: {self.summary()} in {self.seconds:.1f} s"]
        skipped: List[CheckResult] = []
        for c in self.checks + [CheckResult("", "")]:
            if c.status == SKIP and (not skipped or skipped[0].evidence == c.evidence):
                skipped.append(c)
                continue
            if skipped:
                more = f" and {len(skipped) - 1} more" if len(skipped) > 1 else ""
                lines.append(f"  SKIP  {skipped[0].name}{more} ({skipped[0].evidence})")
                skipped = [c] if c.status == SKIP else []
                if skipped:
                    continue
            if not c.name:
                break
            head = f"  {_LABEL[c.status]}  {c.name}"
            if c.status == FAIL and c.mistake:
                lines.append(f"{head}: {MISTAKES[c.mistake].title} [{c.mistake}]")
                seen = c.evidence.splitlines() or [""]
                lines.append(f"        seen: {seen[0]}")
                lines += [f"              {line}" for line in seen[1:]]
            elif c.evidence:
                lines.append(f"{head} ({c.evidence})")
            else:
                lines.append(head)
        for name in self.mistakes:
            m = MISTAKES[name]
            lines += [f"{m.title} [{name}]:", f"  why: {m.why}", f"  do:  {m.fix}"]
        return "\n".join(lines)


class GradeFailure(AssertionError):
    """check_average_server's failure: the report (short; ``.report``)."""

    def __init__(self, report: GradeReport) -> None:
        super().__init__(str(report))
        self.report = report


# ------------------------------------------------------------- replies


def show(data: bytes, limit: int = 80) -> str:
    """bytes as repr, cut to a readable length."""
    text = repr(data[:limit])
    return text + (f"... ({len(data)} bytes)" if len(data) > limit else "")


class Reply(NamedTuple):
    """What came back for one request, read byte-exactly."""

    ended: str                # "frame", "garbage", "huge", "eof", "reset", "timeout"
    data: bytes               # the frame, or whatever came instead
    payload: Optional[bytes]  # the frame's body, when a whole frame came
    first: Optional[bytes]    # what the first recv() for this reply returned
    seconds: float            # from the request to the reply (or giving up)


MAX_REPLY = 1 << 20  # an average's reply needs far less: a bigger header is a bug


def _frame_state(buf: bytes) -> str:
    head = buf[:8]
    if head and not all(48 <= b <= 57 for b in head):
        return "garbage"
    if len(buf) >= 8:
        if int(head) > MAX_REPLY:
            return "huge"
        if len(buf) >= 8 + int(head):
            return "frame"
    return "partial"


class Client:
    """One connection to the server under test.  Replies are read exactly:
    the bytes, in which recv() they came, how long they took."""

    GRACE = 1.0  # once bytes stop coming, how long a partial reply may pause

    def __init__(self, address: Address, timeout: float) -> None:
        self.timeout = timeout
        self.sock = connect(address, timeout)
        self.buffer = b""
        self.sent_at = time.monotonic()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sent_at = time.monotonic()
        try:
            self.sock.sendall(data)
        except OSError:
            pass  # the reply (none) tells the story

    def ask(self, request: Any) -> Reply:
        self.send(encode_frame(json.dumps(request).encode()))
        return self.reply()

    def reply(self, give_up: Optional[Callable[[], bool]] = None) -> Reply:
        """The next reply.  give_up(), asked while nothing has come for a
        second, can end the wait early (the server printed the answer)."""
        start = self.sent_at
        deadline = start + self.timeout
        first = None
        last = start
        ended = "timeout"
        while True:
            state = _frame_state(self.buffer)
            if state == "frame":
                end = 8 + int(self.buffer[:8])
                data, self.buffer = self.buffer[:end], self.buffer[end:]
                return Reply("frame", data, data[8:], first, time.monotonic() - start)
            if state == "huge" or (state == "garbage" and time.monotonic() - last > 0.2):
                ended = state
                break
            now = time.monotonic()
            limit = deadline if not self.buffer else min(deadline, last + self.GRACE)
            if state == "garbage":
                limit = min(limit, last + 0.2)  # collect a little more to show
            if now >= limit:
                ended = "garbage" if state == "garbage" else "timeout"
                break
            if give_up is not None and not self.buffer:
                if now - start > 1.0 and give_up():
                    break
                limit = min(limit, now + 0.25)
            self.sock.settimeout(limit - now)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                ended = "reset"
                break
            if not chunk:
                ended = "garbage" if state == "garbage" else "eof"
                break
            first = chunk if first is None else first
            last = time.monotonic()
            self.buffer += chunk
        data, self.buffer = self.buffer, b""
        return Reply(ended, data, None, first, time.monotonic() - start)


def _reply_number(value: Any) -> Optional[float]:
    if isinstance(value, dict):
        value = value.get("average")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _unpickled(data: bytes) -> Optional[str]:
    """What a pickle holds, shown, if data is a (plain-data) pickle."""
    if not data.startswith(b"\x80"):
        return None
    try:
        return repr(safe_loads(data))
    except Exception:  # not a pickle after all, or not plain data
        return "something" if data.rstrip().endswith(b".") else None


class Finding(NamedTuple):
    mistake: str
    evidence: str


_NOT_JSON = object()


def _decode(reply: Reply, asked: str) -> Tuple[Any, Optional[Finding]]:
    """The JSON value of a reply, or the finding that says why there is none.
    `asked` describes the request, for the evidence."""
    if reply.ended == "frame":
        payload = reply.payload or b""
        try:
            return json.loads(payload.decode("utf-8")), None
        except ValueError:
            pass
        held = _unpickled(payload)
        if held is not None:
            return _NOT_JSON, Finding("pickle-not-json", f"asked {asked}: the reply "
                                      f"{show(reply.data)} holds a pickle of {held}")
        try:
            ast.literal_eval(payload.decode("utf-8"))
            return _NOT_JSON, Finding("repr-not-json", f"asked {asked}: the reply's body "
                                      f"{show(payload)} is Python's repr(), not JSON")
        except (ValueError, SyntaxError, UnicodeDecodeError, MemoryError, RecursionError):
            pass
        return _NOT_JSON, Finding("not-json", f"asked {asked}: the reply's body "
                                  f"{show(payload)} is not JSON")
    if reply.ended == "huge":
        return _NOT_JSON, Finding("not-a-frame", f"asked {asked}: the reply {show(reply.data)} "
                                  f"announces {int(reply.data[:8])} bytes, more than a reply "
                                  "can need: is the header the body's length in bytes?")
    if reply.ended == "garbage" or (reply.data and not reply.data[:8].isdigit()):
        extra = ""
        held = _unpickled(reply.data)
        if held is not None:
            extra = f" (a pickle of {held}, where JSON was expected)"
        return _NOT_JSON, Finding("not-a-frame", f"asked {asked}: the reply {show(reply.data)} "
                                  f"does not start with 8 digits of length{extra}")
    if reply.data:
        want = int(reply.data[:8]) if len(reply.data) >= 8 else None
        said = (f"the header announced {want} bytes but {len(reply.data) - 8} came"
                if want is not None else "the 8-digit header never came whole")
        return _NOT_JSON, Finding("not-a-frame", f"asked {asked}: got {show(reply.data)}: "
                                  f"{said}")
    if reply.ended == "timeout":
        return _NOT_JSON, Finding("no-reply", f"asked {asked}: nothing came back in "
                                  f"{reply.seconds:.1f} s")
    how = "reset the connection (RST)" if reply.ended == "reset" else "closed the connection"
    return _NOT_JSON, Finding("closes-without-reply", f"asked {asked}: the server {how} "
                              f"after {reply.seconds * 1000:.0f} ms without a reply")


def _judge_average(reply: Reply, asked: Any, want: float) -> Optional[Finding]:
    value, finding = _decode(reply, json.dumps(asked))
    if finding:
        return finding
    got = _reply_number(value)
    if got is None or abs(got - want) > 1e-9:
        return Finding("wrong-answer", f"asked {json.dumps(asked)}: got {json.dumps(value)}, "
                       f"want {want:g}")
    return None


# -------------------------------------------------------------- checks


class _Gone(Exception):
    """Connecting was refused: the server no longer listens."""


class _NotChecked(Exception):
    """This check cannot be measured here (the reason)."""


class Grader:
    """The state shared by the checks on one server."""

    SPIN = 0.25  # CPU seconds per second, with no client: a spinning loop

    def __init__(self, address: Address, timeout: float, server: Optional[ServerProcess]) -> None:
        self.address = address
        self.timeout = timeout
        self.server = server
        self.pid: Optional[int] = server.pid if server else None
        if self.pid is None:
            pid = pid_listening_on(address[1])
            self.pid = pid if pid != os.getpid() else None

    def client(self) -> Client:
        try:
            return Client(self.address, self.timeout)
        except ConnectionRefusedError:
            raise _Gone() from None

    def ask(self, request: Any) -> Reply:
        with self.client() as client:
            return client.ask(request)

    def cpu_rate(self, settle: float = 0.15, window: float = 0.4) -> Tuple[float, float]:
        """(CPU seconds, wall seconds) the server used over a quiet window."""
        measure: Callable[[], Optional[float]]
        if self.server is not None:
            measure = self.server.cpu_seconds
        elif self.pid is not None:
            measure = functools.partial(cpu_seconds, [self.pid])
        else:
            raise _NotChecked("needs the server's process: start it with run_server, or "
                              "run it outside the test process")
        time.sleep(settle)
        before, t0 = measure(), time.monotonic()
        if before is None:
            raise _NotChecked("CPU time is read from /proc, which this system lacks")
        time.sleep(window)
        after, t1 = measure(), time.monotonic()
        if after is None:
            return 0.0, t1 - t0  # it exited meanwhile: the next check says so
        return after - before, t1 - t0

    def spinning(self, when: str) -> Optional[Finding]:
        cpu, wall = self.cpu_rate()
        if cpu / wall > self.SPIN:
            return Finding("no-eof-handling", f"{when}, the server kept using CPU: {cpu:.2f} s "
                           f"in {wall:.2f} s ({100 * cpu / wall:.0f} %) with no client sending")
        return None

    def still_serving(self, after: str) -> Optional[Finding]:
        reply = self.ask([2, 4])
        finding = _judge_average(reply, [2, 4], 3.0)
        if finding:
            return Finding(finding.mistake, f"{after}, a good request: {finding.evidence}")
        return None


def check_list(g: Grader) -> Optional[Finding]:
    server = g.server
    with g.client() as client:
        if server is None:
            reply = client.ask([1, 2, 3, 4])
        else:
            mark = server.output_mark()
            client.send(encode_frame(b"[1, 2, 3, 4]"))
            reply = client.reply(give_up=lambda: "2.5" in server.stdout_since(mark))
    return _judge_average(reply, [1, 2, 3, 4], 2.5)


def check_idle(g: Grader) -> Optional[Finding]:
    return g.spinning("after the client closed its connection")


def check_floats(g: Grader) -> Optional[Finding]:
    return _judge_average(g.ask([1.5, 2.5, -1.0]), [1.5, 2.5, -1.0], 1.0)


def _error_reply(request: Any) -> Callable[[Grader], Optional[Finding]]:
    def check(g: Grader) -> Optional[Finding]:
        asked = json.dumps(request)
        reply = g.ask(request)
        if reply.ended in ("eof", "reset", "timeout") and not reply.data:
            how = "sent nothing for" if reply.ended == "timeout" else "closed the connection after"
            return Finding("crash-on-bad-input", f"asked {asked}: the server {how} "
                           f"{reply.seconds:.1f} s without a reply")
        value, finding = _decode(reply, asked)
        if finding:
            return finding
        if _reply_number(value) is not None:
            return Finding("no-error-reply", f"asked {asked}: got {json.dumps(value)}, "
                           "as if it could be averaged")
        return g.still_serving(f"after {asked}")
    return check


def check_trickled(g: Grader) -> Optional[Finding]:
    request = encode_frame(b"[10, 20, 30]")
    with g.client() as client:
        client.sent_at = time.monotonic()
        try:
            trickle(client.sock, request, chunk=1, delay=0.01)
        except OSError:
            pass
        client.sent_at = time.monotonic()
        reply = client.reply()
    finding = _judge_average(reply, [10, 20, 30], 20.0)
    if finding:
        return Finding("single-recv", f"the request {show(request)} sent one byte at a time, "
                       f"10 ms apart: {finding.evidence.split(': ', 1)[1]}")
    return None


def check_two_requests(g: Grader) -> Optional[Finding]:
    with g.client() as client:
        first = _judge_average(client.ask([1, 3]), [1, 3], 2.0)
        if first:
            return first
        second = client.ask([5, 7])
    finding = _judge_average(second, [5, 7], 6.0)
    if finding and finding.mistake in ("no-reply", "closes-without-reply"):
        return Finding("one-request-per-connection", "the first request on a connection was "
                       f"answered; the second: {finding.evidence.split(': ', 1)[1]}")
    return finding


def check_two_in_one_segment(g: Grader) -> Optional[Finding]:
    with g.client() as client:
        client.send(b"".join(encode_frame(p) for p in (b"[1, 1]", b"[9, 11]")))
        first = client.reply()
        second = client.reply()
    finding = _judge_average(first, [1, 1], 1.0) or _judge_average(second, [9, 11], 10.0)
    if finding:
        return Finding("single-recv", "two requests sent in one segment, "
                       f"b'00000006[1, 1]00000007[9, 11]': {finding.evidence}")
    return None


def check_reply_whole(g: Grader) -> Optional[Finding]:
    rounds = 5
    split, times = [], []
    with g.client() as client:
        for _ in range(rounds):
            reply = client.ask([1, 2])
            finding = _judge_average(reply, [1, 2], 1.5)
            if finding:
                return finding
            times.append(reply.seconds)
            if reply.first is not None and len(reply.first) < len(reply.data):
                split.append(reply.first)
    if split:
        return Finding("two-sends", f"in {len(split)} of {rounds} replies the client's first "
                       f"recv() got {show(split[-1])} alone, the body later; round trips took "
                       f"{statistics.median(times) * 1000:.0f} ms (median; slowest "
                       f"{max(times) * 1000:.0f} ms), a reply sent whole takes about 1 ms")
    return None


def check_many_clients(g: Grader) -> Optional[Finding]:
    count = 20
    answered: List[bool] = [False] * count
    errors: List[str] = []
    barrier = threading.Barrier(count)

    def one(i: int) -> None:
        try:
            with Client(g.address, g.timeout) as client:
                barrier.wait(g.timeout)
                answered[i] = _judge_average(client.ask([i, i + 2]), [i, i + 2], i + 1.0) is None
        except Exception as exc:  # counted below
            errors.append(f"{type(exc).__name__}: {exc}")

    start = time.monotonic()
    # A client that connects and says nothing: a server that serves one
    # client at a time is stuck on it, and the others starve.
    with g.client():
        threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(count)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(max(0.1, start + g.timeout * 2 - time.monotonic()))
    served = sum(answered)
    if served == count:
        return None
    if not _serving(g.address):
        raise _Gone()
    return Finding("one-at-a-time", f"{served} of {count} clients were answered within "
                   f"{g.timeout:g} s while one other client stayed connected, sending nothing"
                   + (f" ({errors[0]})" if errors else ""))


def check_disconnect(g: Grader) -> Optional[Finding]:
    with g.client() as client:
        client.send(b"00000050[1, 2")
    time.sleep(0.1)
    finding = g.still_serving("after a client sent b'00000050[1, 2' and left")
    if finding:
        return Finding("dies-on-disconnect", finding.evidence)
    try:
        return g.spinning("after a client left in the middle of a message")
    except _NotChecked:
        return None  # "idle after a client leaves" says why


_ONE_CONNECTION = "two requests on one connection"

CHECKS: List[Tuple[str, Callable[[Grader], Optional[Finding]]]] = [
    ("a list of numbers", check_list),
    ("idle after a client leaves", check_idle),
    ("floats", check_floats),
    ("empty list", _error_reply([])),
    ("wrong types", _error_reply(["a", 1])),
    ("trickled request", check_trickled),
    (_ONE_CONNECTION, check_two_requests),
    ("two requests in one segment", check_two_in_one_segment),
    ("reply sent whole", check_reply_whole),
    ("20 clients at once", check_many_clients),
    ("client disconnects mid-message", check_disconnect),
]
_NEEDS_ONE_CONNECTION = {"two requests in one segment", "reply sent whole"}
# A first reply with one of these: every later check would say the same.
_FATAL_FIRST = {"no-reply", "prints-reply", "closes-without-reply", "not-a-frame", "not-json",
                "pickle-not-json", "repr-not-json", "crash", "not-running", "one-client"}


def _registered(address: Address) -> Optional[ServerProcess]:
    with _servers_lock:
        return _servers.get(tuple(address))


_servers: Dict[Tuple[Any, ...], ServerProcess] = {}
_servers_lock = threading.Lock()


def register(server: ServerProcess) -> None:
    """Let check_average_server(address) find the process behind address
    (its output, CPU time, exit status): run_server and the class grader
    register what they start."""
    with _servers_lock:
        _servers[tuple(server.address)] = server


def unregister(server: ServerProcess) -> None:
    with _servers_lock:
        if _servers.get(tuple(server.address)) is server:
            del _servers[tuple(server.address)]


def _refine(g: Grader, finding: Finding, mark: Any, served: bool) -> Tuple[Finding, bool]:
    """The mistake behind what a check saw, once the server's state is
    known; and whether grading should stop."""
    server = g.server
    if not _serving(g.address):
        if server is not None and not server.alive():
            server.kill()  # collects its last output
            status = server.proc.returncode
            if status == 0 and served:
                return Finding("one-client", "the server exited (status 0) after serving one "
                               "client; connecting again was refused"), True
            tail = last_lines(server.stderr_since(mark) or server.stderr, 4)
            return Finding("crash", f"the server exited with status {status} during this "
                           "check" + (f"; its last words:\n{tail}" if tail else "")), True
        if served or server is not None:
            return Finding("one-client", "the server is running but no longer listens: it "
                           "closed its listening socket after a client"), True
        return Finding("not-running", f"nothing listens on {g.address[0]}:{g.address[1]} "
                       "(connection refused)"), True
    if finding.mistake == "not-running":  # refused, yet the port is listened on
        return Finding("not-listening", f"{finding.evidence}, though port {g.address[1]} is "
                       f"listened on: is the server bound to another address than "
                       f"{g.address[0]}? (bind to \"\" or \"{g.address[0]}\")"), True
    if server is not None and finding.mistake == "no-reply":
        printed = server.stdout_since(mark)
        if "2.5" in printed:
            line = next(x for x in printed.splitlines() if "2.5" in x)
            return Finding("prints-reply", f"{finding.evidence}, while the server printed "
                           f"{line.strip()[:80]!r}"), True
    if server is not None and finding.mistake in ("closes-without-reply", "crash-on-bad-input"):
        tail = last_lines(server.stderr_since(mark), 1)
        if tail:
            finding = Finding(finding.mistake, f"{finding.evidence}; the server's error "
                              f"output ends: {tail}")
    if finding.mistake in ("no-reply", "closes-without-reply", "one-at-a-time"):
        try:
            spin = g.spinning("meanwhile")
        except _NotChecked:
            spin = None
        if spin:
            return Finding("no-eof-handling", f"{finding.evidence}; {spin.evidence}"), True
    return finding, finding.mistake == "no-eof-handling"


def _stuck(g: Grader) -> bool:
    try:
        return g.still_serving("afterwards") is not None
    except (_Gone, OSError):
        return True


def check_average_server(address: Address, *, timeout: float = 5.0,
                         raise_on_failure: bool = True,
                         server: Optional[ServerProcess] = None) -> GradeReport:
    """Grade a server for the lesson's exercise at address.

    The protocol graded: a request is one frame (8 ASCII digits of length,
    then the bytes) holding a JSON list of numbers; the reply is one frame
    holding the average as a JSON number, or ``{"average": x}``; a bad
    request gets any other JSON reply (an error), and the server keeps
    serving.  Every failed check names the mistake (MISTAKES) with what was
    seen.  The server's process -- given as ``server``, or the one
    run_server started, or the one /proc shows listening on the port -- is
    watched for CPU time (a loop spinning on a closed connection), its
    output and its exit.  Each wait is bounded by ``timeout``; a server
    that is gone, silent or replies in the wrong format stops the grading
    at the first check.

    Returns a GradeReport; raises GradeFailure (an AssertionError) carrying
    it when a check fails, unless raise_on_failure=False.
    """
    __tracebackhide__ = True  # pytest: show the report, not this function
    started = time.monotonic()
    server = server or _registered(address)
    g = Grader((address[0], address[1]), timeout, server)
    report = GradeReport(g.address, server=" ".join(server.command) if server else "")
    stop = ""
    for name, body in CHECKS:
        if stop:
            report.checks.append(CheckResult(name, SKIP, evidence=stop))
            continue
        if name in _NEEDS_ONE_CONNECTION and _ONE_CONNECTION in report.failed:
            report.checks.append(CheckResult(name, SKIP, evidence="not run: needs two requests "
                                             "on one connection"))
            continue
        mark = server.output_mark() if server else None
        t0 = time.monotonic()
        try:
            finding = body(g)
        except _NotChecked as exc:
            report.checks.append(CheckResult(name, UNCHECKED, evidence=f"not checked: {exc}"))
            continue
        except _Gone:
            finding = Finding("not-running", f"connecting to {g.address[0]}:{g.address[1]} "
                              "was refused")
        except OSError as exc:  # the connection broke where a check did not expect it
            finding = Finding("closes-without-reply", f"{type(exc).__name__}: {exc}")
        served = report.passed_count > 0
        halt = False
        if finding:
            finding, halt = _refine(g, finding, mark, served)
            if name == "a list of numbers" and finding.mistake in _FATAL_FIRST:
                halt = True
            elif not halt and time.monotonic() - t0 >= timeout and _stuck(g):
                # A wait ran out: if a new client is not answered either,
                # every later check would wait out its timeout too.
                finding = Finding(finding.mistake, f"{finding.evidence}; afterwards a new "
                                  "client got no answer either")
                halt = True
        if finding:
            report.checks.append(CheckResult(name, FAIL, finding.mistake, finding.evidence,
                                             time.monotonic() - t0))
        else:
            report.checks.append(CheckResult(name, PASS, seconds=time.monotonic() - t0))
        if halt and finding:
            stop = f"not run: {MISTAKES[finding.mistake].title}, above"
    report.seconds = time.monotonic() - started
    if raise_on_failure and not report.passed:
        raise GradeFailure(report)
    return report
