"""The write buffer under re-entrancy and threads: Python code that runs
while a flush is in progress -- a signal handler, a wrapped socket's
sendall() or gettimeout(), another thread -- sends, flushes, reads or closes
the same Connection.  The send lock covers the buffer: such code gets a
clear error or waits, the buffer is never freed or moved under a send in
progress, and the peer only ever sees whole frames in order (or a stream
cut by a close, which the interrupted call reports).

Each scenario runs in a child process (crashcheck.run_scenario), so a crash
-- or, in CI's sanitizer run, an ASan report -- fails one test."""
import signal

import pytest

from test_safety import HELPERS, exc_is
from crashcheck import run_scenario

needs_setitimer = pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs setitimer")

# A Connection `conn` on `client` whose buffer holds more than the kernel
# takes while the peer (`server`) does not read, so that a flush blocks;
# frame(i) is the i-th frame; read_all() starts the peer reading.
STALLED = HELPERS + r'''
client, server = make_pair()
client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
client.settimeout(20)
N, SIZE = 1000, 1000


def frame(i):
    return bytes([i % 251]) * SIZE


received = []


def read_all(after=0.0):
    def run():
        time.sleep(after)
        received.append(drain(server, 10.0))
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def wire():
    got, leftover, error = parse_frames(received[0] if received else b"")
    return {"count": len(got), "in_order": got == [frame(i) for i in range(len(got))],
            "leftover": len(leftover), "parse_error": error}
'''


def scenario(code, **params):
    return run_scenario(STALLED + code, timeout=90, **params)


SIGNAL_DURING_FLUSH = r'''
conn = tcpframe.Connection(client, write_buffer=1 << 20)
for i in range(N):
    conn.send_bytes(frame(i))
nested = []


def handler(signum, frame_):
    for call in (lambda: conn.send_bytes(b"nested"), conn.flush, lambda: conn.send_many([b"n"]),
                 lambda: conn.send_all(b"raw")):
        try:
            call()
            nested.append("returned")
        except Exception as exc:
            nested.append(describe(exc))
    if P["close"]:
        conn.close()


signal.signal(signal.SIGALRM, handler)
signal.setitimer(signal.ITIMER_REAL, 0.2)       # while the flush below waits
reader = read_all(after=0.6)
try:
    conn.flush()
    outcome = {"returned": True}
except Exception as exc:
    outcome = {"raised": describe(exc)}
signal.setitimer(signal.ITIMER_REAL, 0)
unsent = conn.unsent
conn.close()
reader.join(30)
report(outcome=outcome, nested=nested, unsent=unsent, closed=conn.closed, **wire())
'''


@needs_setitimer
def test_signal_handler_sending_during_a_flush_is_refused():
    """A signal handler that sends, flushes, send_many()s or send_all()s on
    the Connection whose flush it interrupted gets RuntimeError; the flush
    carries on and every frame arrives, whole and in order."""
    result = scenario("import signal\n" + SIGNAL_DURING_FLUSH, close=False)
    assert len(result["nested"]) == 4
    for nested in result["nested"]:
        assert nested != "returned" and nested["type"] == "RuntimeError", result["nested"]
        assert "reentrant call" in nested["message"]
    assert result["outcome"] == {"returned": True}, result
    assert result["parse_error"] is None and result["leftover"] == 0
    assert result["count"] == 1000 and result["in_order"], result


@needs_setitimer
def test_signal_handler_closing_during_a_flush():
    """close() from a signal handler while the flush waits: the flush is cut
    short and says why; the buffer it was sending from is not freed under
    it (ASan would see); the peer sees whole frames, then at most one cut
    frame."""
    result = scenario("import signal\n" + SIGNAL_DURING_FLUSH, close=True)
    outcome = result["outcome"]
    assert "raised" in outcome, result
    assert exc_is(outcome["raised"], "ValueError") and "was closed" in outcome["raised"]["message"]
    assert result["closed"] and result["unsent"] == 0
    assert result["parse_error"] is None and result["in_order"], result


