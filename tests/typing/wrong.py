"""Mistakes a type checker must catch; each line marked ``# error: <code>``."""
import socket

import tcpframe

sock = socket.socket()
tcpframe.send_bytes(sock, "text")  # error: arg-type
tcpframe.send_all(sock, "text")  # error: arg-type
tcpframe.encode_frame("text")  # error: arg-type
tcpframe.Connection("not a socket")  # error: arg-type
tcpframe.read_bytes(sock, max_size="10")  # error: arg-type
text: str = tcpframe.read_bytes(sock)  # error: assignment
with tcpframe.Connection(sock) as conn:
    conn.send_bytes("text")  # error: arg-type
    conn.socket.no_such_method()  # error: attr-defined
