"""atheris harness: the header codec, the sans-IO decoder (random chunkings of
random streams, bad headers, huge announced lengths, checked against a
pure-Python oracle), read_object with both codecs, and Connection over a real
socket pair.  Run it against the sanitizer build (see README "Hardening"):

    TCPFRAME_SANITIZE=1 pip install '.[fuzz]'
    LD_PRELOAD=$(gcc -print-file-name=libasan.so) PYTHONMALLOC=malloc \\
    ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1 \\
    python fuzz/fuzz_tcpframe.py --replay 50000 fuzz/corpus

Two modes.  Plain: coverage-guided libFuzzer (atheris) -- run it on the
normal build, where atheris sees the coverage of this file and of tcpframe's
Python (the C is not coverage-instrumented: that needs clang's
fuzzer-no-link and a merged ASan+libFuzzer runtime, which this atheris wheel
does not ship).  --replay N DIR...: run every input in the corpus, then N
random mutations of them, through the same checks -- meant for the ASan+UBSan
build, where libFuzzer's own loop gets no coverage to work with.

The replay is deterministic: the same corpus and --seed (default 1) give the
same mutations in the same order; --seed random explores (the seed is
printed, so a find can be replayed).  --last-input FILE keeps the input being
run in FILE, so a crash that kills the process (an ASan abort) leaves the
culprit behind; FILE is removed when the replay finishes.  For a fixed
coverage-guided run, pass libFuzzer -seed=N -runs=N (CI does).
"""
import argparse
import os
import pickle
import random
import socket
import sys

import atheris

with atheris.instrument_imports():
    import tcpframe
    from tcpframe import Connection, Decoder, FrameError, FrameTooLarge
    from tcpframe._tcpframe import Receiver


def oracle(stream, max_size):
    """What the decoder must do, in plain Python: (frames, error kind or None)."""
    frames, at = [], 0
    while len(stream) - at >= 8:
        header = stream[at:at + 8]
        if not all(0x30 <= c <= 0x39 for c in header):
            return frames, "bad"
        n = int(header)
        if n > max_size:
            return frames, "large"
        if len(stream) - at - 8 < n:
            break
        frames.append(stream[at + 8:at + 8 + n])
        at += 8 + n
    return frames, None


def check_header(fdp):
    raw = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 12))
    try:
        n = tcpframe.decode_header(raw)
    except FrameError:
        assert len(raw) != 8 or not all(0x30 <= c <= 0x39 for c in raw)
        return
    assert len(raw) == 8 and tcpframe.encode_header(n) == raw


def check_decoder(fdp):
    max_size = fdp.ConsumeIntInRange(0, 4096)
    cuts = sorted(fdp.ConsumeIntInRange(0, 512) for _ in range(fdp.ConsumeIntInRange(0, 16)))
    stream = fdp.ConsumeBytes(fdp.remaining_bytes())
    if stream[:1] == b"!":
        # Steer some inputs to well-formed frames, so deep paths are reached.
        stream = b"".join(tcpframe.encode_frame(stream[i:i + 7]) for i in range(1, len(stream), 7))
    elif stream[:1] == b"#":
        # A frame large enough for the Receiver's direct path (>= 64 KiB),
        # between two small ones, cut where the input says.
        max_size = 1 << 17
        body = (stream[1:] or b"#") * (65536 // max(1, len(stream) - 1) + 1)
        stream = (tcpframe.encode_frame(stream[1:9]) + tcpframe.encode_frame(body[:65536 + len(stream)])
                  + tcpframe.encode_frame(stream[:3]))
        cuts = [c * 257 for c in cuts]
    want, error = oracle(stream, max_size)
    check_receiver(stream, cuts, max_size, want, error)
    decoder = Decoder(max_size=max_size)
    got, raised = [], None
    last = 0
    for cut in cuts + [len(stream)]:
        cut = min(max(cut, last), len(stream))
        try:
            got.extend(decoder.feed(stream[last:cut]))
        except FrameTooLarge:
            raised = "large"
            break
        except FrameError:
            raised = "bad"
            break
        last = cut
    if raised is None and error is not None:
        # The bad header came in the last piece along with frames before it:
        # feed() returned those; the next call must raise.
        try:
            decoder.feed(b"")
        except FrameTooLarge:
            raised = "large"
        except FrameError:
            raised = "bad"
    assert got == want, (got, want)
    assert raised == error, (raised, error)


def check_receiver(stream, cuts, max_size, want, error):
    """The Receiver, driven as an event loop drives it (get_buffer, write
    into the window, buffer_updated), must agree with the oracle too."""
    receiver = Receiver(max_size=max_size)
    got, raised, last = [], None, 0
    for cut in cuts + [len(stream)]:
        cut = min(max(cut, last), len(stream))
        piece = memoryview(stream)[last:cut]
        last = cut
        while piece and not receiver.failed:
            with memoryview(receiver.get_buffer(-1)) as window:
                n = min(len(window), len(piece))
                window[:n] = piece[:n]
            receiver.buffer_updated(n)
            piece = piece[n:]
        if receiver.ready:
            got.extend(receiver.pop_all())
        if receiver.failed:
            break
    try:
        receiver.pop()
    except FrameTooLarge:
        raised = "large"
    except FrameError:
        raised = "bad"
    assert got == want, "Receiver frames differ"
    assert raised == error, (raised, error)
    assert receiver.ready == 0
    if error is None:
        assert receiver.partial() == stream[sum(8 + len(f) for f in want):]


def check_objects(fdp, a, b):
    payload = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 2048))
    codec = "pickle" if fdp.ConsumeBool() else "json"
    tcpframe.send_bytes(a, payload)
    # Refused or malformed is fine, as long as nothing crashed or ran and the
    # error is the documented one: every pickle problem is an UnpicklingError
    # (UnsafePickle, PickleTooComplex included), every JSON one a ValueError.
    refusal = pickle.UnpicklingError if codec == "pickle" else ValueError
    try:
        obj = tcpframe.read_object(b, codec=codec)
    except refusal:
        return
    if codec == "pickle":
        # Whatever came back is plain data only.
        plain = (type(None), bool, int, float, complex, str, bytes, bytearray, list, tuple,
                 dict, set, frozenset)
        stack = [obj]
        seen = set()      # a list may hold itself: visit each container once
        while stack:
            item = stack.pop()
            assert isinstance(item, plain), type(item)
            if isinstance(item, (list, dict, set, frozenset, tuple)):
                if id(item) in seen:
                    continue
                seen.add(id(item))
            if isinstance(item, dict):
                stack.extend(item.keys())
                stack.extend(item.values())
            elif isinstance(item, (list, tuple, set, frozenset)) and len(stack) < 10000:
                stack.extend(item)


