"""The echo service: every frame comes back unchanged.

``python -m tcpframe serve echo`` and ``python -m tcpframe echo TEXT``.
"""

from typing import Any, Tuple

from .connection import Connection

__all__ = ["handle", "handle_async"]


def handle(conn: Connection, address: Tuple[Any, ...]) -> None:
    """Send every frame back until the client hangs up between frames."""
    for payload in conn:
        conn.send_bytes(payload)


async def handle_async(stream: Any) -> None:
    """The same for tcpframe.aio.start_server: stream is a FrameStream."""
    async for payload in stream:
        await stream.send_bytes(payload)
