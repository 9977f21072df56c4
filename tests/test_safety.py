"""Regression tests for the memory-safety and concurrency defects of the C
binding (the issue tracker's defects 1-14 and the three "also" items,
numbered 15-17 here).  Each test's docstring names its defect.

Anything that can crash the interpreter runs in a child process
(crashcheck.run_scenario), so a crash fails that one test, with the child's
exit status and stderr, instead of killing the run.
"""
import functools
import io
import re
import select
import signal
import socket
import ssl
import sys
import threading
import time

import pytest

import tcpframe
from tcpframe import Connection, Decoder, FrameTooLarge, TransferTimeout
from conftest import make_pair
from crashcheck import run_scenario

needs_buffer_protocol_in_python = pytest.mark.skipif(
    sys.version_info < (3, 12), reason="__buffer__ (PEP 688) needs Python 3.12+"
)
needs_notes = pytest.mark.skipif(
    not hasattr(BaseException, "add_note"), reason="exception notes need Python 3.11+"
)
needs_setitimer = pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs setitimer")


class SocketSubclass(socket.socket):
    """Not exactly socket.socket: tcpframe drives it through its methods."""


def subclassed(sock):
    """The same connection as a socket.socket subclass (a wrapped socket)."""
    timeout = sock.gettimeout()
    sub = SocketSubclass(fileno=sock.detach())
    sub.settimeout(timeout)
    return sub


def wait_until(predicate, limit):
    end = time.monotonic() + limit
    while not predicate() and time.monotonic() < end:
        time.sleep(0.01)
    return predicate()


def exc_is(info, *names):
    """The child's describe()d exception is (a subclass of) one of names."""
    return any(name in info["mro"] for name in names)


# Helpers shared by the child scenarios below (they run after crashcheck's
# PRELUDE, so make_pair, tcpframe, describe, report... are there).
HELPERS = r'''
def recv_exact(sock, n):
    """Up to n bytes: fewer only at EOF."""
    chunks, got = [], 0
    while got < n:
        chunk = sock.recv(min(n - got, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def drain(sock, limit=10.0):
    """Everything until EOF (or `limit` seconds without data)."""
    sock.settimeout(limit)
    chunks = []
    try:
        while True:
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
    except (socket.timeout, ConnectionResetError):
        pass
    return b"".join(chunks)


def parse_frames(data):
    """(whole frames, bytes left after them, error or None)."""
    frames, i = [], 0
    while len(data) - i >= 8:
        head = bytes(data[i:i + 8])
        if not all(0x30 <= c <= 0x39 for c in head):
            return frames, bytes(data[i:i + 24]), "bad header %r after %d frames" % (head, len(frames))
        n = int(head)
        if len(data) - i - 8 < n:
            break
        frames.append(bytes(data[i + 8:i + 8 + n]))
        i += 8 + n
    return frames, bytes(data[i:]), None
'''


def scenario(code, timeout=90, **params):
    return run_scenario(HELPERS + code, timeout=timeout, **params)


def assert_whole_frames(result, expected):
    """The child's peer saw whole frames, a prefix of `expected`, nothing else."""
    assert result["parse_error"] is None, f"garbage on the wire: {result['parse_error']}"
    assert result["leftover"] == "", f"a partial frame on the wire: {result['leftover']!r}"
    frames = result["frames"]
    assert frames == expected[: len(frames)], f"frames on the wire {frames!r}, expected a prefix of {expected!r}"


# ------------------------------------------------------------------ defect 1

SEND_MANY_GENERATOR_CLOSES = r'''
client, server = make_pair()
conn = tcpframe.Connection(client)
del client                      # the Connection holds the only reference
listener = socket.create_server(("127.0.0.1", 0))
extra = {}


def frames():
    yield b"first"
    conn.close()                # drops the socket while send_many runs
    if P["reuse"]:
        # A new socket at once: it may be given the freed socket's memory
        # and file descriptor.
        other = socket.socket()
        other.settimeout(10)
        other.connect(listener.getsockname())
        extra["other"] = other
    yield b"second"


try:
    outcome = {"returned": conn.send_many(frames())}
except Exception as exc:
    outcome = {"raised": describe(exc), "closed_error": closed_error(exc)}
leaked = b""
if "other" in extra:
    peer, _ = listener.accept()
    peer.settimeout(0.5)
    try:
        leaked = peer.recv(1000)
    except socket.timeout:
        pass
got, leftover, error = parse_frames(drain(server, 2.0))
report(outcome=outcome, leaked=leaked.decode("latin-1"),
       frames=[f.decode() for f in got], leftover=leftover.decode("latin-1"), parse_error=error)
'''


def assert_closed_mid_call(result, expected_frames):
    outcome = result["outcome"]
    if "raised" in outcome:
        exc = outcome["raised"]
        assert exc_is(exc, "ValueError", "OSError"), exc
        assert not exc_is(exc, "FrameError"), exc
        if exc_is(exc, "ValueError"):
            assert "closed" in exc["message"], exc
    else:
        # Only acceptable if every frame really went to the right peer.
        assert result["frames"] == expected_frames, outcome
    assert_whole_frames(result, expected_frames)


@pytest.mark.parametrize("reuse", [False, True], ids=["closed", "closed-and-reused"])
def test_send_many_generator_that_closes_the_connection(reuse):
    """Defect 1: send_many held a borrowed socket while running the
    iterable; a generator that closes the Connection made it use a freed
    socket (a crash, or frames sent down another connection)."""
    result = scenario(SEND_MANY_GENERATOR_CLOSES, reuse=reuse)
    assert result["leaked"] == "", (
        f"send_many sent {result['leaked']!r} down a connection it was never given"
    )
    assert_closed_mid_call(result, ["first", "second"])


