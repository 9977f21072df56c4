"""The benchmark's Python peers, one process per side.

    python -m tcpframe.bench.peers server IMPL MODE                 prints its port
    python -m tcpframe.bench.peers client IMPL MODE PORT SIZE COUNT prints JSON

The modes are the C reference's (see c_reference.c): ``rr`` round trips,
``stream`` one way then an ack, ``rss`` one frame whose receiver reports its
peak RSS growth.  Every implementation gets the same payloads, the same
loopback and no TCP_NODELAY (the C reference needs none: one write a frame).
An endpoint is (send, recv, send_stream), and may add a fourth item, a
close() that must run before the socket is closed (a write buffer's last
frames).
"""

import json
import resource
import socket
import statistics
import sys
import time
from typing import Callable, Dict, Tuple

import tcpframe
from tcpframe import lesson

# An implementation: given a connected socket, (send, recv, send_stream).
Endpoint = Tuple[Callable[[bytes], None], Callable[[], bytes], Callable[[bytes, int], None]]


def loop_sender(send: Callable[[bytes], None]) -> Callable[[bytes, int], None]:
    def send_stream(payload: bytes, count: int) -> None:
        for _ in range(count):
            send(payload)

    return send_stream


def tcpframe_functions(sock: socket.socket) -> Endpoint:
    def send(data: bytes) -> None:
        tcpframe.send_bytes(sock, data)

    def recv() -> bytes:
        return tcpframe.read_bytes(sock)

    return send, recv, loop_sender(send)


def tcpframe_connection(sock: socket.socket) -> Endpoint:
    conn = tcpframe.Connection(sock)

    def send_stream(payload: bytes, count: int) -> None:
        batch = [payload] * min(count, 4096)
        while count > 0:
            count -= conn.send_many(batch[:count])

    return conn.send_bytes, conn.read_bytes, send_stream


def connection_natural(sock: socket.socket, write_buffer: int = 0):
    # The loop users write: one send_bytes per frame.
    conn = tcpframe.Connection(sock, write_buffer=write_buffer)
    return conn.send_bytes, conn.read_bytes, loop_sender(conn.send_bytes), conn.close


def connection_buffered(sock: socket.socket):
    return connection_natural(sock, write_buffer=65536)


def lesson_helpers(sock: socket.socket) -> Endpoint:
    # The lesson's send_string, for bytes: header and body in two sends.
    def send(data: bytes) -> None:
        lesson.send_all_bytes(sock, str(len(data)).zfill(8).encode())
        lesson.send_all_bytes(sock, data)

    def recv() -> bytes:
        return lesson.receive_all_bytes(sock, int(lesson.receive_all_bytes(sock, 8)))

    return send, recv, loop_sender(send)


def sendall_recv_into(sock: socket.socket) -> Endpoint:
    # The best plain Python: one sendall per frame, recv_into a preallocated buffer.
    def send(data: bytes) -> None:
        sock.sendall(b"%08d" % len(data) + data)

    def recv_exact(n: int) -> bytearray:
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        while got < n:
            k = sock.recv_into(view[got:])
            if k == 0:
                raise ConnectionError("peer closed")
            got += k
        return buf

    def recv() -> bytes:
        return recv_exact(int(recv_exact(8)))

    return send, recv, loop_sender(send)


SOCKET_IMPLS: Dict[str, Callable[[socket.socket], Endpoint]] = {
    "tcpframe": tcpframe_functions,
    "connection": tcpframe_connection,
    "conn_loop": connection_natural,
    "conn_buffered": connection_buffered,
    "lesson": lesson_helpers,
    "sendall": sendall_recv_into,
}


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# -- the two sides, shared by every implementation ----------------------


def serve_endpoint(endpoint: Endpoint, mode: str) -> None:
    send, recv = endpoint[0], endpoint[1]
    if mode == "rr":
        try:
            while True:
                send(recv())
        except (EOFError, RuntimeError, OSError):
            return  # the client is done (the lesson's helpers raise RuntimeError)
    elif mode == "stream":
        frames = 0
        while len(recv()) > 0:
            frames += 1
        send(str(frames).encode())
    else:
        before = peak_rss()
        payload = recv()
        send(json.dumps({"rss_growth": peak_rss() - before, "size": len(payload)}).encode())


