"""Framed messages for asyncio (and uvloop), on the same C decoder.

    import asyncio, tcpframe.aio

    async def handle(stream):                 # one task per client
        async for request in stream:          # each frame, until it hangs up
            await stream.send_bytes(request.upper())

    async def main():
        async with await tcpframe.aio.start_server(handle, "127.0.0.1", 8888) as server:
            await server.serve_forever()

    async def client():
        async with await tcpframe.aio.open_connection("127.0.0.1", 8888) as stream:
            await stream.send_string("hello")
            print(await stream.read_string())

Same wire format, same exceptions, same restricted pickle/JSON objects as
the blocking API: a FrameStream talks to tcpframe.send_bytes, a Connection,
the lesson's hand-typed helpers and tcpframe.testing alike.

How it is fast: the protocol is an asyncio.BufferedProtocol whose receive
buffer is the C decoder's own (tcpframe._tcpframe.Receiver): the kernel
writes straight into it, one system call carries many frames, and a large
payload is received straight into the bytes object you get.  Sends made in
one step of a task go out in one write.

How it is safe: a read cancelled (asyncio.wait_for, asyncio.timeout) loses
nothing, since a frame leaves the buffer only when it is returned; each send
writes a whole frame at once, so tasks sharing a stream never interleave
inside one.  start_server's budgets (idle_timeout, frame_timeout,
max_connections, max_connections_per_peer, max_buffered, max_memory) keep a server
answering while thousands of sockets misbehave.
"""

from .server import (
    DEFAULT_FRAME_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_BUFFERED,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_MEMORY,
    DEFAULT_MAX_CONNECTIONS_PER_PEER,
    FrameServer,
    start_server,
)
from .stream import FrameStream, Handler, open_connection

__all__ = [
    "FrameStream",
    "FrameServer",
    "Handler",
    "open_connection",
    "start_server",
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_FRAME_TIMEOUT",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_CONNECTIONS_PER_PEER",
    "DEFAULT_MAX_BUFFERED",
    "DEFAULT_MAX_MEMORY",
]