GETTIMEOUT_CLOSES = r'''
client, server = make_pair()


class Wrapper:
    """A duck-typed socket whose gettimeout() closes the owning Connection."""

    def __init__(self, sock):
        self.sock = sock
        self.armed = True

    def gettimeout(self):
        if self.armed:
            self.armed = False
            conn.close()
        return self.sock.gettimeout()

    def recv_into(self, buffer, *args):
        return self.sock.recv_into(buffer, *args)

    def sendall(self, data, *args):
        return self.sock.sendall(data, *args)

    def close(self):
        self.sock.close()


conn = tcpframe.Connection(Wrapper(client))
del client                      # the Connection holds the only reference
op = P["op"]
try:
    if op == "send_bytes":
        r = conn.send_bytes(b"payload")
    elif op == "send_many":
        r = conn.send_many([b"payload"])
    elif op == "read_bytes":
        r = conn.read_bytes()
    else:
        r = tcpframe.send_bytes(conn, b"payload")
    outcome = {"returned": repr(r)}
except Exception as exc:
    outcome = {"raised": describe(exc), "closed_error": closed_error(exc)}
got, leftover, error = parse_frames(drain(server, 2.0))
report(outcome=outcome, frames=[f.decode() for f in got], leftover=leftover.decode("latin-1"),
       parse_error=error)
'''


@pytest.mark.parametrize("op", ["send_bytes", "send_many", "read_bytes", "module_send_bytes"])
def test_gettimeout_that_closes_the_connection(op):
    """Defect 1: stream_open took its reference to the socket only after
    calling gettimeout(); one that closes the Connection freed the socket
    under the call (use-after-free)."""
    result = scenario(GETTIMEOUT_CLOSES, op=op)
    assert_closed_mid_call(result, [] if op == "read_bytes" else ["payload"])


BUFFER_METHOD_CLOSES = r'''
client, server = make_pair()
conn = tcpframe.Connection(client)
del client


class Closer:
    def __buffer__(self, flags):
        conn.close()
        return memoryview(b"closer")


try:
    outcome = {"returned": conn.send_many([b"first", Closer(), b"third"])}
except Exception as exc:
    outcome = {"raised": describe(exc), "closed_error": closed_error(exc)}
got, leftover, error = parse_frames(drain(server, 2.0))
report(outcome=outcome, frames=[f.decode() for f in got], leftover=leftover.decode("latin-1"),
       parse_error=error)
'''


@needs_buffer_protocol_in_python
def test_send_many_item_whose_buffer_closes_the_connection():
    """Defect 1: an item's __buffer__ that closes the Connection during
    send_many freed the socket it was about to use."""
    result = scenario(BUFFER_METHOD_CLOSES)
    assert_closed_mid_call(result, ["first", "closer", "third"])


# ------------------------------------------------------------------ defect 2

LIST_CLEARED_BY_THREAD = r'''
client, server = make_pair()
client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 16)
server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
conn = tcpframe.Connection(client)
N, SIZE = P["n"], P["size"]


def payload(i):
    return bytes([i % 251]) * SIZE


# Distinct objects, so clear() frees those not being sent.  The first batch
# (500 frames, 32 MiB) cannot leave until the peer reads: send_many is
# certainly blocked inside it, GIL released, when the list is cleared.
frames = [payload(i) for i in range(N)]
outcome = {}


def sender():
    try:
        outcome["returned"] = conn.send_many(frames)
    except Exception as exc:
        outcome["raised"] = describe(exc)


t = threading.Thread(target=sender, daemon=True)
t.start()
server.settimeout(30)
first = server.recv(1 << 16)
time.sleep(0.1)
frames.clear()
gc.collect()
rest = []
r = threading.Thread(target=lambda: rest.append(drain(server, 30)), daemon=True)
r.start()
t.join(60)
sender_done = not t.is_alive()
conn.close()
r.join(60)
got, leftover, error = parse_frames(first + (rest[0] if rest else b""))
wrong = [i for i, p in enumerate(got) if p != payload(i)]
report(outcome=outcome, sender_done=sender_done, count=len(got), wrong=wrong[:5],
       leftover=len(leftover), parse_error=error)
'''


def test_send_many_list_cleared_by_another_thread():
    """Defect 2: send_many kept a borrowed pointer into the list's item
    array across the released GIL; another thread's lst.clear() freed it
    (segfault, or freed objects sent as frames)."""
    result = scenario(LIST_CLEARED_BY_THREAD, n=600, size=1 << 16)
    assert result["sender_done"]
    assert result["parse_error"] is None and result["leftover"] == 0, result
    assert result["wrong"] == [], f"frames with the wrong payload: {result['wrong']}"
    outcome = result["outcome"]
    if "returned" in outcome:
        assert outcome["returned"] == result["count"] == 600, result
    else:
        assert exc_is(outcome["raised"], "RuntimeError", "ValueError", "BufferError"), outcome


LIST_CLEARED_BY_BUFFER = r'''
client, server = make_pair()
conn = tcpframe.Connection(client)


class Clearer:
    def __buffer__(self, flags):
        frames.clear()
        return memoryview(b"clearer")


def payload(i):
    return bytes([65 + i % 26]) * (i * 97 % 3000)   # some copied, some by reference


frames = [Clearer()] + [payload(i) for i in range(1, 60)]
expected = [b"clearer"] + [payload(i) for i in range(1, 60)]
try:
    outcome = {"returned": conn.send_many(frames)}
except Exception as exc:
    outcome = {"raised": describe(exc)}
conn.close()
got, leftover, error = parse_frames(drain(server, 5.0))
report(outcome=outcome, count=len(got), prefix_ok=got == expected[:len(got)],
       leftover=len(leftover), parse_error=error)
'''


