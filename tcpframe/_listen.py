"""Listening sockets for both servers: IPv4, IPv6, and both at once."""

import socket
from typing import Optional

# Hosts that mean "every interface" of a family.  "::" listens on IPv6 and,
# where the system allows it, on IPv4 too (dual stack), as most servers do.
_ANY_V6 = ("::",)


def listening_socket(host: Optional[str], port: int, backlog: int = 128) -> socket.socket:
    """listening_socket(host, port, backlog=128) -> a bound, listening socket

    host may be an IPv4 or IPv6 address or a name; "::" accepts IPv6 and
    IPv4 clients (dual stack) where the system can; None or "" every IPv4
    interface.  SO_REUSEADDR is on (POSIX), so a restart can take the port
    at once.  Raises OSError (socket.gaierror for a name that does not
    resolve).
    """
    if not host:
        host = "0.0.0.0"
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family = infos[0][0]
    dual = family == socket.AF_INET6 and host in _ANY_V6 and socket.has_dualstack_ipv6()
    return socket.create_server(infos[0][4], family=family, backlog=backlog,
                                dualstack_ipv6=dual)


def address_text(address: object) -> str:
    """("127.0.0.1", 5000) -> "127.0.0.1:5000"; IPv6 -> "[::1]:5000"."""
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        if ":" in str(host):
            return f"[{host}]:{port}"
        return f"{host}:{port}"
    return str(address)
