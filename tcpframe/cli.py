"""The command line: ``python -m tcpframe --help``."""

import argparse
import errno
import functools
import logging
import math
import socket
import sys
from typing import Any, Callable, Optional, Sequence, Tuple

from . import average as average_service
from . import echo as echo_service
from ._tcpframe import read_string, send_string
from .server import Server

def print_reply(address: Tuple[Any, ...], request: Any, reply: Any) -> None:
    say("server", f"{address} asked about {request}, replying {reply}")


SERVICES = {"average": average_service.handle, "echo": echo_service.handle}
CLIENT_TIMEOUT = 30.0  # a served client silent this long is dropped

DESCRIPTION = """\
TCP message framing in C: every message is 8 ASCII digits giving its length,
then the message itself, so it never arrives split or glued to the next one.

Try it in one command:        python -m tcpframe demo
Or in two terminals, as the lesson does:
  terminal 1:                 python -m tcpframe serve average
  terminal 2:                 python -m tcpframe average 1 2 3 4
"""


class CommandError(Exception):
    """A one-line error for the user; exit status 1."""


def number(text: str) -> float:
    """argparse type: an int or a finite float, as the user typed it."""
    try:
        value = int(text)
    except ValueError:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number") from None
    return value


def port_number(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port {value} is not between 0 and 65535")
    return value


def say(who: str, *words: Any) -> None:
    print(f"{who}:", *words, flush=True)


def announcing(handler: Callable) -> Callable:
    """Wrap a handler so it prints the lesson's "Connection address:" line."""

    def handle(conn: socket.socket, address: Tuple[Any, ...]) -> None:
        say("server", "Connection address:", address)
        handler(conn, address)

    return handle


def service_handler(service: str, quiet: bool = False) -> Callable:
    """The service's handler; unless quiet, printing each connection and reply."""
    handler = SERVICES[service]
    if quiet:
        return handler
    if service == "average":
        handler = functools.partial(handler, report=print_reply)
    return announcing(handler)


def open_server(service: str, host: str, port: int, client_timeout: float = CLIENT_TIMEOUT,
                max_clients: int = 256, quiet: bool = False) -> Server:
    handler = service_handler(service, quiet)
    try:
        return Server(handler, host, port, client_timeout=client_timeout,
                      max_clients=max_clients)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise CommandError(
                f"port {port} on {host} is in use (another server running?): "
                "stop it, or pick another with --port (--port 0 picks a free one)"
            ) from None
        raise CommandError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def connect_error(exc: OSError, host: str, port: int, service: str) -> CommandError:
    if isinstance(exc, ConnectionRefusedError):
        return CommandError(
            f"cannot connect to {host}:{port}: connection refused; start the server "
            f"first: python -m tcpframe serve {service} --port {port}"
        )
    return CommandError(f"cannot talk to {host}:{port}: {exc}")


# -- commands -------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    """The lesson's exercise end to end: server and client in one process."""
    handler = service_handler("average")
    with Server(handler, "127.0.0.1", 0, client_timeout=CLIENT_TIMEOUT) as server:
        host, port = server.address[:2]
        say("server", f"average service listening on {host}:{port}")
        for numbers in ([1, 2, 3, 4], [2.5, 3.5, -1], []):
            say("client", f"asking for the average of {numbers}")
            try:
                result = average_service.average(numbers, host, port)
                say("client", f"average = {result}")
            except average_service.AverageError as exc:
                say("client", f"the server said no: {exc}")
    say("demo", "done: the server stopped and closed every connection")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    server = open_server(args.service, args.host, args.port, args.client_timeout,
                         args.max_clients, args.quiet)
    host, port = server.address[:2]
    say("server", f"{args.service} service listening on {host}:{port} (Ctrl-C stops it)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        say("server", "stopped")
    return 0


def cmd_average(args: argparse.Namespace) -> int:
    try:
        result = average_service.average(args.numbers, args.host, args.port)
    except average_service.AverageError as exc:
        raise CommandError(f"the server refused: {exc}") from None
    except OSError as exc:
        raise connect_error(exc, args.host, args.port, "average") from None
    print(result)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from . import bench

    return bench.report_main(args.quick, args.rounds, args.json, args.plot)


def cmd_echo(args: argparse.Namespace) -> int:
    text = " ".join(args.text)
    try:
        with socket.create_connection((args.host, args.port), timeout=10) as sock:
            send_string(sock, text)
            print(read_string(sock))
    except OSError as exc:
        raise connect_error(exc, args.host, args.port, "echo") from None
    return 0


# -- parsing --------------------------------------------------------------


def add_address(parser: argparse.ArgumentParser, listening: bool) -> None:
    parser.add_argument(
        "--host", default="127.0.0.1",
        help=("address to listen on (default 127.0.0.1, this machine only; "
              "0.0.0.0 accepts other machines)") if listening
        else "server address (default 127.0.0.1)",
    )
    parser.add_argument(
        "--port", type=port_number, default=average_service.DEFAULT_PORT,
        help=f"TCP port (default {average_service.DEFAULT_PORT}, the lesson's)"
        + ("; 0 picks a free one" if listening else ""),
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tcpframe", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    sub = commands.add_parser(
        "demo", help="start the average server on a free port, ask it, show both sides",
        description="Start the average server on a free loopback port, run a client "
        "against it, print what each side does, stop.",
    )
    sub.set_defaults(func=cmd_demo)

    sub = commands.add_parser(
        "serve", help="run a server: average or echo",
        description="Run a server until Ctrl-C. 'average' replies to a JSON list of "
        "numbers with {\"average\": x} or {\"error\": why}; 'echo' sends every frame back.",
    )
    sub.add_argument("service", choices=sorted(SERVICES), help="which service")
    add_address(sub, listening=True)
    sub.add_argument("--client-timeout", type=float, default=CLIENT_TIMEOUT, metavar="SECONDS",
                     help=f"drop a client that takes longer than this to send a whole "
                     f"message, or stays silent (default {CLIENT_TIMEOUT:.0f})")
    sub.add_argument("--max-clients", type=int, default=256, metavar="N",
                     help="clients served at once; more are turned away (default 256)")
    sub.add_argument("--quiet", action="store_true",
                     help="do not print a line per connection and request")
    sub.set_defaults(func=cmd_serve)

    sub = commands.add_parser(
        "average", help="ask an average server for the average of numbers",
        description="Send the numbers to a running 'serve average' and print the average.",
    )
    sub.add_argument("numbers", nargs="+", type=number, metavar="N", help="a number")
    add_address(sub, listening=False)
    sub.set_defaults(func=cmd_average)

    sub = commands.add_parser(
        "echo", help="send text to an echo server and print what comes back",
        description="Send the text as one frame to a running 'serve echo'; print the reply.",
    )
    sub.add_argument("text", nargs="+", help="words to send (joined by spaces)")
    add_address(sub, listening=False)
    sub.set_defaults(func=cmd_echo)

    sub = commands.add_parser(
        "bench", help="measure tcpframe against the alternatives and plain C",
        description="Benchmark on loopback, one process per side: a plain-C reference, "
        "tcpframe's functions and Connection, sendall+recv_into, multiprocessing.connection, "
        "pyzmq (if installed) and the lesson's helpers.",
    )
    sub.add_argument("--quick", action="store_true", help="small counts, one round")
    sub.add_argument("--rounds", type=int, help="interleaved rounds (default 5; quick 1)")
    sub.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    sub.add_argument("--plot", metavar="FILE", help="also draw a PNG chart (needs matplotlib)")
    sub.set_defaults(func=cmd_bench)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    # The server reports bad clients through logging; show them on stderr.
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)
    try:
        return args.func(args)
    except CommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
