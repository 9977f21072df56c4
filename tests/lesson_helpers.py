"""The lesson's hand-typed helpers, as a student types them (typos fixed).

Kept verbatim in spirit so the interop tests prove tcpframe speaks exactly
the wire format a student's own code speaks.
"""


def send_all_bytes(sock, msg):
    totalsent = 0
    while totalsent < len(msg):
        sent = sock.send(msg[totalsent:])
        if sent == 0:
            raise RuntimeError("socket connection broken")
        totalsent = totalsent + sent


def receive_all_bytes(sock, num):
    chunks = []
    bytes_recd = 0
    while bytes_recd < num:
        chunk = sock.recv(num - bytes_recd)
        if not chunk:
            raise RuntimeError("socket connection broken")
        chunks.append(chunk)
        bytes_recd = bytes_recd + len(chunk)
    return b"".join(chunks)


def send_string(sock, msg):
    slen = str(len(msg.encode()))
    while len(slen) < 8:
        slen = "0" + slen
    send_all_bytes(sock, slen.encode())
    send_all_bytes(sock, msg.encode())


def read_string(sock):
    slen = receive_all_bytes(sock, 8)
    return receive_all_bytes(sock, int(slen))
