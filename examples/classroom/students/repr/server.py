"""BUGGY on purpose: replies with str() of the reply dict, which is not JSON.

    python server.py PORT

Request: one message (8 ASCII digits of length, then that many bytes) holding
a JSON list of numbers.  Reply: one message, {"average": x} or {"error": why}.
"""
import json
import socket
import sys
import threading


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


def send_message(sock, text):
    body = text.encode()
    # Header and body in ONE call: two sends would wait on Nagle's algorithm.
    send_all_bytes(sock, str(len(body)).zfill(8).encode() + body)


def read_message(sock):
    return receive_all_bytes(sock, int(receive_all_bytes(sock, 8))).decode()


def average(request):
    if not isinstance(request, list) or not request:
        return {"error": "send a non-empty list of numbers"}
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in request):
        return {"error": "every item must be a number"}
    return {"average": sum(request) / len(request)}


def handle(conn, addr):
    with conn:
        while True:  # many requests per connection, until the client closes
            try:
                text = read_message(conn)
            except (RuntimeError, ValueError, OSError):
                return  # closed (or cut mid-message): this client is done
            try:
                reply = average(json.loads(text))
            except ValueError:
                reply = {"error": "not JSON"}
            send_message(conn, str(reply))  # BUG: Python's repr, not JSON


def main(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen()
    try:
        while True:  # every client, each in its own thread
            conn, addr = s.accept()
            print("Connection address:", addr, flush=True)
            threading.Thread(target=handle, args=(conn, addr), daemon=True).start()
    except KeyboardInterrupt:
        pass
    finally:
        s.close()


if __name__ == "__main__":
    main(int(sys.argv[1]))
