"""The command line: ``python -m tcpframe --help``."""

import argparse
import asyncio
import errno
import functools
import logging
import math
import socket
import sys
from typing import Any, Callable, Optional, Sequence, Tuple

from . import aio
from . import average as average_service
from . import echo as echo_service
from ._tcpframe import MAX_SIZE, read_string, send_string
from .errors import ConnectionClosed, FrameError
from .server import Server

def print_reply(address: Tuple[Any, ...], request: Any, reply: Any) -> None:
    say("server", f"{address} asked about {request}, replying {reply}")


SERVICES = {"average": average_service.handle, "echo": echo_service.handle}
ASYNC_SERVICES = {"average": average_service.handle_async, "echo": echo_service.handle_async}
# The largest request each service accepts by default: what one frame may
# cost the server (--max-size changes it).
SERVICE_MAX_SIZE = {"average": average_service.MAX_REQUEST, "echo": 1 << 20}
CLIENT_TIMEOUT = 30.0  # the threaded demo server drops a client silent this long

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


def budget(kind: type) -> Callable[[str], Any]:
    """argparse type: a positive int or float, or 0 for "no limit" (None)."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not {'a whole number' if kind is int else 'a number'}") from None
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if value < 0:
            raise argparse.ArgumentTypeError(f"{text!r} is negative; use 0 for no limit")
        return value or None

    parse.__name__ = kind.__name__
    return parse


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


def async_service_handler(service: str, quiet: bool = False) -> Callable:
    """The service's asyncio handler; unless quiet, printing each connection and reply."""
    handler = ASYNC_SERVICES[service]
    if quiet:
        return handler
    if service == "average":
        handler = functools.partial(handler, report=print_reply)

    async def handle(stream: aio.FrameStream) -> None:
        say("server", "Connection address:", stream.peername)
        await handler(stream)

    return handle


def listen_error(exc: OSError, host: str, port: int) -> CommandError:
    if exc.errno == errno.EADDRINUSE:
        return CommandError(
            f"port {port} on {host} is in use (another server running?): "
            "stop it, or pick another with --port (--port 0 picks a free one)"
        )
    return CommandError(f"cannot listen on {host}:{port}: {exc.strerror or exc}")


async def serve_async(args: argparse.Namespace) -> None:
    """The service on tcpframe.aio, with the budgets given on the command line."""
    shed_reply = average_service.error_reply if args.service == "average" else None
    try:
        server = await aio.start_server(
            async_service_handler(args.service, args.quiet), args.host, args.port,
            max_size=args.max_size or SERVICE_MAX_SIZE[args.service],
            idle_timeout=args.idle_timeout, frame_timeout=args.frame_timeout,
            max_connections=args.max_connections,
            max_connections_per_peer=args.max_connections_per_peer,
            max_buffered=args.max_buffered, shed_reply=shed_reply,
        )
    except OSError as exc:
        raise listen_error(exc, args.host, args.port) from None
    host, port = server.address[:2]
    say("server", f"{args.service} service listening on {host}:{port} (Ctrl-C stops it)")
    async with server:
        await server.serve_forever()


def serve_threaded(args: argparse.Namespace) -> None:
    """The service on the blocking tcpframe.server.Server, a thread per client."""
    handler = service_handler(args.service, args.quiet)
    try:
        server = Server(handler, args.host, args.port,
                        client_timeout=args.idle_timeout or None,
                        max_clients=args.max_connections or 1 << 30,
                        max_size=args.max_size or SERVICE_MAX_SIZE[args.service])
    except OSError as exc:
        raise listen_error(exc, args.host, args.port) from None
    host, port = server.address[:2]
    say("server", f"{args.service} service listening on {host}:{port} "
        "(threaded; Ctrl-C stops it)")
    server.serve_forever()


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
    try:
        if args.threaded:
            serve_threaded(args)
        else:
            asyncio.run(serve_async(args))
    except KeyboardInterrupt:
        say("server", "stopped")
    return 0


def closed_early(host: str, port: int) -> CommandError:
    return CommandError(
        f"the server at {host}:{port} closed the connection before replying "
        "(it may be overloaded, shutting down, or not a tcpframe server); try again"
    )


def cmd_average(args: argparse.Namespace) -> int:
    try:
        result = average_service.average(args.numbers, args.host, args.port)
    except average_service.AverageError as exc:
        raise CommandError(f"the server refused: {exc}") from None
    except ConnectionClosed:
        raise closed_early(args.host, args.port) from None
    except FrameError as exc:
        raise CommandError(f"the server at {args.host}:{args.port} sent something that is "
                           f"not a tcpframe reply: {exc}") from None
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
    except ConnectionClosed:
        raise closed_early(args.host, args.port) from None
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
    budgets = sub.add_argument_group(
        "budgets", "what one client may cost; 0 turns a budget off.  At a connection "
        "limit the stalest idle or slowest client is closed to make room, never the new one")
    budgets.add_argument("--idle-timeout", type=budget(float), default=aio.DEFAULT_IDLE_TIMEOUT,
                         metavar="SECONDS", help="close a client silent this long between "
                         f"messages (default {aio.DEFAULT_IDLE_TIMEOUT:g})")
    budgets.add_argument("--frame-timeout", type=budget(float),
                         default=aio.DEFAULT_FRAME_TIMEOUT, metavar="SECONDS",
                         help="close a client that takes longer than this to send one "
                         f"message once it started (default {aio.DEFAULT_FRAME_TIMEOUT:g})")
    budgets.add_argument("--max-connections", type=budget(int),
                         default=aio.DEFAULT_MAX_CONNECTIONS, metavar="N",
                         help=f"clients connected at once (default {aio.DEFAULT_MAX_CONNECTIONS})")
    budgets.add_argument("--max-connections-per-peer", type=budget(int),
                         default=aio.DEFAULT_MAX_CONNECTIONS_PER_PEER, metavar="N",
                         help="clients connected at once from one IP address (default "
                         f"{aio.DEFAULT_MAX_CONNECTIONS_PER_PEER})")
    budgets.add_argument("--max-size", type=budget(int), default=None, metavar="BYTES",
                         help="the largest message accepted; a client announcing more is "
                         "told why and closed (default 1048576; at most "
                         f"{MAX_SIZE}, what 8 digits can say)")
    budgets.add_argument("--max-buffered", type=budget(int), default=aio.DEFAULT_MAX_BUFFERED,
                         metavar="BYTES", help="bytes received from a client and not yet "
                         "handled; past it the server stops reading from that client "
                         f"(default {aio.DEFAULT_MAX_BUFFERED})")
    # The threaded server's old option names, kept so scripts keep working.
    budgets.add_argument("--client-timeout", type=budget(float), dest="idle_timeout",
                         help=argparse.SUPPRESS)
    budgets.add_argument("--max-clients", type=budget(int), dest="max_connections",
                         help=argparse.SUPPRESS)
    sub.add_argument("--threaded", action="store_true",
                     help="serve with the blocking tcpframe.server.Server (a thread per "
                     "client) instead of asyncio; only --idle-timeout and --max-connections "
                     "apply")
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
        "tcpframe's functions and Connection (send_many, and the natural send_bytes loop "
        "unbuffered and with write_buffer=65536), sendall+recv_into, "
        "multiprocessing.connection, pyzmq (if installed) and the lesson's helpers.",
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
