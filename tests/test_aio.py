"""tcpframe.aio: FrameStream, open_connection and start_server's serving, on
asyncio's default loop and on uvloop, over real loopback sockets.

These mirror the blocking API's tests (test_frames.py, test_connection.py):
the same wire format and the same exceptions with the same fields.  The
server's budgets (idle_timeout, frame_timeout, max_connections...) are
tested in test_aio_server.py.  No pytest-asyncio: the `run` fixture drives
a coroutine to completion on a fresh loop of each kind, within a deadline.
"""
import asyncio
import contextlib
import logging
import mmap
import os
import pickle
import random
import socket
import struct
import time

import pytest

import tcpframe
import tcpframe.aio as aio
from tcpframe import ConnectionClosed, FrameError, FrameTooLarge, UnsafePickle, lesson
from tcpframe._tcpframe import Receiver, encode_frames
from tcpframe.testing import coalesce, half_close, reset, trickle
from test_header import BAD_HEADERS

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is in the test extra
    uvloop = None

# A backstop only: every wait below is bounded far more tightly.
pytestmark = pytest.mark.timeout(60)

SAFETY = 10.0          # s: the bound on every single wait in these tests
DIRECT = 1 << 16       # payloads this large are received straight into their bytes
BIG = DIRECT + 4_608   # one of those
BIG_PAYLOAD = random.Random(20240601).randbytes(BIG)

LOOPS = [
    "asyncio",
    pytest.param("uvloop", marks=pytest.mark.skipif(uvloop is None, reason="uvloop not installed")),
]


def _new_loop(kind):
    return uvloop.new_event_loop() if kind == "uvloop" else asyncio.new_event_loop()


def _finish(loop):
    """What asyncio.run does on the way out: cancel what is left, stop the
    executor's threads (each bounded by its socket timeout), close."""
    try:
        tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        loop.close()


@pytest.fixture(params=LOOPS)
def run(request, caplog):
    """run(coro_fn, *args): await coro_fn(*args) on a new loop of this kind."""
    kind = request.param

    def runner(coro_fn, *args, timeout=30.0):
        loop = _new_loop(kind)
        try:
            task = loop.create_task(asyncio.wait_for(coro_fn(*args), timeout))
            loop.run_until_complete(asyncio.wait([task]))
            # Raised here, not from inside run_until_complete: pytest reading
            # uvloop's loop.pyx for a failure's traceback breaks on 3.11.7.
            return task.result()
        finally:
            _finish(loop)

    yield runner
    # Nothing failed behind the test's back: a protocol callback that
    # raised, a transport's fatal error, an exception no one retrieved.
    errors = [r for r in caplog.records if r.name == "asyncio" and r.levelno >= logging.ERROR]
    assert not errors, "\n".join(r.getMessage() for r in errors)


@pytest.fixture(params=["client", "server"])
def side(request):
    """Which end the FrameStream under test is: open_connection's or start_server's."""
    return request.param


# ------------------------------------------------------------------ pairs


@contextlib.asynccontextmanager
async def client_stream(rcvbuf=None, **kwargs):
    """(stream, raw): a FrameStream from open_connection, and the blocking
    socket at the other end."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        if rcvbuf is not None:   # inherited by the accepted socket
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        listener.settimeout(SAFETY)
        stream = await aio.open_connection(*listener.getsockname(), **kwargs)
        try:
            raw, _ = listener.accept()   # the handshake is done: no wait
        except BaseException:
            stream.close()
            raise
    raw.settimeout(SAFETY)
    try:
        yield stream, raw
    finally:
        raw.close()   # first: a stream whose peer is gone never waits to flush
        stream.close()
        await asyncio.wait_for(stream.wait_closed(), SAFETY)


@contextlib.asynccontextmanager
async def server_stream(**kwargs):
    """(stream, raw): the FrameStream start_server hands its handler for a
    blocking client socket raw.  The handler waits until the test is done."""
    loop = asyncio.get_running_loop()
    got = loop.create_future()
    done = loop.create_future()

    async def handler(stream):
        got.set_result(stream)
        await done

    server = await aio.start_server(handler, "127.0.0.1", 0, **kwargs)
    try:
        raw = socket.create_connection(server.address, timeout=SAFETY)
        try:
            yield await asyncio.wait_for(got, SAFETY), raw
        finally:
            raw.close()
    finally:
        done.set_result(None)
        server.close()
        await asyncio.wait_for(server.wait_closed(), SAFETY)


def pair(side, **kwargs):
    return (client_stream if side == "client" else server_stream)(**kwargs)


@contextlib.asynccontextmanager
async def stream_pair():
    """(client, server): two FrameStreams talking to each other."""
    loop = asyncio.get_running_loop()
    got = loop.create_future()
    done = loop.create_future()

    async def handler(stream):
        got.set_result(stream)
        await done

    async with await aio.start_server(handler, "127.0.0.1", 0) as server:
        async with await aio.open_connection(*server.address) as client:
            try:
                yield client, await asyncio.wait_for(got, SAFETY)
            finally:
                done.set_result(None)


async def in_thread(func, *args):
    """A blocking peer's call, off the loop (its socket timeout bounds it)."""
    return await asyncio.to_thread(func, *args)


def background(func, *args):
    """Start func(*args) in a thread now; await the result later."""
    return asyncio.ensure_future(asyncio.to_thread(func, *args))


async def until(condition, what="condition"):
    """Poll condition() while the loop runs, for at most SAFETY seconds."""
    deadline = time.monotonic() + SAFETY
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not reached within {SAFETY} s"
        await asyncio.sleep(0.001)


def read_n(sock, n):
    return [tcpframe.read_bytes(sock) for _ in range(n)]


def read_to_eof(sock):
    """Every frame until the peer hangs up (cleanly, between frames)."""
    frames = []
    while True:
        try:
            frames.append(tcpframe.read_bytes(sock))
        except ConnectionClosed as exc:
            assert exc.expected is None, exc
            return frames


def buffered_after(frames, cut):
    """What FrameStream.buffered reports once the first `cut` bytes of
    these frames arrived: whole frames' payloads, plus the raw bytes
    (header included) of the one in progress."""
    total = 0
    for frame in frames:
        size = 8 + len(frame)
        if cut < size:
            return total + cut
        total += len(frame)
        cut -= size
    return total


# ------------------------------------------------------------- the Receiver


