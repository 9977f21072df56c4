"""Stress: threads reading, sending and closing shared Connections at once.

Four reader threads, four sender threads and four closer threads share a
few Connection pairs for a bounded time (TCPFRAME_STRESS_SECONDS, default
4).  Closers close either end of a pair whenever they like, with reads and
sends in flight, and put a fresh pair in its place.  Every payload carries
its own pair, generation, sender, sequence number and length, and a body
derived from them, so a reader can tell a whole, right frame from a torn,
corrupted, duplicated or misdelivered one (another pair's bytes read
through a reused file descriptor).

What must hold: no crash; every frame a reader gets is whole and right
(delivered exactly once, to a reader of its own pair); everything else is
reported as an error a caller can handle: ValueError for a closed
Connection, ConnectionClosed, TransferTimeout or another OSError.  It covers
defects 1, 5 and 6 (and 2 through send_many) under load, and runs in a
child process so a crash fails the test instead of killing the run.

Senders on one pair take turns (a lock): two sendmsg() calls from two
threads may interleave their bytes, which is the kernel's behaviour and not
what is tested here.  Reads and closes take no lock.
"""
import os

import pytest

from crashcheck import run_scenario

SECONDS = float(os.environ.get("TCPFRAME_STRESS_SECONDS", "4"))

