"""tcpframe.aio.start_server under load: the two targets of its budgets.

    python benchmarks/aio_load.py                 # both scenarios
    python benchmarks/aio_load.py --only idle --idle 10000
    python benchmarks/aio_load.py --only hostile --hostile 1000 --duration 25
    python benchmarks/aio_load.py --loop uvloop --json results.json

idle: N idle connections to one start_server (max_connections raised to
fit, every other budget at its default), the clients in this process and
the server in another.  Reports the server's RSS per connection (the growth
of VmRSS in /proc/<pid>/status, divided by N) and how long until the server
had accepted them all.  Target: <= 8 KiB per connection, all in < 10 s.

hostile: N hostile sockets from 127.0.0.2 and up (--per-address each) that
stay idle, trickle bytes of a frame that never ends, or trickle valid
requests one byte at a time, reconnecting whenever the server closes them;
meanwhile a legitimate client on 127.0.0.1 asks the average service (the
CLI's: default budgets, max_size=MAX_REQUEST, {"error": why} when shed) for
averages, alternating a kept connection and a fresh one.  Reports how many
were answered and the latencies.  Target: every one answered within 1 s.

Three processes: the server (--role server), the hostile sockets (--role
hostile) and this one, the legitimate client, so that none of them slows
the others by more than the machine's cores do.  Linux only (/proc, and all
of 127/8 on loopback).
"""

import argparse
import json
import os
import resource
import selectors
import socket
import statistics
import subprocess
import sys
import time

HOST = "127.0.0.1"
REQUEST = b"[1, 2, 3]"


# -- the server process ------------------------------------------------------------


def run_server(args: argparse.Namespace) -> None:
    """Serve the average service; answer "stats" lines on stdin with a JSON line."""
    import asyncio

    from tcpframe import aio
    from tcpframe.average import MAX_REQUEST, error_reply, handle_async

    if args.loop == "uvloop":
        import uvloop
        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)

    async def main() -> None:
        budgets = {}
        if args.max_connections is not None:
            budgets["max_connections"] = args.max_connections
        server = await aio.start_server(handle_async, HOST, 0, max_size=MAX_REQUEST,
                                        shed_reply=error_reply, **budgets)
        done = loop.create_future()

        def command() -> None:
            line = sys.stdin.readline()
            if not line:                      # the parent went away: stop
                if not done.done():
                    done.set_result(None)
                return
            stats = {"connections": server.connections, "shed": server.shed_count,
                     "rss_kib": rss_kib(os.getpid()), "cpu_s": cpu_seconds()}
            sys.stdout.write(json.dumps(stats) + "\n")
            sys.stdout.flush()

        loop.add_reader(sys.stdin.fileno(), command)
        print("PORT", server.address[1], flush=True)
        async with server:
            await done
        loop.remove_reader(sys.stdin.fileno())

    loop.run_until_complete(main())
    loop.close()


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/<pid>/status")


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Server:
    """The server process, from the parent's side."""

    def __init__(self, loop: str, max_connections=None) -> None:
        command = [sys.executable, os.path.abspath(__file__), "--role", "server", "--loop", loop]
        if max_connections is not None:
            command += ["--max-connections", str(max_connections)]
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, bufsize=1)
        line = self.proc.stdout.readline()
        if not line.startswith("PORT "):
            raise RuntimeError(f"the server did not start: {line!r}")
        self.port = int(line.split()[1])

    def stats(self) -> dict:
        self.proc.stdin.write("stats\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def stop(self) -> None:
        self.proc.stdin.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:   # pragma: no cover - a bug if so
            self.proc.kill()
            self.proc.wait()


# -- the hostile process -------------------------------------------------------------


def run_hostile(args: argparse.Namespace) -> None:
    """args.hostile sockets from 127.0.0.2 and up, each of one kind, each
    reconnecting when closed; prints "READY" once all are connected, and a
    JSON line of counts when stdin closes."""
    kinds = args.kinds.split(",")
    request = b"%08d" % len(REQUEST) + REQUEST
    # A frame that never completes: a large header, then its payload a byte at a time.
    noise = b"00099999" + b"y" * 99999
    selector = selectors.DefaultSelector()
    socks = {}
    counts = {"reconnects": 0, "replies": 0, "refused": 0}

    def open_one(kind: str, address: str) -> None:
        sock = socket.socket()
        sock.bind((address, 0))
        try:
            sock.connect((HOST, args.port))
        except OSError:
            counts["refused"] += 1
            sock.close()
            return
        sock.setblocking(False)
        socks[sock] = [kind, address, 0]
        selector.register(sock, selectors.EVENT_READ)

    wanted = []
    for i in range(args.hostile):
        wanted.append((kinds[i % len(kinds)], f"127.0.{(2 + i // args.per_address) // 256}."
                                              f"{(2 + i // args.per_address) % 256}"))
    for kind, address in wanted:
        open_one(kind, address)
    print("READY", len(socks), flush=True)
    stdin = sys.stdin.fileno()
    selector.register(stdin, selectors.EVENT_READ)
    next_byte = time.monotonic()
    lost = []
    while True:
        for key, _ in selector.select(timeout=max(0.0, next_byte - time.monotonic())):
            if key.fileobj == stdin:
                if not os.read(stdin, 4096):
                    for sock in socks:
                        sock.close()
                    counts["open"] = len(socks)
                    print(json.dumps(counts), flush=True)
                    return
                continue
            sock = key.fileobj
            try:
                data = sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if data:
                counts["replies"] += 1
            else:
                lost.append(sock)
        if time.monotonic() >= next_byte:
            next_byte = time.monotonic() + args.every
            for sock, state in socks.items():
                kind, _, n = state
                if kind == "idle":
                    continue
                stream = request if kind == "requests" else noise
                try:
                    sock.send(stream[n % len(stream):n % len(stream) + 1])
                    state[2] = n + 1
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError:
                    lost.append(sock)
        for sock in set(lost):
            kind, address, _ = socks.pop(sock)
            selector.unregister(sock)
            sock.close()
            counts["reconnects"] += 1
            open_one(kind, address)
        lost.clear()


# -- the scenarios ---------------------------------------------------------------------


def wait_for(predicate, timeout: float, step: float = 0.02):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)