@needs_buffer_protocol_in_python
def test_send_many_list_cleared_by_an_items_buffer_method():
    """Defect 2: an item's __buffer__ that clears the list freed the item
    array send_many was still reading (segfault)."""
    result = scenario(LIST_CLEARED_BY_BUFFER)
    assert result["parse_error"] is None and result["leftover"] == 0, result
    assert result["prefix_ok"], result
    outcome = result["outcome"]
    if "returned" in outcome:
        assert outcome["returned"] == result["count"], result
    else:
        assert exc_is(outcome["raised"], "RuntimeError", "ValueError", "BufferError"), outcome


# ------------------------------------------------------------------ defect 3

# The peer reads frame by frame and stops at the first header that is not
# 8 digits, or announces more than any frame here: that is the defect (the
# rest of a 100 MB frame is not worth reading).
PEER_READER = r'''
peer = {"frames": 0, "bad": None, "trailing": ""}
first_header = threading.Event()
grown = threading.Event()


def peer_reader(expected):
    server.settimeout(60)
    k = 0
    try:
        while True:
            head = recv_exact(server, 8)
            if k == 0 and head:
                first_header.set()
                grown.wait(30)
            if len(head) < 8:
                peer["trailing"] = head.decode("latin-1")
                break
            if not head.isdigit():
                peer["bad"] = "frame %d: header %r" % (k, head)
                break
            n = int(head)
            if n > (1 << 20):
                peer["bad"] = "frame %d announces %d bytes" % (k, n)
                break
            body = recv_exact(server, n)
            if len(body) < n:
                peer["trailing"] = (head + body)[:40].decode("latin-1")
                break
            if body != expected(k):
                peer["bad"] = "frame %d: wrong payload %r" % (k, body[:20])
                break
            k += 1
    except OSError as exc:
        peer["bad"] = "peer: %r" % (exc,)
    peer["frames"] = k
    server.close()          # stops a sender stuck on garbage with a reset


def grow(ba):
    try:
        ba.extend(bytes(tcpframe.MAX_SIZE + 1 - len(ba)))
        return "grown"
    except BufferError as exc:
        return "refused: %s" % exc
'''

GROWN_BY_THREAD = PEER_READER + r'''
client, server = make_pair()
client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 16)
server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
conn = tcpframe.Connection(client)
chunk = b"c" * (1 << 16)
ba = bytearray(b"grow me")
# The first batch (500 frames, 32 MiB) cannot leave before the peer reads;
# the bytearray, in the second batch, is grown meanwhile.
frames = [chunk] * 500 + [ba]
reader = threading.Thread(target=peer_reader,
                          args=(lambda k: chunk if k < 500 else b"grow me",), daemon=True)
reader.start()
outcome = {}


def sender():
    try:
        outcome["returned"] = conn.send_many(frames)
    except Exception as exc:
        outcome["raised"] = describe(exc)


t = threading.Thread(target=sender, daemon=True)
t.start()
first_header.wait(30)
growth = grow(ba)
grown.set()
t.join(60)
sender_done = not t.is_alive()
conn.close()
reader.join(60)
report(outcome=outcome, growth=growth, sender_done=sender_done, **peer)
'''

GROWN_BY_BUFFER = PEER_READER + r'''
client, server = make_pair()
conn = tcpframe.Connection(client)
ba = bytearray(b"grow me")
growth = "not tried"


class Grower:
    calls = 0

    def __buffer__(self, flags):
        global growth
        Grower.calls += 1
        if Grower.calls == 2:       # after the sizes were checked
            growth = grow(ba)
        return memoryview(b"grower")


reader = threading.Thread(target=peer_reader,
                          args=(lambda k: [b"grower", b"grow me"][k] if k < 2 else None,),
                          daemon=True)
reader.start()
grown.set()
try:
    outcome = {"returned": conn.send_many([Grower(), ba])}
except Exception as exc:
    outcome = {"raised": describe(exc)}
conn.close()
reader.join(60)
report(outcome=outcome, growth=growth, sender_done=True, **peer)
'''


def assert_no_garbage_header(result, frames_if_refused):
    assert result["sender_done"], result
    assert result["bad"] is None, f"the peer saw garbage: {result['bad']}"
    assert result["trailing"] == "", f"a partial frame on the wire: {result['trailing']!r}"
    outcome = result["outcome"]
    if result["growth"] == "grown":
        assert "raised" in outcome, f"a {tcpframe.MAX_SIZE + 1}-byte frame was 'sent': {outcome}"
        assert exc_is(outcome["raised"], "FrameTooLarge", "BufferError"), outcome
    elif "returned" in outcome:
        assert outcome["returned"] == result["frames"] == frames_if_refused, result
    else:
        assert exc_is(outcome["raised"], "FrameTooLarge", "BufferError"), outcome


def test_bytearray_grown_past_max_size_by_another_thread():
    """Defect 3: a bytearray grown past MAX_SIZE between send_many's size
    check and its send: the header encode failed unchecked and
    uninitialised heap bytes went out as the header."""
    result = scenario(GROWN_BY_THREAD)
    assert_no_garbage_header(result, 501)


@needs_buffer_protocol_in_python
def test_bytearray_grown_past_max_size_by_a_later_buffer_call():
    """Defect 3: the same, with the growth done by an earlier item's
    __buffer__ when send_many asks for it the second time."""
    result = scenario(GROWN_BY_BUFFER)
    assert_no_garbage_header(result, 2)


