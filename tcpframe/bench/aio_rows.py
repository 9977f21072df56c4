"""The benchmark's asyncio rows: tcpframe.aio against asyncio streams.

    python -m tcpframe.bench.aio_rows [--quick] [--rounds N] [--json FILE]
        this section alone, as a table
    python -m tcpframe.bench.aio_rows child LOOP IMPL MODE SIZE COUNT
        one measurement; prints JSON

Both ends run on one event loop in one process (asyncio's, and uvloop's
when it is installed), over loopback: what an asyncio service talking to
another on the same loop pays, and a fair place to compare the framing
code, since the loop and the kernel are the same for every row.  Each
measurement is a fresh process; the rounds interleave the rows; each figure
is the median over rounds.

The baseline is asyncio streams as a competent user writes them: one
``writer.write(header + payload)`` and ``await writer.drain()`` per frame,
``readexactly(8)`` then ``readexactly(n)``.  tcpframe.aio runs twice: the
natural per-frame code (``await send_bytes`` / ``async for``) and the batch
calls (``send_many`` / ``read_many``).  Servers run with their defaults.
Each process first settles the allocator as a long-running one's is (see
settle_allocator()).
"""

import asyncio
import json
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List, NamedTuple, Optional

KIB, MIB = 1 << 10, 1 << 20

HOST = "127.0.0.1"
# asyncio streams' second row drains every this many frames.
DRAIN_EVERY = 64
# send_many batches: this many frames, at most BATCH_BYTES of payload.
BATCH_FRAMES = 1024
BATCH_BYTES = 4 * MIB
RR_WARMUP = 20
# See settle_allocator().
SETTLE_BYTES = 16 * MIB


class Workload(NamedTuple):
    mode: str      # rr | stream
    size: int
    count: int     # full run
    quick: int     # --quick run

    @property
    def label(self) -> str:
        size = f"{self.size // MIB} MiB" if self.size >= MIB else f"{self.size} B"
        return {"rr": f"request/response {size}", "stream": f"stream of {size} frames"}[self.mode]


WORKLOADS = [
    Workload("rr", 16, 5000, 300),
    Workload("stream", 16, 500_000, 20_000),
    Workload("stream", MIB, 500, 40),
]

LOOPS = ["asyncio", "uvloop"]
# In the order of the table; the first is the baseline of the ratios.
IMPLS = ["streams", "streams_n", "aio", "aio_many"]
DESCRIPTIONS = {
    "streams": "asyncio streams (write+drain a frame, readexactly x2)",
    "streams_n": f"asyncio streams, drain every {DRAIN_EVERY} frames",
    "aio": "tcpframe.aio: await send_bytes / async for",
    "aio_many": "tcpframe.aio: send_many / read_many",
}
BASELINE = "streams"


def have_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def loops() -> List[str]:
    return [loop for loop in LOOPS if loop != "uvloop" or have_uvloop()]


def applies(impl: str, w: Workload) -> bool:
    """A batch has nothing to batch in request/response; draining every N
    frames changes nothing when each frame fills the write buffer."""
    if impl == "aio_many":
        return w.mode == "stream"
    if impl == "streams_n":
        return w.mode == "stream" and w.size < 64 * KIB
    return True


# -- asyncio streams, as a user writes them --------------------------------


async def write_frame(writer: asyncio.StreamWriter, payload: bytes) -> None:
    writer.write(b"%08d" % len(payload) + payload)
    await writer.drain()


async def read_frame(reader: asyncio.StreamReader) -> bytes:
    return await reader.readexactly(int(await reader.readexactly(8)))