def scenario_idle(args: argparse.Namespace) -> dict:
    count, per_address = args.idle, args.per_address
    # The clients' fds and the server's are in two processes: each needs count.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < count + 100:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, count + 1000), hard))
    server = Server(args.loop, max_connections=max(count + 100, 4096))
    socks = []
    try:
        # Warm up: the first connections bring in code and the loop's pools.
        for _ in range(20):
            warm = socket.create_connection((HOST, server.port))
            warm.sendall(b"%08d" % len(REQUEST) + REQUEST)
            warm.recv(100)
            warm.close()
        wait_for(lambda: server.stats()["connections"] == 0, 10)
        time.sleep(0.5)
        before = server.stats()
        start = time.monotonic()
        for i in range(count):
            sock = socket.socket()
            sock.bind((f"127.0.{(2 + i // per_address) // 256}.{(2 + i // per_address) % 256}", 0))
            sock.connect((HOST, server.port))
            socks.append(sock)
        connected = time.monotonic() - start
        all_in = wait_for(lambda: server.stats()["connections"] >= count, 60, step=0.005)
        accepted = time.monotonic() - start
        time.sleep(1.0)                       # every handler waiting in its first read
        after = server.stats()
        # Still served: one of them asks.
        probe = socks[len(socks) // 2]
        probe.settimeout(10)
        probe.sendall(b"%08d" % len(REQUEST) + REQUEST)
        answered = probe.recv(100).endswith(b'{"average": 2.0}')
        start = time.monotonic()
        for sock in socks:
            sock.close()
        socks = []
        wait_for(lambda: server.stats()["connections"] == 0, 60)
        emptied = time.monotonic() - start
        end = server.stats()
    finally:
        for sock in socks:
            sock.close()
        server.stop()
    per_conn = (after["rss_kib"] - before["rss_kib"]) / count
    return {
        "connections": count,
        "all_accepted": bool(all_in) and after["connections"] == count,
        "client_connect_s": round(connected, 3),
        "accepted_all_s": round(accepted, 3),
        "rss_before_kib": before["rss_kib"],
        "rss_after_kib": after["rss_kib"],
        "rss_per_connection_kib": round(per_conn, 2),
        "rss_after_close_kib": end["rss_kib"],
        "closed_all_s": round(emptied, 3),
        "one_still_answered": answered,
        "shed": after["shed"],
        "target_ok": bool(all_in) and per_conn <= 8 and accepted < 10 and answered,
    }


def ask(port: int, sock=None):
    """One request, on sock or on a fresh connection: (reply bytes, seconds, sock)."""
    start = time.monotonic()
    if sock is None:
        sock = socket.create_connection((HOST, port), timeout=5, source_address=(HOST, 0))
    sock.sendall(b"%08d" % len(REQUEST) + REQUEST)
    reply = b""
    while len(reply) < 8 or len(reply) < 8 + int(reply[:8]):
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed before the reply")
        reply += chunk
    return reply[8:], time.monotonic() - start, sock


def scenario_hostile(args: argparse.Namespace) -> dict:
    server = Server(args.loop)
    hostile = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--role", "hostile", "--port",
         str(server.port), "--hostile", str(args.hostile), "--per-address",
         str(args.per_address_hostile), "--every", str(args.every), "--kinds", args.kinds],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    latencies, failures, kept_lost = [], [], 0
    try:
        ready = hostile.stdout.readline().split()
        if not ready or ready[0] != "READY":
            raise RuntimeError(f"the hostile sockets did not start: {ready}")
        time.sleep(1.0)
        at_start = server.stats()
        kept = None
        end = time.monotonic() + args.duration
        n = 0
        while time.monotonic() < end:
            fresh = n % 2 == 1
            start = time.monotonic()
            try:
                if fresh:
                    reply, seconds, sock = ask(server.port)
                    sock.close()
                else:
                    if kept is None:
                        kept = socket.create_connection((HOST, server.port), timeout=5)
                    reply, seconds, kept = ask(server.port, kept)
                if reply != b'{"average": 2.0}':
                    raise ValueError(f"reply {reply[:100]!r}")
                latencies.append(seconds)
            except (OSError, ValueError) as exc:
                failures.append(f"{time.monotonic() - start:.3f} s: {exc!r}")
                if not fresh and kept is not None:
                    kept.close()
                    kept = None
                    kept_lost += 1
            n += 1
            time.sleep(args.pause)
        if kept is not None:
            kept.close()
        at_end = server.stats()
    finally:
        hostile.stdin.close()
        counts = json.loads(hostile.stdout.readline() or "{}")
        hostile.wait(30)
        server.stop()
    asked = len(latencies) + len(failures)
    ordered = sorted(latencies)
    pct = (lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else None)
    return {
        "hostile_sockets": args.hostile,
        "hostile_per_address": args.per_address_hostile,
        "hostile_kinds": args.kinds,
        "trickle_every_s": args.every,
        "duration_s": args.duration,
        "asked": asked,
        "answered": len(latencies),
        "answered_within_1s": sum(1 for s in latencies if s <= 1.0),
        "failures": failures[:10],
        "latency_median_ms": round(statistics.median(latencies) * 1000, 2) if latencies else None,
        "latency_p99_ms": round(pct(0.99) * 1000, 2) if latencies else None,
        "latency_max_ms": round(max(latencies) * 1000, 2) if latencies else None,
        "server_connections": [at_start["connections"], at_end["connections"]],
        "server_shed": at_end["shed"],
        "server_cpu_s": round(at_end["cpu_s"] - at_start["cpu_s"], 2),
        "server_rss_kib": at_end["rss_kib"],
        "hostile_reconnects": counts.get("reconnects"),
        "hostile_replies": counts.get("replies"),
        "target_ok": asked > 0 and len(latencies) == asked and max(latencies) <= 1.0,
    }