STRESS = r'''
import hashlib, random, struct

SECONDS, THREADS, SLOTS = P["seconds"], P["threads"], P["slots"]
HEAD = struct.Struct(">4sIIIII")    # magic, slot, generation, sender, seq, body length
MAGIC = b"TFst"
SIZES = [0, 10, 100, 1000, 10000, 70000, 300000]
WEIGHTS = [5, 20, 30, 25, 10, 7, 3]


def body_for(head, n):
    digest = hashlib.sha256(head).digest()
    return (digest * (n // 32 + 1))[:n]


def make_frame(slot, gen, sender, seq, n):
    head = HEAD.pack(MAGIC, slot, gen, sender, seq, n)
    return head + body_for(head, n)


def check_frame(p):
    """(slot, gen, sender, seq) of a whole, right frame, or an error string."""
    if len(p) < HEAD.size:
        return None, "a %d-byte frame" % len(p)
    magic, slot, gen, sender, seq, n = HEAD.unpack(p[:HEAD.size])
    if magic != MAGIC or len(p) != HEAD.size + n or p[HEAD.size:] != body_for(p[:HEAD.size], n):
        return None, "a corrupted frame (%d bytes, starts %r)" % (len(p), p[:24])
    return (slot, gen, sender, seq), None


stop = threading.Event()
problems = []
seen = set()
seen_lock = threading.Lock()
stats = {}


def count(name, k=1):
    with seen_lock:
        stats[name] = stats.get(name, 0) + k


def expected_error(exc):
    """An error a caller can handle: the Connection was closed, the peer
    went away, the deadline passed.  A FrameError is not: it means the
    bytes were torn or crossed."""
    if isinstance(exc, tcpframe.FrameError):
        return False
    if isinstance(exc, ValueError):
        return "closed" in str(exc)
    return isinstance(exc, (tcpframe.ConnectionClosed, OSError))


def note(who, exc):
    if expected_error(exc):
        count("%s: %s" % (who, type(exc).__name__))
    else:
        problems.append("%s: unexpected %s" % (who, repr(exc)[:300]))


class Slot:
    """A shared pair of Connections, replaced by a new one when closed."""

    def __init__(self, index):
        self.index = index
        self.gen = 0
        self.cur = None
        self.renew_lock = threading.Lock()
        self.send_lock = threading.Lock()
        self.renew(None)

    def renew(self, seen_gen):
        """A fresh pair, unless someone already replaced generation seen_gen."""
        with self.renew_lock:
            if seen_gen is not None and self.cur[0] != seen_gen:
                return
            client, server = make_pair()
            client.settimeout(1.0)
            server.settimeout(0.5)
            self.gen += 1
            tx = tcpframe.Connection(client, write_buffer=P["write_buffer"])
            self.cur = (self.gen, tx, tcpframe.Connection(server))
            count("pairs")


def quietly_close(conn):
    try:
        conn.close()
    except Exception as exc:
        note("close", exc)


def broken(slot, gen, rx):
    """Already reported: replace the pair rather than report it again."""
    quietly_close(rx)
    slot.renew(gen)


def reader(k):
    rnd = random.Random(100 + k)
    while not stop.is_set():
        slot = rnd.choice(slots)
        gen, tx, rx = slot.cur
        way = rnd.randrange(3)
        try:
            if way == 0:
                p = rx.read_bytes()
            elif way == 1:
                p = tcpframe.read_bytes(rx)
            else:
                p = next(rx)
        except StopIteration:
            count("reader: clean end")
            time.sleep(0.001)
            continue
        except Exception as exc:
            note("reader", exc)
            if not expected_error(exc):
                broken(slot, gen, rx)
            time.sleep(0.001)
            continue
        key, error = check_frame(p)
        if error:
            problems.append("reader %d on slot %d gen %d: %s" % (k, slot.index, gen, error))
            broken(slot, gen, rx)
            continue
        if key[:2] != (slot.index, gen):
            problems.append("reader %d on slot %d gen %d got a frame of slot %d gen %d: "
                            "another connection's bytes" % (k, slot.index, gen, key[0], key[1]))
            broken(slot, gen, rx)
            continue
        with seen_lock:
            if key in seen:
                problems.append("frame %r delivered twice" % (key,))
                continue
            seen.add(key)
        count("delivered")


def sender(k):
    rnd = random.Random(k)
    seq = 0
    while not stop.is_set():
        slot = rnd.choice(slots)
        gen, tx, rx = slot.cur
        frames = []
        for _ in range(rnd.choice([1, 1, 1, 5, 50])):
            frames.append(make_frame(slot.index, gen, k, seq, rnd.choices(SIZES, WEIGHTS)[0]))
            seq += 1
        failed = False
        with slot.send_lock:
            try:
                if len(frames) == 1:
                    tx.send_bytes(frames[0])
                elif rnd.random() < 0.5:
                    tx.send_many(frames)
                else:
                    tx.send_many(iter(frames))      # a generator: send_many's other path
                if rnd.random() < 0.2:
                    tx.flush()                      # else they leave when the buffer fills
                count("frames sent", len(frames))
            except Exception as exc:
                note("sender", exc)
                # The failed send may have cut a frame: this pair is done
                # (closed before another sender can write after the cut).
                quietly_close(tx)
                failed = True
        if failed:
            slot.renew(gen)
            time.sleep(0.001)


def closer(k):
    rnd = random.Random(1000 + k)
    while not stop.is_set():
        time.sleep(rnd.uniform(0.02, 0.15))
        slot = rnd.choice(slots)
        gen, tx, rx = slot.cur
        which = rnd.choice(["rx", "tx", "both"])
        # Closed with reads and sends in flight, no lock taken.
        if which != "tx":
            quietly_close(rx)
        if which != "rx":
            quietly_close(tx)
        count("closes")
        time.sleep(rnd.uniform(0, 0.02))    # let the users meet the closed end
        slot.renew(gen)
        quietly_close(tx)
        quietly_close(rx)


slots = [Slot(i) for i in range(SLOTS)]
threads = []
for role in (reader, sender, closer):
    for k in range(THREADS):
        threads.append(threading.Thread(target=role, args=(k,), name="%s-%d" % (role.__name__, k),
                                        daemon=True))
for t in threads:
    t.start()
stop.wait(SECONDS)
stop.set()
for t in threads:
    t.join(30)
hung = [t.name for t in threads if t.is_alive()]
for slot in slots:
    gen, tx, rx = slot.cur
    quietly_close(tx)
    quietly_close(rx)
report(stats=stats, problems=problems[:10], problem_count=len(problems), hung=hung)
'''