# ------------------------------------------------------------------ defect 4

REENTRANT_RECV_INTO = r'''
client, server = make_pair()


class Reentrant(socket.socket):
    nested = None

    def recv_into(self, buffer, *args):
        if self.nested is None:
            self.nested = "running"
            try:
                self.nested = {"returned": classify(conn.read_bytes())}
            except Exception as exc:
                self.nested = {"raised": describe(exc)}
                raise
        return super().recv_into(buffer, *args)


A, B = b"A" * 40000, b"B" * 40000


def classify(p):
    return "A" if p == A else "B" if p == B else "other: %d bytes, %d A, %d B" % (
        len(p), p.count(b"A"), p.count(b"B"))


sock = Reentrant(fileno=server.detach())
sock.settimeout(10)
conn = tcpframe.Connection(sock)
client.sendall(tcpframe.encode_frame(A) + tcpframe.encode_frame(B))
select.select([sock], [], [], 5)
time.sleep(0.05)
try:
    outer = {"returned": classify(conn.read_bytes())}
except Exception as exc:
    outer = {"raised": describe(exc)}
sock.settimeout(2)
later = []
for _ in range(2):
    try:
        later.append(classify(conn.read_bytes()))
    except Exception as exc:
        later.append(describe(exc))
        break
report(outer=outer, nested=sock.nested, later=later)
'''

REENTRANT_SIGNAL = r'''
client, server = make_pair()
conn = tcpframe.Connection(server)
A, B = b"A" * 40000, b"B" * 40000


def classify(p):
    return "A" if p == A else "B" if p == B else "other: %d bytes, %d A, %d B" % (
        len(p), p.count(b"A"), p.count(b"B"))


nested = {}


def handler(signum, frame):
    # Runs while conn.read_bytes() below waits in the same Connection.
    client.sendall(tcpframe.encode_frame(A) + tcpframe.encode_frame(B))
    select.select([server], [], [], 5)
    time.sleep(0.05)
    try:
        nested["returned"] = classify(conn.read_bytes())
    except Exception as exc:
        nested["raised"] = describe(exc)
        raise


signal.signal(signal.SIGALRM, handler)
signal.setitimer(signal.ITIMER_REAL, 0.2)
try:
    outer = {"returned": classify(conn.read_bytes())}
except Exception as exc:
    outer = {"raised": describe(exc)}
signal.setitimer(signal.ITIMER_REAL, 0)
server.settimeout(2)
later = []
for _ in range(2):
    try:
        later.append(classify(conn.read_bytes()))
    except Exception as exc:
        later.append(describe(exc))
        break
report(outer=outer, nested=nested, later=later)
'''


def assert_reentrant_refused(result):
    for who in ("nested", "outer"):
        outcome = result[who]
        assert "raised" in outcome, (
            f"the {who} read returned {outcome.get('returned')!r} (whole result: {result})"
        )
        exc = outcome["raised"]
        assert exc["type"] == "RuntimeError" and "reentrant call" in exc["message"], exc
    # Nothing was consumed: the frames are still there, whole and in order.
    assert result["later"] == ["A", "B"], result["later"]


def test_reentrant_read_from_recv_into():
    """Defect 4: a socket subclass whose recv_into() reads the same
    Connection corrupted its buffer (heap use-after-free / overflow)."""
    assert_reentrant_refused(scenario(REENTRANT_RECV_INTO))


@needs_setitimer
def test_reentrant_read_from_a_signal_handler():
    """Defect 4: a SIGALRM handler reading the Connection that the
    interrupted read was filling (heap use-after-free / overflow)."""
    assert_reentrant_refused(scenario("import signal\n" + REENTRANT_SIGNAL))


# ------------------------------------------------------------------ defect 5

TWO_READERS = r'''
import random, struct, zlib

client, server = make_pair()
server.settimeout(10)
conn = tcpframe.Connection(server)
N = P["frames"]
SIZES = [0, 1, 7, 100, 1000, 5000, 30000, 70000, 200000]
WEIGHTS = [5, 5, 5, 30, 30, 10, 5, 3, 1]


def payload(i):
    rnd = random.Random(i)
    n = rnd.choices(SIZES, WEIGHTS)[0]
    body = bytes(rnd.getrandbits(8) for _ in range(min(n, 64))) * (n // 64 + 1)
    body = body[:n]
    return struct.pack(">II", i, zlib.crc32(body)) + body


def send():
    rnd = random.Random(1)
    i = 0
    try:
        while i < N:
            k = rnd.randint(1, 25)
            data = b"".join(tcpframe.encode_frame(payload(j)) for j in range(i, min(N, i + k)))
            cut = rnd.randint(0, len(data))   # frames split anywhere
            client.sendall(data[:cut])
            if rnd.random() < 0.2:
                time.sleep(0.001)
            client.sendall(data[cut:])
            i += k
    except OSError as exc:
        problems.append("sender: %r" % (exc,))
    finally:
        client.close()


got = {}
problems = []
lock = threading.Lock()


def reader(name):
    rnd = random.Random(name)
    while True:
        try:
            way = rnd.randrange(3)
            if way == 0:
                p = conn.read_bytes()
            elif way == 1:
                p = tcpframe.read_bytes(conn)
            else:
                p = next(conn)
        except StopIteration:
            return
        except tcpframe.ConnectionClosed as exc:
            if exc.expected is not None:
                problems.append("reader %d: %r" % (name, exc))
            return
        except Exception as exc:
            problems.append("reader %d: %s" % (name, repr(exc)[:300]))
            return
        if len(p) < 8:
            problems.append("reader %d: a %d-byte frame" % (name, len(p)))
            continue
        i, crc = struct.unpack(">II", p[:8])
        if zlib.crc32(p[8:]) != crc or i >= N or p != payload(i):
            problems.append("reader %d: corrupted frame (claims %d, %d bytes)" % (name, i, len(p)))
            continue
        with lock:
            if i in got:
                problems.append("frame %d delivered twice" % i)
            got[i] = name


readers = [threading.Thread(target=reader, args=(k,), daemon=True) for k in range(P["readers"])]
sender = threading.Thread(target=send, daemon=True)
for t in readers:
    t.start()
sender.start()
deadline = time.monotonic() + 60
for t in readers:
    t.join(max(0.1, deadline - time.monotonic()))
hung = sum(t.is_alive() for t in readers)
conn.close()                    # frees a sender stuck after the readers gave up
sender.join(10)
report(delivered=len(got), missing=[i for i in range(N) if i not in got][:10],
       readers_used=sorted(set(got.values())), problems=problems[:10],
       problem_count=len(problems), hung=hung)
'''