SMALL_FRAMES = [b"alpha", b"", b"gamma" * 10, b"\x00\xff" * 20]


def test_receiver_split_at_every_offset():
    frames = SMALL_FRAMES + [BIG_PAYLOAD, b"end", b""]
    data = encode_frames(frames)
    small = len(encode_frames(SMALL_FRAMES))
    big_end = small + 8 + BIG
    cuts = (set(range(0, small + 40)) | set(range(small + 8 + DIRECT - 4, small + 8 + DIRECT + 4))
            | set(range(big_end - 10, len(data) + 1)))
    for cut in sorted(cuts):
        r = Receiver()
        assert r.feed(data[:cut]) == cut
        assert r.buffered == buffered_after(frames, cut)
        assert r.feed(data[cut:]) == len(data) - cut
        assert (r.ready, r.in_frame, r.expected, r.partial()) == (len(frames), False, None, b"")
        assert r.pop_all() == frames, cut
        assert r.pop() is None and r.buffered == 0


def test_receiver_byte_by_byte_reports_the_frame_in_progress():
    frames = [b"hello", b""]
    data = encode_frames(frames)
    r = Receiver()
    for n in range(1, 13):   # n bytes of b"00000005hello" in
        r.feed(data[n - 1:n])
        expected = None if n < 8 else 13   # known once the header is whole
        assert (r.ready, r.in_frame, r.expected, r.partial()) == (0, True, expected, data[:n])
        assert r.buffered == n
    r.feed(data[12:13])
    assert (r.ready, r.in_frame, r.ready_bytes, r.expected) == (1, False, 5, None)
    r.feed(data[13:])
    assert r.ready == 2 and r.pop() == b"hello" and r.pop() == b"" and r.pop() is None


def test_receiver_large_frame_in_progress():
    r = Receiver()
    head = tcpframe.encode_header(BIG) + BIG_PAYLOAD[:1000]
    r.feed(head)
    assert (r.ready, r.in_frame, r.expected, r.buffered) == (0, True, 8 + BIG, len(head))
    assert r.partial() == head
    r.feed(BIG_PAYLOAD[1000:])
    assert r.pop() == BIG_PAYLOAD and not r.in_frame and r.buffered == 0


def test_receiver_large_frame_split_where_its_bytes_object_grows():
    """A large payload's bytes object starts at 1 MiB and doubles as it
    arrives: splits just before, at and after each growth are all whole."""
    payload = os.urandom((5 << 19) + 3)   # 2.5 MiB: grown twice
    data = tcpframe.encode_frame(payload) + tcpframe.encode_frame(b"after")
    cuts = {1, 7, 8, 9, len(data) - 14, len(data) - 13, len(data) - 1}
    for grown in (1 << 20, 2 << 20):
        cuts |= set(range(8 + grown - 2, 8 + grown + 3))
    for cut in sorted(cuts):
        r = Receiver()
        r.feed(data[:cut])
        if cut < 8 + len(payload):
            assert (r.ready, r.buffered, r.partial()) == (0, cut, data[:cut])
            assert r.expected == (8 + len(payload) if cut >= 8 else None)
        else:
            assert r.ready == 1
        r.feed(data[cut:])
        assert r.pop_all() == [payload, b"after"], cut


def test_receiver_through_its_window_as_a_loop_does():
    data = encode_frames([b"one", BIG_PAYLOAD, b"two"])
    r = Receiver()
    at = 0
    while at < len(data):
        window = r.get_buffer(-1)
        view = memoryview(window)
        n = min(len(view), 1000, len(data) - at)
        view[:n] = data[at:at + n]
        view.release()
        r.buffer_updated(n)
        at += n
        with pytest.raises(BufferError):
            memoryview(window)   # stale once buffer_updated() ran
    assert r.pop_all() == [b"one", BIG_PAYLOAD, b"two"]


def test_receiver_bad_header_after_good_frames():
    r = Receiver()
    r.feed(tcpframe.encode_frame(b"first") + b"+0000001payload")
    assert r.failed and r.ready == 1
    assert r.pop() == b"first"
    for pop in (r.pop, r.pop, r.pop_all):   # every time, not once
        with pytest.raises(FrameError) as info:
            pop()
        assert not isinstance(info.value, FrameTooLarge)
        assert info.value.header == b"+0000001"
    with pytest.raises(BufferError):
        r.get_buffer(-1)   # a loop must stop reading


def test_receiver_too_large_before_any_payload():
    r = Receiver(max_size=5)
    assert r.max_size == 5
    r.feed(b"00000005" + b"12345" + b"00000006")
    assert r.pop() == b"12345"
    with pytest.raises(FrameTooLarge) as info:
        r.pop()
    assert (info.value.size, info.value.limit, info.value.header) == (6, 5, b"00000006")
    assert r.buffered == 8   # the header, nothing reserved for the payload


# ------------------------------------------------------- frames, both sides


def test_round_trip_helpers(run):
    async def main():
        async with stream_pair() as (a, b):
            await a.send_bytes(b"bytes")
            await a.send_bytes(bytearray(b"array"))
            await a.send_bytes(memoryview(b"xview")[1:])
            await a.send_string("text \u2713")
            await a.send_object({"k": [1, 2]})
            await a.send_object({1, 2}, codec="pickle")
            await a.send_bytes(BIG_PAYLOAD)
            await a.send_bytes(b"")
            assert await b.read_bytes() == b"bytes"
            assert await b.read_bytes() == b"array"
            assert await b.read_bytes() == b"view"
            assert await b.read_string() == "text \u2713"
            assert await b.read_object() == {"k": [1, 2]}
            assert await b.read_object(codec="pickle") == {1, 2}
            assert await b.read_bytes() == BIG_PAYLOAD
            assert await b.read_bytes() == b""
            assert b.buffered == 0 and not b.frame_ready
            await b.send_bytes(b"back")
            assert await a.read_bytes() == b"back"

    run(main)


def test_sends_return_at_once_below_the_high_water_mark(run):
    """send_* are coroutines, but while the peer keeps up they finish
    without suspending (as a StreamWriter.write would)."""
    async def main():
        async with client_stream() as (stream, raw):
            # Below the mark whatever the kernel took of the large frame.
            stream.transport.set_write_buffer_limits(high=1 << 20)
            for send in (lambda: stream.send_bytes(b"x"), lambda: stream.send_bytes(BIG_PAYLOAD),
                         lambda: stream.send_many([b"y", b"z"]), lambda: stream.send_string("s"),
                         lambda: stream.send_object([1]), stream.drain):
                coro = send()
                with pytest.raises(StopIteration):
                    coro.send(None)   # one step, and it is done
            got = await in_thread(read_n, raw, 6)
            assert got == [b"x", BIG_PAYLOAD, b"y", b"z", b"s", b"[1]"]

    run(main)


