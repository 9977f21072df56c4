"""The echo service: every frame comes back unchanged.

``python -m tcpframe serve echo`` and ``python -m tcpframe echo TEXT``.
"""

import socket
from typing import Any, Tuple

from ._tcpframe import read_bytes, send_bytes
from .errors import ConnectionClosed

__all__ = ["handle"]


def handle(conn: socket.socket, address: Tuple[Any, ...]) -> None:
    """Send every frame back until the client hangs up."""
    while True:
        try:
            payload = read_bytes(conn)
        except ConnectionClosed as exc:
            if exc.expected is None:
                return
            raise
        send_bytes(conn, payload)