def run_client(endpoint: Endpoint, mode: str, size: int, count: int) -> dict:
    send, recv, send_stream = endpoint[:3]
    payload = bytes(size)
    if mode == "rr":
        samples = []
        for _ in range(count):
            t0 = time.perf_counter_ns()
            send(payload)
            recv()
            samples.append(time.perf_counter_ns() - t0)
        return {"median_us": statistics.median(samples) / 1000}
    if mode == "stream":
        t0 = time.perf_counter()
        send_stream(payload, count)
        send(b"")
        assert int(recv()) == count
        return {"seconds": time.perf_counter() - t0}
    send(payload)
    return json.loads(recv())


def socket_server(impl: str, mode: str) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        print(listener.getsockname()[1], flush=True)
        conn, _ = listener.accept()
    with conn:
        endpoint = SOCKET_IMPLS[impl](conn)
        serve_endpoint(endpoint, mode)
        if len(endpoint) > 3:
            endpoint[3]()


def socket_client(impl: str, mode: str, port: int, size: int, count: int) -> dict:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        endpoint = SOCKET_IMPLS[impl](sock)
        result = run_client(endpoint, mode, size, count)
        if len(endpoint) > 3:
            endpoint[3]()
        return result


# -- multiprocessing.connection: its own 4-byte framing ------------------


def mp_endpoint(conn) -> Endpoint:
    return conn.send_bytes, conn.recv_bytes, loop_sender(conn.send_bytes)


def mp_server(mode: str) -> None:
    from multiprocessing.connection import Listener

    with Listener(("127.0.0.1", 0)) as listener:
        print(listener.address[1], flush=True)
        with listener.accept() as conn:
            serve_endpoint(mp_endpoint(conn), mode)


def mp_client(mode: str, port: int, size: int, count: int) -> dict:
    from multiprocessing.connection import Client

    with Client(("127.0.0.1", port)) as conn:
        return run_client(mp_endpoint(conn), mode, size, count)


# -- pyzmq, when installed: REQ/REP round trips, DEALER streams -----------
# A DEALER's send() queues the message for zmq's I/O thread, which writes
# many at a time: the batching a natural loop gets from pyzmq for free.


def zmq_server(mode: str) -> None:
    import zmq

    ctx = zmq.Context()
    sock = ctx.socket(zmq.REP if mode == "rr" else zmq.DEALER)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    print(port, flush=True)
    try:
        if mode == "stream":
            frames = 0
            while len(sock.recv(copy=False)) > 0:
                frames += 1
            sock.send(str(frames).encode())
            return
        while True:
            message = sock.recv(copy=False)
            if len(message) == 1 and message.bytes == b"!":
                sock.send(b"")
                return  # the client is done
            sock.send(message, copy=False)
    finally:
        # A stream's answer is still queued: let the I/O thread send it.
        sock.close(linger=5000 if mode == "stream" else 0)
        ctx.term()


def zmq_client(mode: str, port: int, size: int, count: int) -> dict:
    import zmq

    ctx = zmq.Context()
    sock = ctx.socket(zmq.REQ if mode == "rr" else zmq.DEALER)
    sock.connect(f"tcp://127.0.0.1:{port}")
    try:
        endpoint = (sock.send, sock.recv, loop_sender(sock.send))
        result = run_client(endpoint, mode, size, count)
        if mode == "rr":
            sock.send(b"!")
            sock.recv()
        return result
    finally:
        sock.close(linger=0)
        ctx.term()


SERVERS = {name: (lambda mode, n=name: socket_server(n, mode)) for name in SOCKET_IMPLS}
SERVERS.update({"mpconn": mp_server, "zmq": zmq_server})
CLIENTS = {name: (lambda *a, n=name: socket_client(n, *a)) for name in SOCKET_IMPLS}
CLIENTS.update({"mpconn": mp_client, "zmq": zmq_client})


def main(argv) -> int:
    if len(argv) == 3 and argv[0] == "server":
        SERVERS[argv[1]](argv[2])
        return 0
    if len(argv) == 6 and argv[0] == "client":
        impl, mode, port, size, count = argv[1], argv[2], int(argv[3]), int(argv[4]), int(argv[5])
        print(json.dumps(CLIENTS[impl](mode, port, size, count)), flush=True)
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