def test_several_threads_reading_one_connection():
    """Defect 5: two or more threads reading one Connection corrupted
    frames (or aborted in malloc, or segfaulted).  A second reader must wait
    for the first: every frame delivered whole, exactly once."""
    result = scenario(TWO_READERS, frames=3000, readers=4)
    assert result["problems"] == [], f"{result['problem_count']} problems: {result['problems']}"
    assert result["hung"] == 0
    assert result["delivered"] == 3000 and result["missing"] == [], result


# ------------------------------------------------------------------ defect 6

CLOSE_DURING_READ = r'''
client, server = make_pair()
server.settimeout(P["read_timeout"])
conn = tcpframe.Connection(server)
old_fd = conn.fileno()
signal.signal(signal.SIGUSR1, lambda *args: None)
result = {}
done = threading.Event()
release = threading.Event()


def reader():
    start = time.monotonic()
    try:
        result["returned"] = conn.read_bytes().decode("latin-1")
    except BaseException as exc:
        result["raised"] = describe(exc)
    result["seconds"] = time.monotonic() - start
    done.set()
    release.wait(30)        # keeps the thread alive: pthread_kill below stays valid


t = threading.Thread(target=reader, daemon=True)
t.start()
time.sleep(0.3)             # let it block in recv()/poll()
listener = socket.create_server(("127.0.0.1", 0))
closed_at = time.monotonic()
conn.close()
# A new connection takes the lowest free descriptor: the one just closed.
other = socket.create_connection(listener.getsockname(), timeout=10)
peer, _ = listener.accept()
fd_reused = other.fileno() == old_fd
peer.sendall(tcpframe.encode_frame(b"FOREIGN: another connection's frame"))
prompt = done.wait(5.0)
woke_after = time.monotonic() - closed_at
if not prompt:
    # Still blocked: a signal makes it retry its system call, on whatever
    # the descriptor is now.
    signal.pthread_kill(t.ident, signal.SIGUSR1)
    done.wait(10)
release.set()
t.join(10)
try:
    later = {"returned": repr(conn.read_bytes())}
except Exception as exc:
    later = {"raised": describe(exc)}
report(result=result, prompt=prompt, woke_after=woke_after, fd_reused=fd_reused, later=later)
'''


@pytest.mark.parametrize("timeout", [None, 20.0], ids=["blocking", "with-timeout"])
def test_close_from_another_thread_wakes_a_blocked_read(timeout):
    """Defect 6: close() from another thread left a read blocked on a
    descriptor number that the next socket reused; the read then returned
    another connection's data.  It must fail promptly with ValueError."""
    result = scenario("import signal\n" + CLOSE_DURING_READ, read_timeout=timeout)
    outcome = result["result"]
    assert "returned" not in outcome, (
        f"the read returned {outcome['returned']!r} after close() "
        f"(descriptor reused: {result['fd_reused']})"
    )
    exc = outcome["raised"]
    assert exc_is(exc, "ValueError") and not exc_is(exc, "FrameError"), exc
    assert "closed" in exc["message"], exc
    assert result["prompt"], f"close() did not wake the read (it ended after {outcome['seconds']:.1f} s)"
    later = result["later"]
    assert "raised" in later and exc_is(later["raised"], "ValueError"), later


# ------------------------------------------------------------------ defect 7


@pytest.mark.parametrize("api", ["module", "connection"])
def test_wrapped_timeout_survives_a_read_and_a_send_at_once(api, background):
    """Defect 7: a wrapped socket's timeout drifted (5.0 -> 4.99...) when
    one thread read (blocked) while another sent: the sender saved the
    reader's narrowed timeout and put that back."""
    client, server = make_pair()
    sub = subclassed(server)
    sub.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 16)
    sub.settimeout(5.0)
    conn = Connection(sub) if api == "connection" else None
    read = conn.read_bytes if conn else functools.partial(tcpframe.read_bytes, sub)
    send = conn.send_bytes if conn else functools.partial(tcpframe.send_bytes, sub)
    big = bytes(8 << 20)    # far more than the socket buffers: the send blocks
    try:
        reader = background(read)
        wait_until(lambda: sub.gettimeout() != 5.0, 0.5)   # blocked in recv_into
        sender = background(send, big)
        select.select([client], [], [], 5)                  # the send has begun
        tcpframe.send_bytes(client, b"reply")               # the reader finishes first...
        assert reader.join() == b"reply"
        assert tcpframe.receive_all(client, 8 + len(big)) == tcpframe.encode_header(len(big)) + big
        sender.join()                                       # ...then the sender
        assert sub.gettimeout() == 5.0
    finally:
        client.close()
        (conn or sub).close()