THREAD_CLOSES_DURING_FLUSH = r'''
conn = tcpframe.Connection(client, write_buffer=1 << 20)
for i in range(N):
    conn.send_bytes(frame(i))
outcome = {}


def flusher():
    try:
        getattr(conn, P["op"])(*([b"after"] if P["op"] == "send_bytes" else []))
        outcome["returned"] = True
    except Exception as exc:
        outcome["raised"] = describe(exc)


if P["op"] == "send_bytes":
    conn.send_bytes(b"x" * (conn.write_buffer - conn.unsent - 8))    # full: the next one flushes
t = threading.Thread(target=flusher, daemon=True)
t.start()
time.sleep(0.3)
closer_error = None
try:
    conn.close()                # the flush holds the send lock: close() does not flush again
except Exception as exc:
    closer_error = describe(exc)
t.join(30)
reader = read_all()
reader.join(30)
report(outcome=outcome, closer_error=closer_error, alive=t.is_alive(), fd=client.fileno(),
       **wire())
'''


@pytest.mark.parametrize("op", ["flush", "send_bytes", "read_bytes"])
def test_another_thread_closes_during_a_flush(op):
    """A flush blocked in flush(), in an overflowing send_bytes(), or in the
    flush a read_bytes() does first: close() from another thread wakes it,
    it fails saying the Connection was closed, and the socket is closed
    when it leaves (not before: it was sending from the buffer)."""
    result = scenario(THREAD_CLOSES_DURING_FLUSH, op=op)
    assert not result["alive"]
    outcome = result["outcome"]
    assert "raised" in outcome, result
    assert exc_is(outcome["raised"], "ValueError") and "closed" in outcome["raised"]["message"]
    assert result["closer_error"] is None
    assert result["fd"] == -1
    assert result["parse_error"] is None and result["in_order"], result


WRAPPED_CALLS_BACK = r'''
class Sock(socket.socket):
    calls = 0
    nested = None
    kept = []

    def sendall(self, data, *args):
        self.calls += 1
        self.kept.append(data[0:])          # kept past the call: must stay what was sent
        self.sent.append(bytes(data))
        if self.calls == 1:
            try:
                self.nested = {"returned": repr(P_CALL())}
            except Exception as exc:
                self.nested = {"raised": describe(exc)}
                if P["reraise"]:
                    raise
        return super().sendall(data, *args)


sock = Sock(fileno=client.detach())
sock.sent = []
sock.settimeout(20)
conn = tcpframe.Connection(sock, write_buffer=P["buffer"])
what = P["call"]
if what == "read_bytes":
    server.sendall(tcpframe.encode_frame(b"from the peer"))
P_CALL = {"send_bytes": lambda: conn.send_bytes(b"nested"),
          "flush": lambda: conn.flush(),
          "read_bytes": lambda: conn.read_bytes(),
          "close": lambda: conn.close()}[what]
reader = read_all()
outcome = []
for i in range(300):
    try:
        conn.send_bytes(frame(i)[: 10 + i % 700])
    except Exception as exc:
        outcome.append(describe(exc))
        break
else:
    try:
        conn.flush()
        outcome.append("flushed")
    except Exception as exc:
        outcome.append(describe(exc))
try:
    conn.close()
except Exception as exc:
    outcome.append(describe(exc))
gc.collect()
junk = [bytes(4096) for _ in range(256)]
changed = sum(bytes(k) != s for k, s in zip(sock.kept, sock.sent))
reader.join(30)
got, leftover, error = parse_frames(received[0] if received else b"")
expected = [frame(i)[: 10 + i % 700] for i in range(300)]
report(nested=sock.nested, outcome=outcome, changed=changed, calls=sock.calls,
       prefix_ok=got == expected[:len(got)], count=len(got), leftover=len(leftover),
       parse_error=error)
'''