def check_connection(fdp, a, conn):
    frames = [fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 300))
              for _ in range(fdp.ConsumeIntInRange(0, 8))]
    stream = b"".join(tcpframe.encode_frame(f) for f in frames)
    step = fdp.ConsumeIntInRange(1, 64)
    for i in range(0, len(stream), step):
        a.sendall(stream[i:i + step])
    assert [conn.read_bytes() for _ in frames] == frames
    assert conn.buffered == 0


def tcp_pair():
    # Loopback TCP, not socketpair(): AF_UNIX spends a whole buffer slot on
    # each tiny write, and a one-byte-at-a-time stream would fill it.
    with socket.create_server(("127.0.0.1", 0)) as listener:
        a = socket.create_connection(listener.getsockname())
        b, _ = listener.accept()
    a.settimeout(5)
    b.settimeout(5)
    return a, b


A, B = tcp_pair()
C, D = tcp_pair()
CONN = Connection(D)


def one_input(data):
    fdp = atheris.FuzzedDataProvider(data)
    target = fdp.ConsumeIntInRange(0, 3)
    if target == 0:
        check_header(fdp)
    elif target == 1:
        check_decoder(fdp)
    elif target == 2:
        check_objects(fdp, A, B)
    else:
        check_connection(fdp, C, CONN)


def mutate(rng, inputs):
    data = bytearray(rng.choice(inputs))
    for _ in range(rng.randint(1, 8)):
        op = rng.randrange(4)
        if op == 0 and data:
            data[rng.randrange(len(data))] = rng.randrange(256)
        elif op == 1:
            data.insert(rng.randrange(len(data) + 1), rng.randrange(256))
        elif op == 2 and data:
            del data[rng.randrange(len(data))]
        else:
            other = rng.choice(inputs)
            data += other[rng.randrange(len(other) + 1):]
    return bytes(data)


def replay(count, dirs, seed=1, last_input=None):
    inputs, names = [], []
    for d in dirs:
        for name in sorted(os.listdir(d)):
            with open(os.path.join(d, name), "rb") as f:
                inputs.append(f.read())
            names.append(os.path.join(d, name))
    print(f"replay: {len(inputs)} corpus inputs, then {count} mutations with seed {seed}",
          flush=True)
    keep = os.open(last_input, os.O_WRONLY | os.O_CREAT | os.O_TRUNC) if last_input else None

    def run(data, what):
        if keep is not None:
            os.ftruncate(keep, 0)
            os.pwrite(keep, data, 0)
        try:
            one_input(data)
        except BaseException:
            print(f"replay: failed on {what} (seed {seed}); input: {data!r}"[:4000], flush=True)
            raise

    for data, name in zip(inputs, names):
        run(data, name)
    rng = random.Random(seed)
    for i in range(count):
        run(mutate(rng, inputs), f"mutation {i + 1} of {count}")
        if (i + 1) % 50000 == 0:
            print(f"replay: {i + 1} mutations done", flush=True)
    if keep is not None:
        os.close(keep)
        os.unlink(last_input)
    print(f"replayed {len(inputs)} corpus inputs and {count} mutations of them "
          f"(seed {seed}): no failure")


def replay_main(argv):
    parser = argparse.ArgumentParser(prog="fuzz_tcpframe.py --replay")
    parser.add_argument("count", type=int, help="how many random mutations after the corpus")
    parser.add_argument("dirs", nargs="+", help="corpus directories")
    parser.add_argument("--seed", default="1",
                        help="the mutations' random seed: an integer (default 1), or 'random'")
    parser.add_argument("--last-input", metavar="FILE",
                        help="keep the input being run in FILE (removed at the end)")
    args = parser.parse_args(argv)
    seed = random.SystemRandom().randrange(1, 2**31) if args.seed == "random" else int(args.seed)
    replay(args.count, args.dirs, seed, args.last_input)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--replay":
        replay_main(sys.argv[2:])
        sys.exit(0)
    # Coverage of this file too: the oracle's branches tell the fuzzer which
    # stream shapes are new.
    for name in ("oracle", "check_header", "check_decoder", "check_objects",
                 "check_connection", "one_input"):
        globals()[name] = atheris.instrument_func(globals()[name])
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