# ------------------------------------------------------------------ defect 8


@pytest.mark.parametrize("timeout", [1e9, 5e9])
@pytest.mark.parametrize("api", ["module", "connection"])
def test_huge_timeout_on_a_wrapped_socket_is_no_timeout(api, timeout):
    """Defect 8: a wrapped socket with a timeout >= 1e9 s timed out at once;
    it must behave as no timeout (a read whose data comes after 0.2 s)."""
    client, server = make_pair()
    sub = subclassed(server)
    sub.settimeout(timeout)
    conn = Connection(sub) if api == "connection" else None
    timer = threading.Timer(0.2, tcpframe.send_bytes, (client, b"late"))
    timer.start()
    try:
        if conn:
            assert conn.read_bytes() == b"late"
            conn.send_bytes(b"back")
        else:
            assert tcpframe.read_bytes(sub) == b"late"
            tcpframe.send_bytes(sub, b"back")
        assert tcpframe.read_bytes(client) == b"back"
        assert sub.gettimeout() == timeout
    finally:
        timer.join(10)
        client.close()
        (conn or sub).close()


# ------------------------------------------------------------------ defect 9


@pytest.fixture(scope="module")
def tls_contexts():
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    return server_ctx, client_ctx


def tls_pair(contexts):
    server_ctx, client_ctx = contexts
    raw_client, raw_server = make_pair()
    holder = {}
    t = threading.Thread(
        target=lambda: holder.update(s=server_ctx.wrap_socket(raw_server, server_side=True))
    )
    t.start()
    client = client_ctx.wrap_socket(raw_client, server_hostname="localhost")
    t.join(10)
    server = holder["s"]
    # TLS 1.3 session tickets: let the client read them now, so that they
    # are not what a non-blocking read meets later.
    tcpframe.send_bytes(server, b"hello")
    assert tcpframe.read_bytes(client) == b"hello"
    return client, server


@pytest.mark.parametrize("api", ["module", "connection"])
@pytest.mark.parametrize("kind", ["subclass", "tls"])
def test_non_blocking_wrapped_socket_keeps_what_it_received(kind, api, request):
    """Defect 9: a non-blocking wrapped socket (subclass or SSLSocket)
    raised BlockingIOError / SSLWantReadError and lost the bytes already
    received; it must raise TransferTimeout with them in .partial."""
    if kind == "tls":
        client, server = tls_pair(request.getfixturevalue("tls_contexts"))
    else:
        client, server = make_pair()
        server = subclassed(server)
    payload = bytes(range(256)) * 4
    head = tcpframe.encode_header(len(payload)) + payload[:512]
    client.sendall(head)
    assert select.select([server], [], [], 10)[0]
    time.sleep(0.1)             # all of it, not just the first segment
    server.setblocking(False)
    conn = Connection(server) if api == "connection" else None
    try:
        with pytest.raises(TransferTimeout) as info:
            conn.read_bytes() if conn else tcpframe.read_bytes(server)
        assert info.value.partial == head
        assert info.value.expected == 8 + len(payload)
        if conn:
            # Kept in the Connection: the next read carries on.
            assert conn.buffered == len(head)
            client.sendall(payload[512:])
            server.settimeout(10)
            assert conn.read_bytes() == payload
    finally:
        client.close()
        (conn or server).close()


# ----------------------------------------------------------------- defect 10

KEEP_RECV_VIEW = r'''
client, server = make_pair()


class Keeper(socket.socket):
    kept = None

    def recv_into(self, buffer, *args):
        self.kept = buffer[0:]          # a second view, past the release() guard
        return super().recv_into(buffer, *args)


sock = Keeper(fileno=server.detach())
sock.settimeout(10)
case = P["case"]


def scribble():
    kept = sock.kept
    try:
        kept[:] = b"X" * len(kept)
        return "written"
    except Exception as exc:
        return describe(exc)


def send_later(data):
    t = threading.Thread(target=client.sendall, args=(data,), daemon=True)
    t.start()
    return t


if case == "read_bytes":
    expected = os.urandom(1000)
    send_later(tcpframe.encode_frame(expected))
    call = lambda: tcpframe.read_bytes(sock)
elif case == "receive_all":
    expected = os.urandom(1000)
    send_later(expected)
    call = lambda: tcpframe.receive_all(sock, 1000)
elif case == "connection_large":
    expected = os.urandom(200000)
    send_later(tcpframe.encode_frame(expected))
    conn = tcpframe.Connection(sock)
    call = conn.read_bytes
else:   # connection_next_frame: the view aliases the Connection's buffer
    expected = b"two"
    send_later(tcpframe.encode_frame(b"one") + tcpframe.encode_frame(b"two"))
    select.select([sock], [], [], 5)
    time.sleep(0.05)
    conn = tcpframe.Connection(sock)

    def call():
        assert conn.read_bytes() == b"one"
        scribble()
        return conn.read_bytes()

try:
    result = call()
except Exception as exc:
    report(raised=describe(exc))
    sys.exit(0)
before = result == expected
scribbled = scribble()
report(before=before, after=result == expected, scribbled=scribbled)
'''