def test_a_frame_leaves_in_one_system_call(run):
    """As test_frames' blocking check: header and payload in one send(), so
    a peer blocked in recv() gets them together (no Nagle stall)."""
    async def main():
        async with client_stream() as (stream, raw):
            for i in range(20):
                first = background(raw.recv, 65536)
                await asyncio.sleep(0.005)   # let the peer block in recv()
                payload = b"%d" % i * 50
                await stream.send_bytes(payload)
                assert await first == tcpframe.encode_frame(payload)

    run(main)


@pytest.mark.parametrize("size", [0, 1, DIRECT - 1, DIRECT, (1 << 20) + 3, 5 << 20])
def test_round_trip_sizes_with_the_blocking_api(run, size):
    payload = os.urandom(size)

    async def main():
        async with client_stream() as (stream, raw):
            sender = background(tcpframe.send_bytes, raw, payload)
            assert await stream.read_bytes() == payload
            await sender
            echo = background(tcpframe.read_bytes, raw)
            await stream.send_bytes(payload)
            assert await echo == payload

    run(main)


def test_frames_split_at_every_offset(run, side):
    """As test_connection's, over TCP: the first part is seen arriving
    (stream.buffered says so) before the rest is sent."""
    frames = SMALL_FRAMES + [BIG_PAYLOAD, b"end"]
    data = encode_frames(frames)
    small = len(encode_frames(SMALL_FRAMES))
    big_end = small + 8 + BIG
    cuts = sorted(set(range(1, small + 24)) | set(range(big_end - 12, len(data)))
                  | {small + 8 + DIRECT - 1, small + 8 + DIRECT, small + 8 + DIRECT + 1})

    async def main():
        async with pair(side) as (stream, raw):
            for cut in cuts:
                await in_thread(raw.sendall, data[:cut])
                want = buffered_after(frames, cut)
                await until(lambda: stream.buffered == want, f"cut {cut}: {want} bytes buffered")
                await in_thread(raw.sendall, data[cut:])
                assert [await stream.read_bytes() for _ in frames] == frames, cut
                assert stream.buffered == 0

    run(main)


def test_trickled_input(run, side):
    """Small frames a byte per send, a large one in small sends; then the
    peer hangs up on a frame boundary and async for ends cleanly."""
    small = [b"slowly", b"", b"x" * 20]

    def peer(raw):
        trickle(raw, encode_frames(small), 1, 0.001)
        trickle(raw, tcpframe.encode_frame(BIG_PAYLOAD), 1000, 0)
        trickle(raw, tcpframe.encode_frame(b"last"), 1, 0.001)
        half_close(raw)

    async def main():
        async with pair(side) as (stream, raw):
            sender = background(peer, raw)
            got = [frame async for frame in stream]
            await sender
            assert got == small + [BIG_PAYLOAD, b"last"]

    run(main)


def test_many_frames_in_one_segment(run):
    frames = [b"%d" % i for i in range(1000)]

    async def main():
        async with client_stream() as (stream, raw):
            coalesce(raw, frames)
            assert await stream.read_bytes() == b"0"
            assert [await stream.read_bytes() for _ in range(999)] == frames[1:]

    run(main)


# ------------------------------------------------------------------ EOF


@pytest.mark.parametrize("tail, expected", [
    (b"0", 8),
    (b"0000001", 8),
    (b"00000010", 18),
    (b"00000100" + b"x" * 30, 108),
])
def test_eof_mid_frame(run, side, tail, expected):
    """As the blocking API: .partial is the raw frame (header included),
    .expected its whole size, or 8 while the header is not whole."""
    async def main():
        async with pair(side) as (stream, raw):
            raw.sendall(tcpframe.encode_frame(b"whole") + tail)
            raw.close()
            assert await stream.read_bytes() == b"whole"
            for _ in range(2):   # the same every time
                with pytest.raises(ConnectionClosed) as info:
                    await stream.read_bytes()
                assert (info.value.partial, info.value.expected) == (tail, expected)
            with pytest.raises(ConnectionClosed) as info:
                await stream.read_many()
            assert (info.value.partial, info.value.expected) == (tail, expected)
            with pytest.raises(ConnectionClosed):   # not a clean end of iteration
                async for _ in stream:
                    pass

    run(main)


def test_eof_mid_large_payload_after_growth(run, side):
    """As test_frames': a large payload received straight into its bytes
    object, past its first 1 MiB, then the peer hangs up."""
    sent = b"04000000" + BIG_PAYLOAD + os.urandom(3_000_000 - BIG)

    async def main():
        async with pair(side) as (stream, raw):
            await in_thread(raw.sendall, sent)
            half_close(raw)
            with pytest.raises(ConnectionClosed) as info:
                await stream.read_bytes()
            assert info.value.partial == sent
            assert info.value.expected == 8 + 4_000_000

    run(main)


def test_clean_eof_between_frames(run, side):
    async def main():
        async with pair(side) as (stream, raw):
            coalesce(raw, [b"a", b"", b"c"])
            half_close(raw)
            assert [frame async for frame in stream] == [b"a", b"", b"c"]
            assert [frame async for frame in stream] == []
            for read in (stream.read_bytes, stream.read_many, stream.read_string, stream.read_object):
                with pytest.raises(ConnectionClosed) as info:
                    await read()
                assert (info.value.partial, info.value.expected) == (b"", None)
                assert "between frames" in str(info.value)
            # The peer is done sending, not receiving: we may still reply.
            await stream.send_bytes(b"reply")
            assert await in_thread(tcpframe.read_bytes, raw) == b"reply"

    run(main)


def test_reset_by_peer(run, side):
    """An RST is not a clean end: ConnectionClosed, caused by the reset."""
    async def main():
        async with pair(side) as (stream, raw):
            raw.sendall(b"000")
            await until(lambda: stream.buffered == 3, "3 header bytes buffered")
            reset(raw)
            with pytest.raises(ConnectionClosed) as info:
                await stream.read_bytes()
            assert isinstance(info.value.__cause__, ConnectionResetError)
            assert (info.value.partial, info.value.expected) == (b"000", 8)

    run(main)


