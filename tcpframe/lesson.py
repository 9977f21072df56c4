"""The lesson's hand-typed helpers, exactly as a student types them in
(only the slide's typos fixed).  Pure Python and deliberately unimproved:
tcpframe's tests use them to prove wire compatibility both ways, and the
benchmark measures them.  Use the C versions (``tcpframe.send_all`` ...)
for real work: ``send_string`` here sends header and body in two calls,
which stalls request/response exchanges on Nagle's algorithm.
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