async def streams_pair(impl: str, mode: str, size: int, count: int) -> dict:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if mode == "rr":
                while True:
                    await write_frame(writer, await read_frame(reader))
            frames = 0
            while await read_frame(reader):
                frames += 1
            await write_frame(writer, b"%d" % frames)
        except asyncio.IncompleteReadError:
            pass   # the client is done
        finally:
            writer.close()

    server = await asyncio.start_server(handle, HOST, 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection(HOST, port)
    payload = bytes(size)

    async def request(data: bytes) -> bytes:
        await write_frame(writer, data)
        return await read_frame(reader)

    async def send_stream() -> None:
        if impl == "streams":
            for _ in range(count):
                await write_frame(writer, payload)
        else:
            for i in range(count):
                writer.write(b"%08d" % len(payload) + payload)
                if i % DRAIN_EVERY == DRAIN_EVERY - 1:
                    await writer.drain()

    async def finish() -> int:
        await write_frame(writer, b"")
        return int(await read_frame(reader))

    try:
        return await measure(mode, payload, count, request, send_stream, finish)
    finally:
        writer.close()
        server.close()
        await quietly(writer.wait_closed(), server.wait_closed())


# -- tcpframe.aio -------------------------------------------------------------


async def aio_pair(impl: str, mode: str, size: int, count: int) -> dict:
    import tcpframe.aio

    async def handle(stream: "tcpframe.aio.FrameStream") -> None:
        if mode == "rr":
            async for request in stream:
                await stream.send_bytes(request)
            return
        frames = 0
        if impl == "aio":
            async for frame in stream:
                if not frame:
                    break
                frames += 1
        else:
            done = False
            while not done:
                for frame in await stream.read_many():
                    if not frame:
                        done = True
                        break
                    frames += 1
        await stream.send_bytes(b"%d" % frames)

    server = await tcpframe.aio.start_server(handle, HOST, 0)
    stream = await tcpframe.aio.open_connection(HOST, server.address[1])
    payload = bytes(size)

    async def request(data: bytes) -> bytes:
        await stream.send_bytes(data)
        return await stream.read_bytes()

    async def send_stream() -> None:
        if impl == "aio":
            for _ in range(count):
                await stream.send_bytes(payload)
            return
        per_batch = max(1, min(BATCH_FRAMES, BATCH_BYTES // max(size, 1)))
        batch = [payload] * per_batch
        left = count
        while left >= per_batch:
            left -= await stream.send_many(batch)
        if left:
            await stream.send_many(batch[:left])

    async def finish() -> int:
        await stream.send_bytes(b"")
        return int(await stream.read_bytes())

    try:
        return await measure(mode, payload, count, request, send_stream, finish)
    finally:
        stream.close()
        server.close()
        await quietly(stream.wait_closed(), server.wait_closed())


# -- the workloads, shared ----------------------------------------------------


async def measure(mode: str, payload: bytes, count: int,
                  request: Callable, send_stream: Callable, finish: Callable) -> dict:
    if mode == "rr":
        for _ in range(RR_WARMUP):
            await request(payload)
        samples = []
        for _ in range(count):
            t0 = time.perf_counter_ns()
            await request(payload)
            samples.append(time.perf_counter_ns() - t0)
        return {"median_us": statistics.median(samples) / 1000}
    t0 = time.perf_counter()
    await send_stream()
    received = await finish()
    seconds = time.perf_counter() - t0
    if received != count:
        raise RuntimeError(f"the receiver counted {received} frames of {count}")
    return {"seconds": seconds}


async def quietly(*closing) -> None:
    """Teardown is not measured; do not let it hang a run either."""
    try:
        await asyncio.wait_for(asyncio.gather(*closing, return_exceptions=True), 5)
    except asyncio.TimeoutError:
        pass


def settle_allocator() -> None:
    """Put this fresh process's malloc where a long-running one's is.

    glibc serves blocks over its mmap threshold (128 KiB at start) with
    mmap(), and raises the threshold (up to 32 MiB) the first time such a
    block is freed.  A service that has run a while has freed one; a fresh
    benchmark process may not have, and then each of asyncio's 256 KiB
    recv() buffers costs mmap + mremap + munmap + page faults: asyncio
    streams' round trip measured 2.5x slower and its 1 MiB stream 2x
    slower in that state, for reasons that have nothing to do with framing.
    Every row starts from the settled state."""
    block = bytes(SETTLE_BYTES)
    del block


def child(loop_name: str, impl: str, mode: str, size: int, count: int) -> dict:
    settle_allocator()
    pair = streams_pair if impl.startswith("streams") else aio_pair
    if loop_name == "uvloop":
        import uvloop

        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    try:
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(pair(impl, mode, size, count))
    finally:
        asyncio.set_event_loop(None)
        loop.close()


# -- the driver (the parent process) -------------------------------------------


def run_one(loop_name: str, impl: str, w: Workload, count: int) -> dict:
    cmd = [sys.executable, "-m", "tcpframe.bench.aio_rows", "child",
           loop_name, impl, w.mode, str(w.size), str(count)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"{loop_name} {impl} for {w.label} failed: {done.stderr.strip()}")
    return json.loads(done.stdout)


def figure(w: Workload, result: dict, count: int) -> float:
    """µs per round trip, frames/s (small frames) or MB/s (large ones)."""
    if w.mode == "rr":
        return result["median_us"]
    per_second = count / result["seconds"]
    return per_second if w.size < MIB else per_second * w.size / 1e6


def unit(w: Workload) -> str:
    return "µs" if w.mode == "rr" else ("frames/s" if w.size < MIB else "MB/s")


def run(quick: bool = False, rounds: Optional[int] = None, log=print) -> dict:
    rounds = rounds or (1 if quick else 5)
    names = loops()
    results: Dict[str, Dict[str, Dict[str, List[float]]]] = {}
    started = time.monotonic()
    for w in WORKLOADS:
        count = w.quick if quick else w.count
        rows = results.setdefault(w.label, {})
        for _ in range(rounds):
            for loop_name in names:
                for impl in IMPLS:
                    if applies(impl, w):
                        value = figure(w, run_one(loop_name, impl, w, count), count)
                        rows.setdefault(loop_name, {}).setdefault(impl, []).append(value)
        log(f"  asyncio, {w.label}: done ({time.monotonic() - started:.0f}s)")
    return {
        "title": "asyncio (both ends on one loop, one process)",
        "loops": names,
        "rounds": rounds,
        "workloads": [
            {"label": w.label, "mode": w.mode, "size": w.size, "unit": unit(w),
             "count": w.quick if quick else w.count,
             "medians": {loop_name: {impl: statistics.median(v) for impl, v in by_impl.items()}
                         for loop_name, by_impl in results[w.label].items()},
             "samples": results[w.label]}
            for w in WORKLOADS
        ],
    }


def versus(value: float, base: Optional[float]) -> Optional[float]:
    """Ours over asyncio streams' on the same loop, as the C table does it:
    a time ratio for round trips (lower is better), a rate ratio for
    streams (higher is better)."""
    if not base or not value:
        return None
    return value / base


def speedup(mode: str, value: float, base: Optional[float]) -> Optional[float]:
    """How many times as fast as the baseline, higher is better for every
    mode (for the chart)."""
    x = versus(value, base)
    if x is None:
        return None
    return 1 / x if mode == "rr" else x


def table(section: dict) -> str:
    lines = [f"{section['title']}: medians of {section['rounds']} interleaved round(s);",
             "x streams = against asyncio streams on the same loop: time ratio for round "
             "trips (lower is better), rate ratio for streams (higher is better)", ""]
    for w in section["workloads"]:
        lines.append(f"{w['label']} ({w['unit']})")
        for loop_name, medians in w["medians"].items():
            base = medians.get(BASELINE)
            for impl in IMPLS:
                if impl in medians:
                    value = medians[impl]
                    shown = f"{value:,.0f}" if value >= 1000 else f"{value:,.2f}"
                    x = versus(value, base)
                    lines.append(f"  {loop_name:<8} {DESCRIPTIONS[impl]:<54} {shown:>12}  "
                                 f"{'' if x is None else f'{x:.2f}x':>7}")
        lines.append("")
    return "\n".join(lines)


def main(argv: List[str]) -> int:
    if argv[:1] == ["child"]:
        if len(argv) != 6:
            print(__doc__, file=sys.stderr)
            return 2
        loop_name, impl, mode, size, count = argv[1], argv[2], argv[3], int(argv[4]), int(argv[5])
        print(json.dumps(child(loop_name, impl, mode, size, count)), flush=True)
        return 0
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tcpframe.bench.aio_rows", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small counts, one round")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 5, quick 1)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args(argv)
    section = run(quick=args.quick, rounds=args.rounds, log=lambda m: print(m, flush=True))
    print()
    print(table(section))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(section, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