BUFFERED_RR = r'''
import random

SECONDS, SENDERS = P["seconds"], P["senders"]
problems = []
stop = threading.Event()
sent, answered, lock = {}, set(), threading.Lock()


def expected_error(exc):
    if isinstance(exc, tcpframe.FrameError):
        return False
    if isinstance(exc, ValueError):
        return "closed" in str(exc)
    return isinstance(exc, (tcpframe.ConnectionClosed, OSError))


client, server = make_pair()
client.settimeout(10)
server.settimeout(10)
conn = tcpframe.Connection(client, write_buffer=P["buffer"])
peer = tcpframe.Connection(server, write_buffer=P["buffer"])


def echo():
    # Answers pipelined requests from its buffer; they leave when it runs
    # out of requests (the read flushes) or the buffer fills.
    try:
        for payload in peer:
            peer.send_bytes(payload[::-1])
    except Exception as exc:
        if not expected_error(exc):
            problems.append("echo: %r" % (exc,))


def sender(k):
    rnd = random.Random(k)
    seq = 0
    while not stop.is_set():
        batch = [b"%d:%d:" % (k, seq + j) + bytes(rnd.choice([0, 5, 50, 500, 5000]))
                 for j in range(rnd.choice([1, 1, 1, 3, 20]))]
        with lock:
            for payload in batch:
                sent[payload[::-1]] = True
        seq += len(batch)
        try:
            way = rnd.random()
            if len(batch) == 1 and way < 0.8:
                conn.send_bytes(batch[0])
            else:
                conn.send_many(batch)
            if way > 0.9:
                conn.flush()
        except Exception as exc:
            if not expected_error(exc):
                problems.append("sender %d: %r" % (k, exc))
            return
        if rnd.random() < 0.05:
            time.sleep(0.001)


def reader():
    # Reads run between sends, and while senders append: each read sends
    # what is waiting, or finds a sender doing it.
    while True:
        try:
            payload = conn.read_bytes()
        except Exception as exc:
            if not expected_error(exc):
                problems.append("reader: %r" % (exc,))
            return
        with lock:
            if payload not in sent:
                problems.append("an answer nobody asked for: %r" % payload[:40])
            elif payload in answered:
                problems.append("answered twice: %r" % payload[:40])
            answered.add(payload)


threads = [threading.Thread(target=echo, daemon=True), threading.Thread(target=reader, daemon=True)]
threads += [threading.Thread(target=sender, args=(k,), daemon=True) for k in range(SENDERS)]
for t in threads:
    t.start()
stop.wait(SECONDS)
stop.set()
for t in threads[2:]:
    t.join(30)
try:
    conn.flush()                # the last requests; then every answer must come
except Exception as exc:
    problems.append("final flush: %r" % (exc,))
deadline = time.monotonic() + 20
while time.monotonic() < deadline:
    with lock:
        if len(answered) == len(sent):
            break
    time.sleep(0.01)
with lock:
    missing = len(sent) - len(answered)
    total = len(sent)
conn.close()
threads[1].join(30)
peer.close()
threads[0].join(30)
hung = [t.name for t in threads if t.is_alive()]
report(total=total, missing=missing, problems=problems[:10], hung=hung)
'''


def test_buffered_request_response_with_threads():
    """A write-buffered Connection shared by sender threads (send_bytes,
    send_many, flush) and a reader thread, against a write-buffered echo
    peer: the read lock and the send lock meet in every order, no request
    waits in a buffer while its answer is awaited, and every answer comes
    back whole, once."""
    for buffer in (1000, 65536):
        result = run_scenario(BUFFERED_RR, timeout=SECONDS + 120, seconds=SECONDS / 2,
                              senders=4, buffer=buffer)
        assert result["problems"] == [], result
        assert result["hung"] == [], result
        assert result["missing"] == 0 and result["total"] >= 100, result


@pytest.mark.parametrize("write_buffer", [0, 4096])
def test_readers_senders_and_closers_share_connections(write_buffer):
    """Defects 1, 2, 5, 6 under load: 4 readers, 4 senders, 4 closers on
    shared Connections; no crash, no torn or crossed frame.  With a write
    buffer, closers also close Connections whose buffers hold frames, while
    a flush may be sending from them."""
    result = run_scenario(STRESS, timeout=SECONDS + 120, seconds=SECONDS, threads=4, slots=2,
                          write_buffer=write_buffer)
    stats = result["stats"]
    assert result["problems"] == [], (
        f"{result['problem_count']} problems, first ones: {result['problems']}; stats: {stats}"
    )
    assert result["hung"] == [], f"threads still running: {result['hung']}"
    # It did run: frames went through and Connections were closed under load.
    assert stats.get("delivered", 0) >= 50, stats
    assert stats.get("closes", 0) >= 5, stats
