"""The command line: ``python -m tcpframe demo``."""
import argparse
import socket
import threading

import tcpframe


def demo(args: argparse.Namespace) -> int:
    """A server and a client exchanging framed strings on a free loopback port."""
    listener = socket.create_server(("127.0.0.1", 0))
    host, port = listener.getsockname()
    print(f"server: listening on {host}:{port}")

    def serve_one() -> None:
        conn, addr = listener.accept()
        with conn:
            print("server: Connection address:", addr)
            while True:
                try:
                    text = tcpframe.read_string(conn)
                except tcpframe.ConnectionClosed:
                    print("server: client closed the connection")
                    return
                print(f"server: got {text!r}, replying in upper case")
                tcpframe.send_string(conn, text.upper())

    server = threading.Thread(target=serve_one)
    server.start()
    try:
        with socket.create_connection((host, port), timeout=10) as sock:
            for text in ["Hello", "World", "framed messages never split or merge"]:
                tcpframe.send_string(sock, text)
                print(f"client: sent {text!r}, got {tcpframe.read_string(sock)!r}")
    finally:
        server.join(10)
        listener.close()
    print("demo: done")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tcpframe",
        description="TCP message framing in C: 8 ASCII digits of length, then the payload.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    sub = commands.add_parser(
        "demo", help="run a server and a client on a free loopback port and show the exchange"
    )
    sub.set_defaults(func=demo)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)
