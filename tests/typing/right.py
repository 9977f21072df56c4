"""Code that uses tcpframe the way its docs show: mypy --strict finds nothing."""
import asyncio
import socket

import tcpframe
from tcpframe import aio


def blocking(address: tuple[str, int]) -> None:
    sock = socket.create_connection(address)
    tcpframe.send_bytes(sock, b"bytes")
    tcpframe.send_bytes(sock, bytearray(b"bytearray"))
    tcpframe.send_bytes(sock, memoryview(b"view"))
    tcpframe.send_all(sock, tcpframe.encode_frame(b"x"))
    data: bytes = tcpframe.read_bytes(sock, max_size=1 << 20)
    tcpframe.send_string(sock, "text")
    text: str = tcpframe.read_string(sock)
    tcpframe.send_object(sock, {"numbers": [1, 2.5]})
    obj = tcpframe.read_object(sock, codec="pickle", pickle_limits={"max_ratio": 256})
    limits = tcpframe.PickleLimits(max_containers=10)
    tcpframe.read_object(sock, codec="pickle", pickle_limits=limits)
    with tcpframe.Connection(sock, max_size=1 << 20) as conn:
        host, port = conn.socket.getpeername()
        conn.send_string("hello")
        sent: int = conn.send_many([b"a", b"b"])
        for frame in conn:
            print(frame.decode())
        reply = conn.read_object()
    try:
        tcpframe.read_bytes(sock)
    except tcpframe.ConnectionClosed as exc:
        partial: bytes = exc.partial
        print(partial)
    except tcpframe.FrameError as exc:
        print(exc.header)
    print(data, text, obj, host, port, sent, reply)


async def handle(stream: aio.FrameStream) -> None:
    async for request in stream:
        await stream.send_bytes(request.upper())


async def serve_and_ask() -> bytes:
    async with await aio.start_server(handle, "127.0.0.1", 0, max_memory=1 << 24) as server:
        host, port = server.address[:2]
        async with await aio.open_connection(host, port) as stream:
            await stream.send_bytes(b"hi")
            return await stream.read_bytes()


if __name__ == "__main__":
    print(asyncio.run(serve_and_ask()))