@pytest.mark.parametrize("call", ["send_bytes", "flush", "read_bytes", "close"])
@pytest.mark.parametrize("buffer", [4096, 65536])
def test_wrapped_sendall_calling_back_during_a_flush(call, buffer):
    """A wrapped socket's sendall() (the TLS path) that sends, flushes,
    reads or closes the Connection whose buffer it is being handed.  Sends
    are refused (RuntimeError); a read goes on (the other direction) and
    does not wait for the send lock its own thread holds; a close cuts the
    flush short.  The slices sendall() keeps still read what was sent: it
    only ever sees copies, never the buffer, which is reused."""
    result = scenario(WRAPPED_CALLS_BACK, call=call, buffer=buffer, reraise=False)
    nested = result["nested"]
    assert nested is not None, result
    if call in ("send_bytes", "flush"):
        assert nested["raised"]["type"] == "RuntimeError", nested
        assert "reentrant call" in nested["raised"]["message"]
        assert result["outcome"] == ["flushed"], result
        assert result["count"] == 300 and result["prefix_ok"], result
    elif call == "read_bytes":
        assert nested == {"returned": repr(b"from the peer")}, nested
        assert result["outcome"] == ["flushed"], result
        assert result["count"] == 300 and result["prefix_ok"], result
    else:
        assert "returned" in nested, nested
        assert result["outcome"] and result["outcome"][0] != "flushed", result
        assert exc_is(result["outcome"][0], "ValueError", "OSError"), result
        assert result["prefix_ok"], result
    assert result["changed"] == 0
    assert result["parse_error"] is None


def test_wrapped_sendall_raising_during_a_flush_reports_it():
    """The RuntimeError a nested send gets, raised on out of sendall(),
    fails the flush: it carries .sent (None: a wrapped sendall() does not
    say how much it sent) and .frames_sent, and what was still waiting is
    dropped rather than maybe sent twice."""
    result = scenario(WRAPPED_CALLS_BACK, call="send_bytes", buffer=4096, reraise=True)
    outcome = result["outcome"][0]
    assert outcome["type"] == "RuntimeError" and "reentrant call" in outcome["message"], result
    assert result["prefix_ok"] and result["parse_error"] is None, result


GETTIMEOUT_CLOSES = r'''
class Wrapper:
    """A duck-typed socket whose gettimeout() closes the owning Connection
    (armed once frames are waiting)."""

    def __init__(self, sock):
        self.sock = sock
        self.armed = False

    def gettimeout(self):
        if self.armed:
            self.armed = False
            conn.close()
        return self.sock.gettimeout()

    def recv_into(self, buffer, *args):
        return self.sock.recv_into(buffer, *args)

    def sendall(self, data, *args):
        return self.sock.sendall(data, *args)

    def shutdown(self, how):
        return self.sock.shutdown(how)

    def close(self):
        self.sock.close()


wrapper = Wrapper(client)
conn = tcpframe.Connection(wrapper, write_buffer=100)
del client
conn.send_bytes(b"waiting")
wrapper.armed = True
op = P["op"]
try:
    if op == "flush":
        r = conn.flush()
    elif op == "send_bytes":
        r = conn.send_bytes(b"y" * 200)         # larger than the buffer: out with it
    elif op == "read_bytes":
        r = conn.read_bytes()
    else:
        r = conn.close()
    outcome = {"returned": repr(r)}
except Exception as exc:
    outcome = {"raised": describe(exc), "closed_error": closed_error(exc)}
reader = read_all()
reader.join(30)
got, leftover, error = parse_frames(received[0] if received else b"")
report(outcome=outcome, frames=[f.decode() for f in got], leftover=len(leftover),
       parse_error=error, closed=conn.closed, unsent=conn.unsent)
'''


@pytest.mark.parametrize("op", ["flush", "send_bytes", "read_bytes", "close"])
def test_gettimeout_that_closes_the_connection_before_a_flush(op):
    """A wrapped socket's gettimeout() -- Python code run as the socket is
    opened for the flush -- closes the Connection: no use of freed memory,
    the call fails as closed (close() itself returns), and the peer sees
    whole frames only."""
    result = scenario(GETTIMEOUT_CLOSES, op=op)
    assert result["closed"] and result["unsent"] == 0
    assert result["parse_error"] is None and result["leftover"] == 0, result
    outcome = result["outcome"]
    if op == "close":
        assert "returned" in outcome or outcome["closed_error"], outcome
    else:
        assert "raised" in outcome and outcome["closed_error"], outcome