KEEP_SEND_VIEW = r'''
client, server = make_pair()


class Keeper(socket.socket):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.kept, self.sent = [], []

    def sendall(self, data, *args):
        self.kept.append(data[0:])       # a second view, past the release() guard
        self.sent.append(bytes(data))
        return super().sendall(data, *args)


sock = Keeper(fileno=client.detach())
sock.settimeout(10)
size = P["size"]
received = []
r = threading.Thread(target=lambda: received.append(drain(server, 20)), daemon=True)
r.start()
first = bytearray(os.urandom(size))
first_copy = bytes(first)
second = os.urandom(size)
outcome = []
for data in (first, second):    # the second call reuses the first one's stack
    try:
        tcpframe.send_bytes(sock, data)
        outcome.append("sent")
    except Exception as exc:
        outcome.append(describe(exc))
second_copy = bytes(second)
del first, second, data
gc.collect()
junk = [bytes(4096) for _ in range(256)]
reads = []
for kept, sent in zip(sock.kept, sock.sent):
    try:
        reads.append("same" if bytes(kept) == sent else "changed")
    except Exception as exc:        # a released view: fine
        reads.append(describe(exc))
sock.close()
r.join(30)
got, leftover, error = parse_frames(received[0] if received else b"")
report(outcome=outcome, reads=reads, wire_ok=got == [first_copy, second_copy][:len(got)],
       leftover=len(leftover), parse_error=error)
'''

VIEW_ERRORS = ("BufferError", "ValueError", "RuntimeError", "TypeError")


def view_error(exc):
    """A refusal to let a kept view at memory: not a framing or I/O error."""
    return (isinstance(exc, dict) and exc_is(exc, *VIEW_ERRORS)
            and not exc_is(exc, "FrameError", "ConnectionClosed", "OSError"))


@pytest.mark.parametrize("case", ["read_bytes", "receive_all", "connection_large",
                                  "connection_next_frame"])
def test_recv_into_keeping_a_slice_cannot_change_results(case):
    """Defect 10: a recv_into() that keeps view[0:] bypassed the release()
    guard; writing into the slice later changed immutable bytes already
    returned (or the Connection's next frame)."""
    result = scenario(KEEP_RECV_VIEW, case=case)
    if "raised" in result:
        assert view_error(result["raised"]), result
        return
    assert result["before"], "the result was wrong before the slice was written"
    assert result["after"], (
        f"writing into the slice recv_into() kept ({result['scribbled']}) changed the result"
    )


@pytest.mark.parametrize("size", [100, 1 << 20])
def test_sendall_keeping_a_slice_cannot_read_freed_memory(size):
    """Defect 10: a sendall() that keeps view[0:] could read, after the
    call, stack or heap memory that was no longer the data (or unmapped)."""
    result = scenario(KEEP_SEND_VIEW, size=size)
    for outcome in result["outcome"]:
        assert outcome == "sent" or view_error(outcome), outcome
    for read in result["reads"]:
        assert read == "same" or view_error(read), (
            f"a kept slice reads other memory: {result['reads']}"
        )
    assert result["parse_error"] is None and result["leftover"] == 0 and result["wire_ok"], result


# ----------------------------------------------------------------- defect 11


def test_module_read_object_honours_the_connections_max_size(tcp_pair):
    """Defect 11: tcpframe.read_object(conn) ignored conn.max_size."""
    client, server = tcp_pair
    conn = Connection(server, max_size=10)
    value = ["x" * 46, "y" * 46]
    tcpframe.send_object(client, value)
    with pytest.raises(FrameTooLarge) as info:
        tcpframe.read_object(conn)
    assert (info.value.size, info.value.limit) == (100, 10)
    # An explicit max_size still wins.
    tcpframe.send_object(client, value)
    assert tcpframe.read_object(conn, max_size=100) == value
    conn.close()


# ----------------------------------------------------------------- defect 12


def test_connection_read_bytes_accepts_max_size_none(tcp_pair):
    """Defect 12: conn.read_bytes(max_size=None) raised TypeError; None means
    the Connection's own max_size, as the stub says."""
    client, server = tcp_pair
    conn = Connection(server, max_size=4)
    tcpframe.send_bytes(client, b"1234")
    tcpframe.send_bytes(client, b"12345")
    assert conn.read_bytes(max_size=None) == b"1234"
    with pytest.raises(FrameTooLarge) as info:
        conn.read_bytes(max_size=None)
    assert info.value.limit == 4
    conn.close()


# ----------------------------------------------------------------- defect 13


def wait_readable_bytes(sock, n, limit=10.0):
    """Block until n bytes can be read from sock (peeked, not consumed)."""
    timeout = sock.gettimeout()
    sock.settimeout(limit)
    try:
        assert len(sock.recv(n, socket.MSG_PEEK | socket.MSG_WAITALL)) == n
    finally:
        sock.settimeout(timeout)


@pytest.mark.parametrize("size", [100, 200_000], ids=["buffered", "direct"])
@pytest.mark.parametrize("mode", ["timeout", "non-blocking"])
@pytest.mark.parametrize("kind", ["plain", "subclass"])
def test_connection_timeout_message_does_not_claim_a_lost_boundary(kind, mode, size):
    """Defect 13: a Connection keeps what a timed-out read received, so its
    TransferTimeout must not say the stream is "no longer on a frame
    boundary"; the next read returns the whole frame.  (On a non-blocking
    wrapped socket the current code raises BlockingIOError, with a note
    saying just that.)"""
    client, server = make_pair()
    if kind == "subclass":
        server = subclassed(server)
    conn = Connection(server)
    half = size // 2
    head = tcpframe.encode_header(size) + b"x" * half
    try:
        client.sendall(head)
        wait_readable_bytes(server, len(head))
        if mode == "timeout":
            server.settimeout(0.3)
        else:
            server.setblocking(False)
        for read in (conn.read_bytes, functools.partial(tcpframe.read_bytes, conn),
                     lambda: next(conn)):
            with pytest.raises(TransferTimeout) as info:
                read()
            assert "no longer on a frame boundary" not in str(info.value), str(info.value)
            for note in getattr(info.value, "__notes__", []):
                assert "no longer on a frame boundary" not in note, note
            assert info.value.partial == head
        client.sendall(b"x" * (size - half))
        server.settimeout(10)
        assert conn.read_bytes() == b"x" * size
    finally:
        client.close()
        conn.close()