# ----------------------------------------------------- bad and large headers


def test_bad_header_after_good_frames(run, side):
    async def main():
        for header in BAD_HEADERS:
            async with pair(side) as (stream, raw):
                coalesce(raw, [b"first", b""])
                raw.sendall(header + b"payload")
                assert await stream.read_bytes() == b"first"
                assert await stream.read_bytes() == b""
                for read in (stream.read_bytes, stream.read_bytes, stream.read_many):
                    with pytest.raises(FrameError) as info:
                        await read()
                    assert not isinstance(info.value, FrameTooLarge)
                    assert info.value.header == header
                    assert "out of sync" in str(info.value)

    run(main)


def test_bad_header_alone_trickled_ends_iteration_with_frame_error(run, side):
    async def main():
        async with pair(side) as (stream, raw):
            sender = background(trickle, raw, tcpframe.encode_frame(b"ok") + b"0000_001", 1, 0.001)
            got = []
            with pytest.raises(FrameError) as info:
                async for frame in stream:
                    got.append(frame)
            await sender
            assert got == [b"ok"] and info.value.header == b"0000_001"

    run(main)


def test_bad_header_waiting_reader_is_woken(run):
    async def main():
        async with client_stream() as (stream, raw):
            reader = asyncio.ensure_future(stream.read_bytes())
            await asyncio.sleep(0.01)
            raw.sendall(b"abcdefgh")
            with pytest.raises(FrameError) as info:
                await asyncio.wait_for(reader, SAFETY)
            assert info.value.header == b"abcdefgh"

    run(main)


def test_too_large_refused_before_its_payload(run, side):
    """The peer sends only the header: the refusal cannot wait for a body."""
    async def main():
        async with pair(side, max_size=5) as (stream, raw):
            assert stream.max_size == 5
            raw.sendall(tcpframe.encode_frame(b"12345") + b"00000006")
            assert await stream.read_bytes() == b"12345"   # exactly max_size: fine
            for read in (stream.read_bytes, stream.read_many):
                with pytest.raises(FrameTooLarge) as info:
                    await read()
                err = info.value
                assert isinstance(err, FrameError)
                assert (err.size, err.limit, err.header) == (6, 5, b"00000006")
                assert "max_size=5" in str(err)

    run(main)


def test_too_large_reserves_nothing(run):
    async def main():
        async with client_stream(max_size=1 << 20) as (stream, raw):
            raw.sendall(b"99999999")
            with pytest.raises(FrameTooLarge) as info:
                await stream.read_bytes()
            assert (info.value.size, info.value.limit) == (99_999_999, 1 << 20)
            assert stream.buffered == 8

    run(main)


def test_payload_over_max_size_is_refused_before_sending(run):
    async def main():
        async with client_stream() as (stream, raw):
            with mmap.mmap(-1, tcpframe.MAX_SIZE + 1) as huge:
                with pytest.raises(FrameTooLarge) as info:
                    await stream.send_bytes(huge)
                assert (info.value.size, info.value.limit) == (tcpframe.MAX_SIZE + 1, tcpframe.MAX_SIZE)
                with pytest.raises(FrameTooLarge):
                    await stream.send_many([b"first", huge])
            with pytest.raises(TypeError):
                await stream.send_many([b"ok", "text"])
            await stream.send_bytes(b"after")
            # Nothing of the refused frames went out, not even "first" or "ok".
            assert await in_thread(tcpframe.read_bytes, raw) == b"after"

    run(main)


# ------------------------------------------------------------ cancellation


CANCEL_FRAMES = [b"", b"a", b"hello world", bytes(range(256)), b"", BIG_PAYLOAD, b"end"]


def _trickle_frames(raw, frames):
    """Small frames a byte per send, large ones 4 KiB per send."""
    for frame in frames:
        data = tcpframe.encode_frame(frame)
        trickle(raw, data, 1 if len(frame) < DIRECT else 4096, 0.0005)


@pytest.mark.parametrize("how", ["wait_for", "timeout", "cancel"])
def test_cancelled_reads_lose_nothing(run, side, how):
    """Reads cancelled at random points while the peer trickles: every
    frame still arrives whole and in order, through every kind of read."""
    if how == "timeout" and not hasattr(asyncio, "timeout"):
        pytest.skip("asyncio.timeout is new in 3.11")
    rng = random.Random(how)

    async def one_read(stream, kind):
        if kind == "bytes":
            return [await stream.read_bytes()]
        if kind == "many":
            return await stream.read_many()
        if kind == "anext":
            return [await stream.__anext__()]
        return [(await stream.read_string(encoding="latin-1")).encode("latin-1")]

    async def main():
        async with pair(side) as (stream, raw):
            sender = background(_trickle_frames, raw, CANCEL_FRAMES)
            got, cancelled, i = [], 0, 0
            while len(got) < len(CANCEL_FRAMES):
                kind = ("bytes", "many", "anext", "string")[i % 4]
                i += 1
                pause = rng.choice([0, 0, 0.0001, 0.0005, 0.002])
                if how == "cancel":
                    # Cancelled after 0 (before it starts) to 4 steps of the loop.
                    task = asyncio.ensure_future(one_read(stream, kind))
                    for _ in range(i % 5):
                        await asyncio.sleep(0)
                    task.cancel()
                    await asyncio.wait([task])
                    if task.cancelled():
                        cancelled += 1
                    else:
                        got += task.result()
                    continue
                try:
                    if how == "wait_for":
                        got += await asyncio.wait_for(one_read(stream, kind), pause)
                    else:
                        async with asyncio.timeout(pause):
                            got += await one_read(stream, kind)
                except asyncio.TimeoutError:
                    cancelled += 1
            await sender
            assert got == CANCEL_FRAMES
            assert cancelled > 0 and stream.buffered == 0

    run(main)


def test_cancelled_wait_closed_still_closes(run):
    async def main():
        async with client_stream() as (stream, raw):
            stream.close()
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(stream.wait_closed(), 0)
            await asyncio.wait_for(stream.wait_closed(), SAFETY)
            assert stream.closed

    run(main)


# ------------------------------------------------------------- read_many