def table(results: dict) -> str:
    lines = []
    for name, result in results.items():
        lines.append(f"== {name} ({'target met' if result['target_ok'] else 'TARGET MISSED'})")
        for key, value in result.items():
            if key != "target_ok":
                lines.append(f"  {key:<26} {value}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["idle", "hostile"])
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    parser.add_argument("--idle", type=int, default=10_000, help="idle connections (10000)")
    parser.add_argument("--per-address", type=int, default=250,
                        help="idle connections per source address, under the default "
                             "max_connections_per_peer (250)")
    parser.add_argument("--hostile", type=int, default=1000, help="hostile sockets (1000)")
    parser.add_argument("--per-address-hostile", type=int, default=100,
                        help="hostile sockets per source address (100)")
    parser.add_argument("--kinds", default="idle,bytes,requests",
                        help="hostile kinds, in turn: idle, bytes, requests")
    parser.add_argument("--every", type=float, default=0.5,
                        help="seconds between a trickler's bytes (0.5)")
    parser.add_argument("--duration", type=float, default=25.0,
                        help="seconds the legitimate client asks (25)")
    parser.add_argument("--pause", type=float, default=0.02,
                        help="seconds between its requests (0.02)")
    parser.add_argument("--json", metavar="FILE", help="also write the results there")
    # Internal: the other two processes.
    parser.add_argument("--role", choices=["server", "hostile"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--max-connections", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role == "server":
        run_server(args)
        return 0
    if args.role == "hostile":
        run_hostile(args)
        return 0
    results = {}
    if args.only in (None, "idle"):
        results["idle"] = scenario_idle(args)
    if args.only in (None, "hostile"):
        results["hostile"] = scenario_hostile(args)
    print(table(results))
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"loop": args.loop, "python": sys.version.split()[0], **results}, out,
                      indent=2)
    return 0 if all(r["target_ok"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