@needs_notes
@needs_setitimer
@pytest.mark.parametrize("size", [100, 200_000], ids=["buffered", "direct"])
def test_connection_read_interrupted_by_a_signal_keeps_its_boundary(size):
    """Defect 13: the note a raising signal handler's exception gets (3.11+)
    said "no longer on a frame boundary" for a Connection, which keeps the
    bytes; the next read must return the whole frame."""
    client, server = make_pair()
    server.settimeout(None)
    conn = Connection(server)

    class Alarm(Exception):
        pass

    def handler(signum, frame):
        raise Alarm

    previous = signal.signal(signal.SIGALRM, handler)
    try:
        client.sendall(tcpframe.encode_header(size) + b"q" * 10)
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        with pytest.raises(Alarm) as info:
            conn.read_bytes()
        signal.setitimer(signal.ITIMER_REAL, 0)
        for note in getattr(info.value, "__notes__", []):
            assert "no longer on a frame boundary" not in note, note
        client.sendall(b"q" * (size - 10))
        server.settimeout(10)
        assert conn.read_bytes() == b"q" * size
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        client.close()
        conn.close()


# ----------------------------------------------------------------- defect 14

DATAGRAM = re.compile(r"SOCK_DGRAM|stream")


@pytest.fixture
def udp_pair():
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        a.bind(("127.0.0.1", 0))
        b.bind(("127.0.0.1", 0))
        a.connect(b.getsockname())
        b.connect(a.getsockname())
        a.settimeout(1.0)
        b.settimeout(1.0)
        yield a, b
    finally:
        a.close()
        b.close()


def test_udp_socket_is_refused(udp_pair):
    """Defect 14: a UDP socket was accepted silently (frames cut at
    datagram boundaries).  Connection(), send_bytes() and read_bytes() must
    raise ValueError naming the socket kind, before sending anything."""
    a, b = udp_pair
    with pytest.raises(ValueError, match=DATAGRAM):
        Connection(a)
    with pytest.raises(ValueError, match=DATAGRAM):
        tcpframe.send_bytes(a, b"x")
    with pytest.raises(socket.timeout):
        b.recv(100)         # nothing was sent
    a.send(tcpframe.encode_frame(b"datagram"))
    with pytest.raises(ValueError, match=DATAGRAM):
        tcpframe.read_bytes(b)


# ---------------------------------------------------- defects 15-17 ("also")


def test_max_size_beyond_ssize_t_means_no_extra_limit(tcp_pair):
    """Defect 15 (first "also" item): max_size=10**20 raised OverflowError;
    it must be accepted, as no limit beyond MAX_SIZE."""
    client, server = tcp_pair
    huge = 10 ** 20
    tcpframe.send_bytes(client, b"one")
    assert tcpframe.read_bytes(server, max_size=huge) == b"one"
    conn = Connection(server, max_size=huge)
    tcpframe.send_bytes(client, b"two")
    tcpframe.send_bytes(client, b"three")
    assert conn.read_bytes() == b"two"
    assert conn.read_bytes(max_size=huge) == b"three"
    conn.close()
    decoder = Decoder(max_size=huge)
    assert decoder.feed(tcpframe.encode_frame(b"four")) == [b"four"]


NOT_SOCKETS = [None, 42, io.BytesIO(), object()]
MODULE_CALLS = {
    "send_bytes": lambda s: tcpframe.send_bytes(s, b"x"),
    "read_bytes": lambda s: tcpframe.read_bytes(s),
    "send_all": lambda s: tcpframe.send_all(s, b"x"),
    "receive_all": lambda s: tcpframe.receive_all(s, 1),
    "receive_into": lambda s: tcpframe.receive_into(s, bytearray(1)),
    "send_string": lambda s: tcpframe.send_string(s, "x"),
    "read_string": lambda s: tcpframe.read_string(s),
}


@pytest.mark.parametrize("value", NOT_SOCKETS, ids=lambda v: type(v).__name__)
@pytest.mark.parametrize("name", sorted(MODULE_CALLS))
def test_non_socket_argument_is_a_type_error(name, value):
    """Defect 16 (second "also" item): a non-socket argument gave
    AttributeError; it must be TypeError naming the type passed."""
    with pytest.raises(TypeError) as info:
        MODULE_CALLS[name](value)
    assert type(value).__name__.replace("NoneType", "None") in str(info.value), str(info.value)


def test_connection_of_none_is_a_type_error():
    """Defect 16 (second "also" item): Connection(None) must raise TypeError
    naming the type, not build a Connection that fails later."""
    with pytest.raises(TypeError, match="None"):
        Connection(None)


def test_frame_ready_tells_whether_a_frame_is_buffered(tcp_pair):
    """Defect 17 (third "also" item): select() says "not readable" while a
    whole frame waits in the Connection's buffer; conn.frame_ready (a
    documented bool property) tells a caller that read_bytes() will not
    touch the socket."""
    client, server = tcp_pair
    conn = Connection(server)
    assert conn.frame_ready is False
    client.sendall(tcpframe.encode_frame(b"one") + tcpframe.encode_frame(b"two"))
    assert select.select([server], [], [], 10)[0]
    time.sleep(0.05)
    assert conn.read_bytes() == b"one"
    assert conn.frame_ready is True     # b"two" came with the first recv()
    assert conn.read_bytes() == b"two"
    assert conn.frame_ready is False
    assert Connection.frame_ready.__doc__
    conn.close()