def test_read_many(run, side):
    async def main():
        async with pair(side) as (stream, raw):
            coalesce(raw, [b"1", b"22", b""])
            await until(lambda: stream.buffered == 3 and stream.frame_ready, "3 frames buffered")
            assert await stream.read_many() == [b"1", b"22", b""]
            # Nothing buffered, or only part of a frame: it waits for one.
            waiting = asyncio.ensure_future(stream.read_many())
            raw.sendall(b"0000000")
            await until(lambda: stream.buffered == 7, "7 header bytes buffered")
            await asyncio.sleep(0.01)
            assert not waiting.done()
            raw.sendall(b"3abc" + b"00000002de" + b"000")
            got = await asyncio.wait_for(waiting, SAFETY)
            if got == [b"abc"]:   # the segment was split on the way
                got += await stream.read_many()
            assert got == [b"abc", b"de"]
            # read_bytes first, then the rest; frames before EOF come first.
            raw.sendall(b"00001f" + tcpframe.encode_frame(b"g"))   # b"000" + b"00001f": "f"
            half_close(raw)
            assert await stream.read_bytes() == b"f"
            assert await stream.read_many() == [b"g"]
            with pytest.raises(ConnectionClosed) as info:
                await stream.read_many()
            assert info.value.expected is None

    run(main)


# -------------------------------------------------------- sending, writers


