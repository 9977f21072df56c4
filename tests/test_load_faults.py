"""Load and faults against the real server process (`python -m tcpframe serve echo`):
200 concurrent clients x 1000 frames, with hostile clients mixed in.  Zero
frames lost or corrupted; every bad client dropped within the server's
deadline; the server's fds and threads back to baseline, its RSS near it."""
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

import tcpframe
from tcpframe import Connection
from tcpframe import testing as kit

CLIENTS = 200
FRAMES = 1000
BATCH = 100
CLIENT_TIMEOUT = 2.0
DROP_DEADLINE = CLIENT_TIMEOUT + 3.0  # the server's deadline, plus scheduling slack


def proc_status(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def snapshot(pid):
    return {
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "threads": proc_status(pid, "Threads"),
        "rss_kib": proc_status(pid, "VmRSS"),
    }


@pytest.fixture(params=["asyncio", "threaded"])
def echo_server(request, tmp_path):
    """The echo service as `serve` runs it (tcpframe.aio), and as --threaded."""
    log = open(tmp_path / "server.log", "w")
    options = ["--idle-timeout", str(CLIENT_TIMEOUT), "--max-connections", "1024"]
    if request.param == "threaded":
        options.append("--threaded")
    else:
        options += ["--frame-timeout", str(CLIENT_TIMEOUT)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tcpframe", "serve", "echo", "--port", "0", "--quiet", *options],
        stdout=subprocess.PIPE, stderr=log, text=True,
    )
    line = proc.stdout.readline()
    port = int(line.split("127.0.0.1:")[1].split()[0])
    try:
        yield proc, ("127.0.0.1", port)
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
        log.close()


def run_clients(address, frames, errors):
    """CLIENTS threads, each sending `frames` unique frames and checking the echoes."""
    counts = {"ok": 0, "lost": 0, "corrupted": 0}
    lock = threading.Lock()
    barrier = threading.Barrier(CLIENTS)

    def client(cid):
        ok = lost = corrupted = 0
        try:
            with Connection(kit.connect(address, timeout=60)) as conn:
                barrier.wait(60)
                for start in range(0, frames, BATCH):
                    batch = [b"%d:%d:" % (cid, i) + bytes([i % 251]) * (i % 97)
                             for i in range(start, min(start + BATCH, frames))]
                    conn.send_many(batch)
                    for expected in batch:
                        try:
                            got = conn.read_bytes()
                        except tcpframe.ConnectionClosed:
                            lost += 1
                            continue
                        if got == expected:
                            ok += 1
                        else:
                            corrupted += 1
        except Exception as exc:  # reported by the test
            errors.append(f"client {cid}: {type(exc).__name__}: {exc}")
        with lock:
            counts["ok"] += ok
            counts["lost"] += lost
            counts["corrupted"] += corrupted

    threads = [threading.Thread(target=client, args=(c,)) for c in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    return counts


def dropped_within(sock, deadline):
    """Seconds until the server hung up on sock (EOF or reset), or None."""
    start = time.monotonic()
    sock.settimeout(deadline)
    try:
        while sock.recv(4096):
            pass
    except (ConnectionResetError, BrokenPipeError):
        pass
    except socket.timeout:
        return None
    return time.monotonic() - start


def fault(kind, address, results):
    """One hostile client; appends (kind, seconds-until-dropped or None)."""
    try:
        sock = kit.connect(address, timeout=10)
    except OSError as exc:
        results.append((kind, f"could not connect: {exc}"))
        return
    with sock:
        if kind == "reset mid-frame":
            sock.sendall(b"00000100" + b"r" * 40)
            kit.reset(sock)
            results.append((kind, 0.0))
            return
        if kind == "half-close mid-frame":
            sock.sendall(b"00000100" + b"h" * 40)
            kit.half_close(sock)
        elif kind == "bad header":
            sock.sendall(b"GET / HTTP/1.1\r\n\r\n")
        elif kind == "announces 99,999,999 and stops":
            sock.sendall(b"99999999" + b"x" * 10)
        elif kind == "slowloris":
            def drip():
                try:
                    kit.trickle(sock, b"00000050" + b"s" * 50, chunk=1, delay=0.3)
                except OSError:
                    pass  # the server hung up: that is the point
            threading.Thread(target=drip, daemon=True).start()
        elif kind == "silent":
            pass
        results.append((kind, dropped_within(sock, DROP_DEADLINE + 5)))


FAULTS = (["reset mid-frame"] * 10 + ["half-close mid-frame"] * 10 + ["bad header"] * 10
          + ["announces 99,999,999 and stops"] * 10 + ["slowloris"] * 10 + ["silent"] * 10)


def test_load_with_faults(echo_server, capsys):
    proc, address = echo_server
    errors = []
    # Warm up (threads, allocator arenas), then take the baseline.
    warm = run_clients(address, BATCH, errors)
    assert warm["ok"] == CLIENTS * BATCH and not errors, errors[:3]
    time.sleep(1.0)
    baseline = snapshot(proc.pid)

    fault_results = []
    fault_threads = [threading.Thread(target=fault, args=(k, address, fault_results))
                     for k in FAULTS]
    peak = dict(baseline)
    sampling = threading.Event()

    def sample():
        while not sampling.wait(0.05):
            try:
                now = snapshot(proc.pid)
            except (OSError, KeyError):
                return
            for key in peak:
                peak[key] = max(peak[key], now[key])

    sampler = threading.Thread(target=sample)
    sampler.start()
    start = time.monotonic()
    for t in fault_threads:
        t.start()
    counts = run_clients(address, FRAMES, errors)
    elapsed = time.monotonic() - start
    for t in fault_threads:
        t.join(60)
    sampling.set()
    sampler.join(10)

    # Back to baseline once every client is gone.
    end = time.monotonic() + 15
    after = snapshot(proc.pid)
    while (after["fds"], after["threads"]) != (baseline["fds"], baseline["threads"]):
        assert time.monotonic() < end, f"not back to baseline: {after} vs {baseline}"
        time.sleep(0.2)
        after = snapshot(proc.pid)

    total = CLIENTS * FRAMES
    slow = [(k, r) for k, r in fault_results if not isinstance(r, float) or r > DROP_DEADLINE]
    with capsys.disabled():
        print(f"\nload: {CLIENTS} clients x {FRAMES} frames echoed in {elapsed:.1f} s "
              f"({2 * total / elapsed:,.0f} frames/s through the server, both ways); "
              f"lost {counts['lost']}, corrupted {counts['corrupted']}")
        print(f"faults: {len(fault_results)} hostile clients of {len(set(FAULTS))} kinds, "
              f"all dropped within {max(r for _, r in fault_results if isinstance(r, float)):.1f} s "
              f"(deadline {DROP_DEADLINE:.0f} s); server still serving: yes")
        print(f"server: baseline {baseline}, peak under load {peak}, after {after}")

    assert not errors, errors[:3]
    assert counts == {"ok": total, "lost": 0, "corrupted": 0}
    assert len(fault_results) == len(FAULTS)
    # Sampled every 50 ms, so it may miss the exact top (195 of 200 seen):
    # this only shows the clients were served concurrently, not in turn (by
    # the open sockets: the asyncio server has one thread for all).
    assert peak["fds"] > CLIENTS // 2, "the clients were never served at once"
    assert not slow, slow
    assert proc.poll() is None, "the server died"
    if os.environ.get("TCPFRAME_EXPECT_SANITIZED") != "1":  # ASan quarantines freed memory
        assert after["rss_kib"] - baseline["rss_kib"] < 32 * 1024, (baseline, after)
    # And it still serves.
    with Connection(kit.connect(address)) as conn:
        conn.send_bytes(b"still here")
        assert conn.read_bytes() == b"still here"
