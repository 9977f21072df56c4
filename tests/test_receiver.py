"""The C Receiver under tcpframe.aio: its buffer rule (views pin memory, old
windows go stale, returned bytes never change), and nothing lost when memory
runs out.  The memory-failure cases run in a child process with a lowered
RLIMIT_AS (ASan cannot run under one: skipped in the sanitizer run)."""
import asyncio
import os
import ssl
import subprocess
import sys
import textwrap

import pytest

from tcpframe import FrameError, FrameTooLarge, encode_frame, encode_frames
from tcpframe._tcpframe import Receiver

sanitized = pytest.mark.skipif(
    os.environ.get("TCPFRAME_EXPECT_SANITIZED") == "1",
    reason="RLIMIT_AS and ASan's shadow memory do not mix",
)


def deliver(receiver, data):
    """Write data through get_buffer()/buffer_updated(), as a loop does."""
    data = memoryview(data)
    while data:
        window = memoryview(receiver.get_buffer(-1))
        n = min(len(window), len(data))
        window[:n] = data[:n]
        window.release()
        receiver.buffer_updated(n)
        data = data[n:]


def test_every_split_of_a_stream_gives_the_same_frames():
    payloads = [b"", b"a", b"hello", b"x" * 70000, b"tail"]
    stream = encode_frames(payloads)
    for cut in list(range(0, 40)) + [len(stream) // 2, len(stream) - 5, len(stream)]:
        receiver = Receiver()
        deliver(receiver, stream[:cut])
        got = receiver.pop_all()
        deliver(receiver, stream[cut:])
        got += receiver.pop_all()
        assert got == payloads, cut
        assert receiver.buffered == 0 and not receiver.in_frame


def test_partial_and_expected_in_every_state():
    receiver = Receiver()
    assert receiver.partial() == b"" and receiver.expected is None
    receiver.feed(b"000")
    assert receiver.in_frame and receiver.partial() == b"000" and receiver.expected is None
    receiver.feed(b"00003ab")
    assert receiver.partial() == b"00000003ab" and receiver.expected == 11
    big = encode_frame(b"y" * 100000)
    receiver = Receiver()
    receiver.feed(big[:5000])
    assert receiver.partial() == big[:5000] and receiver.expected == len(big)


def test_bad_and_oversized_headers_raise_after_the_frames_before_them():
    receiver = Receiver(max_size=10)
    receiver.feed(b"00000002ok00000011")
    assert receiver.pop() == b"ok"
    with pytest.raises(FrameTooLarge) as info:
        receiver.pop()
    assert (info.value.size, info.value.limit) == (11, 10)
    receiver = Receiver()
    receiver.feed(b"00000001z+0000001")
    assert receiver.pop_all() == [b"z"]
    with pytest.raises(FrameError) as info:
        receiver.pop_all()
    assert info.value.header == b"+0000001"
    assert receiver.failed
    with pytest.raises(BufferError):
        receiver.get_buffer(-1)


def test_a_held_view_pins_the_buffer_and_old_windows_go_stale():
    receiver = Receiver()
    window = receiver.get_buffer(-1)
    view = memoryview(window)[4:]          # a slice shares the export
    with pytest.raises(BufferError, match="still held"):
        receiver.get_buffer(-1)
    view.release()
    receiver.buffer_updated(0)
    with pytest.raises(BufferError, match="stale"):
        memoryview(window)
    assert len(window) == 0


def test_window_slicing_as_asyncio_ssl_and_proactor_do():
    receiver = Receiver()
    window = receiver.get_buffer(-1)
    window[:8] = b"00000003"              # asyncio's _feed_data_to_buffered_proto
    tail = window[8:]                     # asyncio's SSL protocol reads into buf[offset:]
    tail[:3] = b"abc"
    tail.release()
    receiver.buffer_updated(11)
    assert receiver.pop() == b"abc"


def test_a_large_frame_is_copied_while_a_view_of_it_lives():
    receiver = Receiver()
    payload = bytes(range(256)) * 400
    stream = encode_frame(payload)
    deliver(receiver, stream[:-100])
    last = memoryview(receiver.get_buffer(-1))   # the window the frame ends in
    last[:100] = stream[-100:]
    receiver.buffer_updated(100)
    frame = receiver.pop()
    assert frame == payload
    last[:100] = b"\xff" * 100              # scribble through the kept view
    assert frame == payload               # the bytes returned never change
    last.release()


def test_buffer_updated_checks_its_count():
    receiver = Receiver()
    with pytest.raises(ValueError):
        receiver.buffer_updated(1)        # no window handed out
    window = receiver.get_buffer(-1)
    with pytest.raises(ValueError):
        receiver.buffer_updated(len(window) + 1)
    with pytest.raises(ValueError):
        receiver.buffer_updated(-1)


def run_limited(code):
    """Run code in a child whose address space is capped after setup."""
    prelude = textwrap.dedent("""
        import resource
        from tcpframe._tcpframe import Receiver, encode_frames
        def vmsize():
            for line in open("/proc/self/status"):
                if line.startswith("VmSize"):
                    return int(line.split()[1]) * 1024
        def cap(extra):
            soft, hard = resource.getrlimit(resource.RLIMIT_AS)
            resource.setrlimit(resource.RLIMIT_AS, (vmsize() + extra, hard))
            return lambda: resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    """)
    result = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


@sanitized
def test_pop_all_keeps_every_frame_when_memory_runs_out():
    out = run_limited("""
        S = 64 << 20
        r = Receiver()
        r.feed(b"00000001a00000001b00000001c" + b"%08d" % S)
        got, view = 0, None
        while got < S:                      # a large frame, its last view kept
            if view is not None:
                view.release()
            view = memoryview(r.get_buffer(-1))
            k = min(len(view), S - got)
            r.buffer_updated(k)
            got += k
        uncap = cap(16 << 20)               # no room to copy the large frame
        first = r.pop_all()
        uncap()
        view.release()
        print([len(f) for f in first + r.pop_all()])
    """)
    assert out.strip() == "[1, 1, 1, 67108864]"


@sanitized
def test_a_failed_allocation_loses_no_frame():
    out = run_limited("""
        r = Receiver()
        n1 = (1 << 20) - 100
        r.feed(encode_frames([b"%07d" % i for i in range(n1)]))
        batch = encode_frames([b"%07d" % i for i in range(n1, n1 + 1000)])
        uncap = cap(2 << 20)                # the queue cannot grow
        try:
            r.feed(batch)
        except MemoryError:
            pass
        uncap()
        r.feed(b"")
        r.feed(encode_frames([b"%07d" % (n1 + 1000)]))
        nums = [int(f) for f in r.pop_all()]
        print(nums == list(range(len(nums))), len(nums) >= n1 + 1)
    """)
    assert out.split() == ["True", "True"]


@sanitized
def test_a_failed_large_start_does_not_reserve_the_announced_length():
    out = run_limited("""
        r = Receiver()
        uncap = cap(256 << 10)
        try:
            r.feed(b"99999999" + b"x" * 10)
        except MemoryError:
            pass
        uncap()
        print(len(r.get_buffer(-1)) < (1 << 21))
    """)
    assert out.strip() == "True"


def test_tls_streams_carry_frames_of_every_size():
    trustme = pytest.importorskip("trustme")
    import tcpframe.aio

    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)

    async def handler(stream):
        async for frame in stream:
            await stream.send_bytes(b"%d" % len(frame))

    async def main():
        server = await tcpframe.aio.start_server(handler, "127.0.0.1", 0, ssl=server_ctx)
        async with server:
            stream = await tcpframe.aio.open_connection(
                "127.0.0.1", server.address[1], ssl=client_ctx, server_hostname="localhost")
            replies = []
            for size in (0, 10, 20000, 70000, 1 << 20):
                await stream.send_bytes(b"x" * size)
                replies.append(await asyncio.wait_for(stream.read_bytes(), 10))
            stream.close()
            await stream.wait_closed()
            return replies

    assert asyncio.run(main()) == [b"0", b"10", b"20000", b"70000", b"1048576"]


def test_allocated_counts_what_a_server_must_budget():
    # What tcpframe.aio's max_memory counts: an attacker's cheapest ways to
    # make a server hold memory must all show in it.
    r = Receiver(max_size=1 << 20)
    assert r.allocated == 0                     # idle: no buffer at all
    r.feed(b"01048576")                          # a header alone: the frame's whole size
    assert r.allocated >= 1 << 20
    r = Receiver(max_size=1 << 20)
    r.feed(encode_frame(b"x" * 1000) * 70 + b"0")
    assert len(r.pop_all()) == 70
    assert r.buffered == 1 and r.allocated >= 70_000   # one byte pins the grown buffer
    r = Receiver(max_size=1 << 20)
    r.feed(encode_frame(b"") * 10_000)           # empty frames: 8 bytes each on the wire
    assert r.ready == 10_000 and r.allocated >= 10_000 * (8 + 33)
    held = r.allocated
    r.pop_all()
    assert r.allocated <= held - 10_000 * 33   # the frames' bytes objects are the caller's now