def test_concurrent_writers_never_interleave_inside_a_frame(run):
    """Several tasks send mixed sizes (small, just under and over 64 KiB,
    large; bytes, bytearray, memoryview) and batches on one stream, yielding
    between sends; the peer gets every frame whole, each task's in order."""
    sizes = [6, 7, 100, 5000, DIRECT - 1, DIRECT, 200_000, 6]
    kinds = [bytes, bytearray, memoryview]
    tasks_n, per_task = 4, 24

    def payload(task, seq):
        size = sizes[(task + seq) % len(sizes)]
        tag = struct.pack("!HI", task, seq)
        return (tag * (size // 6 + 1))[:size]

    async def writer(stream, task):
        rng = random.Random(task)
        seq = 0
        while seq < per_task:
            if task == 0:   # send_many, batches of 1 to 5, with an empty frame
                batch = [payload(task, s) for s in range(seq, min(per_task, seq + rng.randint(1, 5)))]
                assert await stream.send_many(iter(batch + [b""])) == len(batch) + 1
                seq += len(batch)
            else:
                data = kinds[seq % 3](payload(task, seq))
                await stream.send_bytes(data)
                seq += 1
            for _ in range(rng.randint(0, 2)):
                await asyncio.sleep(0)

    async def main():
        async with client_stream() as (stream, raw):
            reader = background(read_to_eof, raw)
            await asyncio.gather(*(writer(stream, t) for t in range(tasks_n)))
            stream.close()
            got = await reader
        empties = [f for f in got if not f]
        seen = {}
        for frame in got:
            if frame:
                task, seq = struct.unpack("!HI", frame[:6])
                assert frame == payload(task, seq), (task, seq)
                seen.setdefault(task, []).append(seq)
        assert seen == {t: list(range(per_task)) for t in range(tasks_n)}
        assert len(empties) == len(got) - tasks_n * per_task > 0

    run(main)


def test_flow_control_blocks_then_resumes(run):
    """To a peer that reads nothing, send_bytes soon waits instead of
    buffering without bound; a send cancelled while waiting still put its
    whole frame in the stream; when the peer reads, everything arrives."""
    frame_size = 10_000
    cap = 3000   # 30 MB: far more than any socket buffers hold

    def payload(i):
        return struct.pack("!I", i) * (frame_size // 4)

    async def main():
        async with client_stream(rcvbuf=8192) as (stream, raw):
            transport = stream.transport
            transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
            high = transport.get_write_buffer_limits()[1]
            state = {"sent": 0, "most": 0}

            async def sender():
                for i in range(cap):
                    await stream.send_bytes(payload(i))
                    state["sent"] += 1
                    state["most"] = max(state["most"], transport.get_write_buffer_size())

            task = asyncio.ensure_future(sender())
            # Blocked: no progress across a pause in which it could have run.
            last = -1
            while state["sent"] != last:
                last = state["sent"]
                await asyncio.sleep(0.2)
                assert not task.done(), "sent 30 MB to a peer that reads nothing"
            assert 0 < state["sent"] < cap
            # Frames sent in one step are gathered (up to 64 KiB), then
            # written together: the mark is overshot by at most that.
            bound = high + (1 << 16) + 2 * (frame_size + 8)
            assert state["most"] <= bound and transport.get_write_buffer_size() <= bound
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            written = state["sent"] + 1   # the cancelled send's frame went out whole
            # The peer reads: what was written arrives, then sends resume.
            reader = background(read_n, raw, written + 3)
            await asyncio.wait_for(stream.drain(), SAFETY)
            assert transport.get_write_buffer_size() <= high
            await stream.send_bytes(b"a")
            await stream.send_many([b"b", payload(cap)])
            got = await reader
            assert got[:written] == [payload(i) for i in range(written)]
            assert got[written:] == [b"a", b"b", payload(cap)]

    run(main)


def test_frames_sent_just_before_close_arrive(run):
    async def main():
        async with client_stream() as (stream, raw):
            reader = background(read_to_eof, raw)
            for i in range(5):
                await stream.send_bytes(b"%d" % i)
            await stream.send_bytes(BIG_PAYLOAD)
            await stream.send_many([b"x", b""])
            await stream.send_bytes(b"last")
            stream.close()
            await asyncio.wait_for(stream.wait_closed(), SAFETY)
            assert await reader == [b"0", b"1", b"2", b"3", b"4", BIG_PAYLOAD, b"x", b"", b"last"]

    run(main)


# ---------------------------------------------------------------- objects


class Plain:
    """A class: not plain data, so only a trusted read rebuilds it."""

    def __init__(self, value):
        self.value = value

    def __eq__(self, other):
        return isinstance(other, Plain) and other.value == self.value


def test_objects_json_and_restricted_pickle(run):
    async def main():
        async with stream_pair() as (a, b):
            await a.send_object({"k": [1, 2.5, None, True, "\u00e9"]})
            assert await b.read_object() == {"k": [1, 2.5, None, True, "\u00e9"]}
            plain = [(1, 2), {3}, frozenset({4}), b"b", bytearray(b"ba"), 1 + 2j]
            await a.send_object(plain, codec="pickle")
            assert await b.read_object(codec="pickle") == plain
            # Not plain data: refused, nothing run, and the stream stays in sync.
            await a.send_bytes(pickle.dumps(os.system))
            await a.send_object(Plain(3), codec="pickle")
            await a.send_object(Plain(4), codec="pickle")
            await a.send_bytes(b"after")
            with pytest.raises(UnsafePickle) as info:
                await b.read_object(codec="pickle")
            assert info.value.global_name == f"{os.name}.system"
            with pytest.raises(UnsafePickle) as info:
                await b.read_object(codec="pickle")
            assert info.value.global_name == f"{__name__}.Plain"
            assert await b.read_object(codec="pickle", trusted=True) == Plain(4)
            assert await b.read_bytes() == b"after"
            # A frame that is not JSON: ValueError, consumed, in sync.
            await a.send_bytes(b"{not json")
            await a.send_bytes(b"\xff\xfe")
            await a.send_object([1])
            with pytest.raises(ValueError):
                await b.read_object()
            with pytest.raises(ValueError):
                await b.read_object()
            assert await b.read_object() == [1]
            # The limits: JSON depth, and the pickle's (PickleTooComplex, in sync).
            await a.send_bytes(b"[[[1]]]")
            await a.send_object([[1], [2]], codec="pickle")
            await a.send_object([[1], [2]], codec="pickle")
            with pytest.raises(ValueError, match="max_depth=2"):
                await b.read_object(max_depth=2)
            with pytest.raises(tcpframe.PickleTooComplex) as info:
                await b.read_object(codec="pickle", pickle_limits={"max_containers": 2})
            assert info.value.limit == "max_containers"
            limits = tcpframe.PickleLimits(max_containers=3)
            assert await b.read_object(codec="pickle", pickle_limits=limits) == [[1], [2]]
            # Unknown codec: refused before reading anything.
            await a.send_bytes(b"kept")
            with pytest.raises(ValueError, match="unknown codec"):
                await b.read_object(codec="yaml")
            assert await b.read_bytes() == b"kept"
            # Cannot be serialised: TypeError, nothing sent.
            for bad in (object(), {1, 2}):
                with pytest.raises(TypeError):
                    await a.send_object(bad)
            with pytest.raises(ValueError, match="NaN or infinity"):
                await a.send_object([float("nan")])   # JSON has no NaN
            with pytest.raises(TypeError):
                await a.send_object(lambda: 0, codec="pickle")
            with pytest.raises(ValueError):
                await a.send_object([1], codec="yaml")
            await a.send_bytes(b"next")
            assert await b.read_bytes() == b"next"

    run(main)


def test_strings_and_encodings(run):
    async def main():
        async with stream_pair() as (a, b):
            await a.send_string("h\u00e9llo \u2713")
            assert await b.read_bytes() == "h\u00e9llo \u2713".encode()
            await a.send_string("h\u00e9llo", encoding="latin-1")
            assert await b.read_bytes() == b"h\xe9llo"
            await a.send_string("h\u00e9llo", encoding="latin-1")
            assert await b.read_string(encoding="latin-1") == "h\u00e9llo"
            await a.send_string("\u2713 utf-16", encoding="utf-16")
            assert await b.read_string(encoding="utf-16") == "\u2713 utf-16"
            await a.send_bytes(b"bad \xff")
            await a.send_bytes(b"bad \xff")
            await a.send_string("")
            with pytest.raises(UnicodeDecodeError):
                await b.read_string()
            assert await b.read_string(errors="replace") == "bad \ufffd"
            assert await b.read_string() == ""
            with pytest.raises(TypeError):
                await a.send_string(b"bytes")
            with pytest.raises(UnicodeEncodeError):
                await a.send_string("\u2713", encoding="ascii")

    run(main)


def test_objects_interoperate_with_the_blocking_api(run):
    async def main():
        async with client_stream() as (stream, raw):
            await stream.send_object({"a": [1]})
            await stream.send_object((1, {2}), codec="pickle")
            assert await in_thread(tcpframe.read_object, raw) == {"a": [1]}
            assert await in_thread(lambda: tcpframe.read_object(raw, codec="pickle")) == (1, {2})
            tcpframe.send_object(raw, [None, 1.5])
            tcpframe.send_object(raw, b"raw", codec="pickle")
            tcpframe.send_string(raw, "\u00e9t\u00e9")
            assert await stream.read_object() == [None, 1.5]
            assert await stream.read_object(codec="pickle") == b"raw"
            assert await stream.read_string() == "\u00e9t\u00e9"

    run(main)


# --------------------------------------------------- the stream's lifecycle


def test_close_then_reads_and_sends_raise_value_error(run, side):
    async def main():
        async with pair(side) as (stream, raw):
            coalesce(raw, [b"queued"])
            await until(lambda: stream.frame_ready, "a frame buffered")
            assert not stream.closed and "open" in repr(stream)
            stream.close()
            assert stream.closed and "closed" in repr(stream)
            # Like a closed Connection: even a frame already buffered is not read.
            for read in (stream.read_bytes, stream.read_many, stream.read_string,
                         stream.read_object, stream.__anext__):
                with pytest.raises(ValueError, match="closed"):
                    await read()
            for send in (lambda: stream.send_bytes(b"x"), lambda: stream.send_many([b"x"]),
                         lambda: stream.send_string("x"), lambda: stream.send_object(1)):
                with pytest.raises(ValueError, match="closed"):
                    await send()
            await asyncio.wait_for(stream.wait_closed(), SAFETY)
            stream.close()   # again: fine
            await stream.wait_closed()
            raw.settimeout(SAFETY)
            assert await in_thread(raw.recv, 1) == b""   # the peer saw EOF

    run(main)


def test_close_wakes_a_waiting_reader(run):
    async def main():
        async with client_stream() as (stream, raw):
            raw.sendall(b"0000")   # part of a header: the read must wait
            reader = asyncio.ensure_future(stream.read_bytes())
            await until(lambda: stream.buffered == 4, "4 bytes buffered")
            assert not reader.done()
            stream.close()
            with pytest.raises(ValueError, match="closed"):
                await asyncio.wait_for(reader, SAFETY)

    run(main)


def test_async_with_and_properties(run):
    async def main():
        with socket.create_server(("127.0.0.1", 0)) as listener:
            listener.settimeout(SAFETY)
            async with await aio.open_connection(*listener.getsockname(), max_size=1000) as stream:
                raw, _ = listener.accept()
                with raw:
                    assert stream.peername == listener.getsockname()
                    assert stream.sockname == raw.getpeername()
                    assert stream.max_size == 1000
                    assert stream.transport.get_extra_info("peername") == stream.peername
                    assert not stream.closed
                    await stream.send_bytes(b"hi")
                    assert await in_thread(tcpframe.read_bytes, raw) == b"hi"
            assert stream.closed
            with pytest.raises(ValueError):
                await aio.open_connection(*listener.getsockname(), max_size=-1)

    run(main)


def test_connection_refused_is_an_oserror(run):
    async def main():
        with socket.create_server(("127.0.0.1", 0)) as listener:
            address = listener.getsockname()
        with pytest.raises(ConnectionRefusedError):
            await aio.open_connection(*address)

    run(main)


@pytest.mark.parametrize("how", ["reset", "close"])
def test_send_after_the_peer_is_gone(run, side, how):
    """The blocking API raises BrokenPipeError / ConnectionResetError;
    a FrameStream raises ConnectionClosed (also a ConnectionError, so an
    OSError) once the loop has seen the connection fail -- the first sends
    into a dead connection, as with a blocking socket, may still succeed."""
    async def main():
        async with pair(side) as (stream, raw):
            (reset if how == "reset" else socket.socket.close)(raw)
            with pytest.raises(ConnectionClosed) as info:
                for _ in range(500):
                    await stream.send_bytes(b"into the void")
                    await asyncio.sleep(0.01)
            assert isinstance(info.value, ConnectionError)
            assert "cannot send" in str(info.value)
            assert (info.value.partial, info.value.expected) == (b"", None)
            assert stream.closed or stream.transport.is_closing()

    run(main)


# ----------------------------------------------------------------- server


async def echo(stream):
    async for frame in stream:
        await stream.send_bytes(frame)


def test_server_serves_clients_at_once(run):
    async def main():
        peers = []

        async def handler(stream):
            peers.append(stream.peername)
            await echo(stream)

        async with await aio.start_server(handler, "127.0.0.1", 0) as server:
            assert server.is_serving() and len(server.sockets) == 1
            assert server.address == server.sockets[0].getsockname()[:2]
            clients = [await aio.open_connection(*server.address) for _ in range(5)]
            try:
                raw = socket.create_connection(server.address, timeout=SAFETY)
                with raw:
                    await until(lambda: server.connections == 6, "6 connections")
                    for i, c in enumerate(clients):
                        await c.send_many([b"%d" % i, BIG_PAYLOAD])
                    tcpframe.send_bytes(raw, b"blocking")
                    for i, c in enumerate(clients):
                        assert [await c.read_bytes(), await c.read_bytes()] == [b"%d" % i, BIG_PAYLOAD]
                    assert await in_thread(tcpframe.read_bytes, raw) == b"blocking"
                    assert sorted(peers) == sorted([c.sockname for c in clients] + [raw.getsockname()])
            finally:
                for c in clients:
                    c.close()
                    await c.wait_closed()
        assert not server.is_serving() and server.sockets == ()

    run(main)


def test_handler_returning_closes_the_client_after_its_replies(run):
    async def main():
        async def handler(stream):
            request = await stream.read_string()
            await stream.send_string(request.upper())
            await stream.send_bytes(BIG_PAYLOAD)

        async with await aio.start_server(handler, "127.0.0.1", 0) as server:
            async with await aio.open_connection(*server.address) as client:
                await client.send_string("hello")
                assert await client.read_string() == "HELLO"
                assert await client.read_bytes() == BIG_PAYLOAD
                with pytest.raises(ConnectionClosed) as info:
                    await client.read_bytes()
                assert info.value.expected is None

    run(main)


def test_handler_exceptions_are_logged_and_serving_goes_on(run, caplog):
    caplog.set_level(logging.DEBUG, logger="tcpframe.aio")

    async def main():
        async def handler(stream):
            async for frame in stream:
                if frame == b"boom":
                    raise RuntimeError("the handler broke")
                await stream.send_bytes(frame)

        async with await aio.start_server(handler, "127.0.0.1", 0) as server:
            for _ in range(2):
                async with await aio.open_connection(*server.address) as client:
                    await client.send_bytes(b"fine")
                    assert await client.read_bytes() == b"fine"
                    await client.send_bytes(b"boom")
                    with pytest.raises(ConnectionClosed) as info:
                        await client.read_bytes()
                    assert info.value.expected is None
            # A client sending a bad header: logged, closed, nobody else bothered.
            bad = socket.create_connection(server.address, timeout=SAFETY)
            with bad:
                bad.sendall(tcpframe.encode_frame(b"ok") + b"NOTDIGIT")
                assert await in_thread(read_to_eof, bad) == [b"ok"]
            async with await aio.open_connection(*server.address) as client:
                await client.send_bytes(b"still serving")
                assert await client.read_bytes() == b"still serving"
        failures = [r for r in caplog.records if r.name == "tcpframe.aio" and r.levelno == logging.ERROR]
        assert len(failures) == 2
        assert all(isinstance(r.exc_info[1], RuntimeError) for r in failures)
        assert any(r.levelno == logging.WARNING and "bad frame" in r.getMessage()
                   for r in caplog.records if r.name == "tcpframe.aio")

    run(main)


def test_close_ends_handlers_and_clients(run):
    async def main():
        outcomes = []

        async def handler(stream):
            try:
                await stream.read_bytes()
            except ConnectionClosed as exc:
                outcomes.append(exc)
                raise

        server = await aio.start_server(handler, "127.0.0.1", 0)
        address = server.address
        clients = [await aio.open_connection(*address) for _ in range(3)]
        try:
            await until(lambda: server.connections == 3, "3 connections")
            server.close()
            await asyncio.wait_for(server.wait_closed(), SAFETY)
            assert len(outcomes) == 3
            assert all("shutting down" in str(exc) and exc.expected is None for exc in outcomes)
            for c in clients:
                with pytest.raises(ConnectionClosed) as info:
                    await c.read_bytes()
                assert info.value.expected is None
            assert not server.is_serving() and server.connections == 0
            with pytest.raises(OSError):
                await aio.open_connection(*address)
        finally:
            for c in clients:
                c.close()
                await c.wait_closed()

    run(main)


def test_wait_closed_cancels_a_handler_busy_elsewhere(run):
    async def main():
        started, outcome = asyncio.Event(), []

        async def handler(stream):
            started.set()
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                outcome.append("cancelled")
                raise

        async with await aio.start_server(handler, "127.0.0.1", 0) as server:
            async with await aio.open_connection(*server.address) as client:
                await asyncio.wait_for(started.wait(), SAFETY)
                server.close()
                await asyncio.wait_for(server.wait_closed(), SAFETY)
                assert outcome == ["cancelled"]
                with pytest.raises(ConnectionClosed):
                    await client.read_bytes()

    run(main)


def test_serve_forever_cancelled(run):
    async def main():
        server = await aio.start_server(echo, "127.0.0.1", 0)
        address = server.address
        serving = asyncio.ensure_future(server.serve_forever())
        async with await aio.open_connection(*address) as client:
            await client.send_bytes(b"ping")
            assert await client.read_bytes() == b"ping"
            serving.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(serving, SAFETY)
            assert not server.is_serving()
            with pytest.raises(ConnectionClosed) as info:
                await client.read_bytes()
            assert info.value.expected is None
        with pytest.raises(OSError):
            await aio.open_connection(*address)

    run(main)


def test_server_reads_a_large_frame_pipelined_behind_a_small_one(run):
    """With the default budgets (max_buffered=1 MiB): a handler busy while a
    small frame and a large one pile up still gets both."""
    async def main():
        async def handler(stream):
            await asyncio.sleep(0.2)   # busy: the client's frames pile up
            async for frame in stream:
                await stream.send_bytes(b"%d" % len(frame))

        async with await aio.start_server(handler, "127.0.0.1", 0) as server:
            raw = socket.create_connection(server.address, timeout=SAFETY)
            with raw:
                big = bytes(3_000_000)
                await in_thread(raw.sendall, encode_frames([b"small", big]))
                assert await in_thread(read_n, raw, 2) == [b"5", b"3000000"]

    run(main)


# ---------------------------------------------------------------- interop


def test_blocking_clients_of_an_aio_server(run):
    texts = ["HelloWorld", "", "h\u00e9llo \u2713", "x" * 100_000]

    def lesson_client(address):
        with socket.create_connection(address, timeout=SAFETY) as sock:
            got = []
            for text in texts:
                lesson.send_string(sock, text)   # header and body in two sends
                got.append(lesson.read_string(sock).decode())
            return got

    def module_client(address):
        with socket.create_connection(address, timeout=SAFETY) as sock:
            tcpframe.send_bytes(sock, b"one")
            coalesce(sock, [b"two", b"", b"three"])
            trickle(sock, tcpframe.encode_frame(b"four"), 1, 0.001)
            tcpframe.send_bytes(sock, BIG_PAYLOAD)
            half_close(sock)
            return read_to_eof(sock)

    def connection_client(address):
        with tcpframe.Connection(socket.create_connection(address, timeout=SAFETY)) as conn:
            frames = [os.urandom(n % 50) for n in range(500)] + [BIG_PAYLOAD, b"end"]
            conn.send_many(frames)
            return [conn.read_bytes() for _ in frames] == frames

    async def main():
        async with await aio.start_server(echo, "127.0.0.1", 0) as server:
            results = await asyncio.gather(
                in_thread(lesson_client, server.address),
                in_thread(module_client, server.address),
                in_thread(connection_client, server.address),
            )
        assert results == [texts, [b"one", b"two", b"", b"three", b"four", BIG_PAYLOAD], True]

    run(main)


def test_aio_client_of_blocking_servers(run):
    def blocking_server(raw):
        assert lesson.read_string(raw) == b"HelloWorld"
        assert lesson.read_string(raw) == b""
        assert lesson.read_string(raw) == "h\u00e9llo \u2713".encode()
        assert tcpframe.read_bytes(raw) == BIG_PAYLOAD
        lesson.send_string(raw, "from the lesson")
        tcpframe.send_bytes(raw, b"from tcpframe")
        with tcpframe.Connection(raw) as conn:
            assert [conn.read_bytes() for _ in range(3)] == [b"a", b"", BIG_PAYLOAD]
            conn.send_many([b"x", BIG_PAYLOAD, b""])
            conn.send_string("bye")

    async def main():
        async with client_stream() as (stream, raw):
            peer = background(blocking_server, raw)
            for text in ["HelloWorld", "", "h\u00e9llo \u2713"]:
                await stream.send_string(text)
            await stream.send_bytes(BIG_PAYLOAD)
            assert await stream.read_string() == "from the lesson"
            assert await stream.read_bytes() == b"from tcpframe"
            await stream.send_many([b"a", b"", BIG_PAYLOAD])
            got = [frame async for frame in stream]   # the Connection's close ends it
            assert got == [b"x", BIG_PAYLOAD, b"", b"bye"]
            await peer

    run(main)


def test_wire_format_is_eight_digits_then_payload(run):
    async def main():
        async with client_stream() as (stream, raw):
            await stream.send_bytes(b"HelloWorld")
            await stream.send_many([b"", b"ab"])
            assert await in_thread(tcpframe.receive_all, raw, 36) == b"00000010HelloWorld0000000000000002ab"

    run(main)


def test_send_many_passes_large_payloads_through_in_order(run):
    """send_many writes large bytes payloads after their header, not copied
    into the batch; order and sizes are kept, and a size check comes first."""
    frames = [b"a", b"x" * 70000, b"", bytearray(b"c" * 70000), b"y" * 100000,
              b"z" * 100000, b"end"]

    async def main():
        async with stream_pair() as (a, b):
            assert await a.send_many(frames) == len(frames)
            assert await a.send_many([b"q" * 70000]) == 1
            got = []
            while len(got) < len(frames) + 1:
                got.extend(await b.read_many())
            return got

    assert run(main) == frames + [b"q" * 70000]


def test_close_wakes_a_sender_waiting_for_the_peer(run):
    """A task blocked in send_bytes (the peer reads nothing) is woken by
    close() from another task, with the error a closed stream gives."""
    async def main():
        async with client_stream(rcvbuf=4096) as (stream, raw):
            async def flood():
                while True:
                    await stream.send_bytes(b"f" * 65536)

            sender = asyncio.ensure_future(flood())
            while not stream._protocol._write_paused:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)
            assert not sender.done()
            stream.close()
            with pytest.raises(ValueError, match="closed"):
                await asyncio.wait_for(sender, 5)
            await asyncio.wait_for(stream.wait_closed(), 10)   # aborted: the peer takes nothing

    run(main)
