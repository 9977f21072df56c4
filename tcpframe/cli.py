"""The command line: ``python -m tcpframe --help``."""

import argparse
import asyncio
import contextlib
import errno
import functools
import json
import logging
import math
import os
import signal
import socket
import sys
import threading
from typing import Any, Awaitable, Callable, Dict, Iterator, Optional, Sequence, Tuple

from . import __version__, aio
from . import average as average_service
from . import echo as echo_service
from ._listen import address_text
from ._tcpframe import MAX_SIZE, read_bytes, send_bytes
from .errors import ConnectionClosed, FrameError
from .server import Server

# Exit status of a command stopped by Ctrl-C, as shells report it (128 + SIGINT).
EXIT_INTERRUPTED = 130
CLIENT_TIMEOUT_DEFAULT = 10.0   # s a client command waits for the server


def print_reply(address: Tuple[Any, ...], request: Any, reply: Any) -> None:
    say("server", f"{address_text(address)}: asked about {request}, replying {reply}")


SERVICES: Dict[str, Callable[..., None]] = {
    "average": average_service.handle, "echo": echo_service.handle}
ASYNC_SERVICES: Dict[str, Callable[..., Awaitable[None]]] = {
    "average": average_service.handle_async, "echo": echo_service.handle_async}
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
    value: float
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


def seconds(text: str) -> float:
    """argparse type: a finite number of seconds > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds > 0")
    return value


def port_number(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port {value} is not between 0 and 65535")
    return value


_say_lock = threading.Lock()


def say(who: str, *words: Any) -> None:
    """One whole line on stdout, even with a thread per client printing."""
    line = " ".join([f"{who}:", *map(str, words)]) + "\n"
    with _say_lock:
        sys.stdout.write(line)
        sys.stdout.flush()


def announcing(handler: Callable) -> Callable:
    """Wrap a handler so it prints the lesson's "Connection address:" line."""

    def handle(conn: socket.socket, address: Tuple[Any, ...]) -> None:
        say("server", f"{address_text(address)}: Connection address: {address}")
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
        peer = stream.peername
        say("server", f"{address_text(peer)}: Connection address: {peer}")
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
            max_buffered=args.max_buffered, max_memory=args.max_memory,
            shed_reply=shed_reply,
        )
    except OSError as exc:
        raise listen_error(exc, args.host, args.port) from None
    except ValueError as exc:   # budgets that contradict each other
        raise CommandError(f"serve: {exc}") from None
    say("server", f"{args.service} service listening on {address_text(server.address)} "
        "(Ctrl-C stops it)")
    # SIGINT (Ctrl-C) and SIGTERM (kill, systemd, docker stop): stop serving,
    # close every client, wait for the handlers, then return normally.
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, task.cancel)  # type: ignore[union-attr]
    try:
        async with server:
            await server.serve_forever()
    except asyncio.CancelledError:
        pass


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
    say("server", f"{args.service} service listening on {address_text(server.address)} "
        "(threaded; Ctrl-C stops it)")
    # SIGTERM stops it as Ctrl-C does: serve_forever closes every client on the way out.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        server.serve_forever()
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def talking_to(host: str, port: int, service: str, timeout: float) -> Iterator[None]:
    """Turn whatever can go wrong talking to a server into one line that
    says what happened and what to do."""
    where = address_text((host, port))
    try:
        yield
    except ConnectionRefusedError:
        raise CommandError(
            f"cannot connect to {where}: connection refused (nothing listens there); "
            f"start the server first: python -m tcpframe serve {service} --port {port}"
        ) from None
    except ConnectionClosed:
        raise CommandError(
            f"the server at {where} closed the connection before replying (it may be "
            "overloaded, shutting down, or not a tcpframe server); try again"
        ) from None
    except FrameError as exc:
        seen = f" it began with {exc.header!r};" if exc.header is not None else ""
        raise CommandError(
            f"the server at {where} did not reply with a tcpframe message (8 digits of "
            f"length, then the message):{seen} is port {port} the {service} server?"
        ) from None
    except socket.gaierror as exc:
        raise CommandError(f"cannot find the host {host!r}: {exc.strerror or exc}") from None
    except (socket.timeout, TimeoutError):
        raise CommandError(
            f"no reply from {where} within {timeout:g} s: the server is busy or stuck, "
            "or is not a tcpframe server; try again, or wait longer with --timeout"
        ) from None
    except OSError as exc:
        raise CommandError(f"cannot talk to {where}: {exc.strerror or exc}") from None


def not_json(host: str, port: int, payload: bytes) -> CommandError:
    shown = payload[:60] + (b"..." if len(payload) > 60 else b"")
    return CommandError(
        f"the server at {address_text((host, port))} replied {shown!r}, which is not "
        "JSON: is it the average server? (a server that replies with pickle or "
        "repr() instead of json.dumps() looks like this)"
    )


# -- commands -------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    """The lesson's exercise end to end: server and client in one process."""
    handler = service_handler("average")
    with Server(handler, "127.0.0.1", 0, client_timeout=CLIENT_TIMEOUT) as server:
        host, port = server.address[:2]
        say("server", f"average service listening on {address_text((host, port))}")
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
        pass   # the threaded server, or a signal before the loop took over
    say("server", "stopped")
    return 0


def ask(host: str, port: int, timeout: float, payload: bytes, max_size: int) -> bytes:
    """One request frame, one reply frame, the whole exchange within timeout."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        send_bytes(sock, payload)
        return read_bytes(sock, max_size=max_size)


def cmd_average(args: argparse.Namespace) -> int:
    request = json.dumps(args.numbers).encode()
    with talking_to(args.host, args.port, "average", args.timeout):
        payload = ask(args.host, args.port, args.timeout, request, average_service.MAX_REQUEST)
    try:
        reply = json.loads(payload.decode("utf-8"))
    except ValueError:
        raise not_json(args.host, args.port, payload) from None
    try:
        result = average_service.reply_value(reply)
    except average_service.AverageError as exc:
        raise CommandError(f"the server refused: {exc}") from None
    print(result)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from . import bench

    return bench.report_main(args.quick, args.rounds, args.json, args.plot)


def cmd_echo(args: argparse.Namespace) -> int:
    request = " ".join(args.text).encode("utf-8")
    with talking_to(args.host, args.port, "echo", args.timeout):
        payload = ask(args.host, args.port, args.timeout, request, MAX_SIZE)
    print(payload.decode("utf-8", "replace"))
    return 0


def cmd_grade(args: argparse.Namespace) -> int:
    from . import classroom

    return classroom.main(args.dirs, junit=args.junit, jobs=args.jobs, timeout=args.timeout,
                          details=args.details)


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
    if not listening:
        parser.add_argument(
            "--timeout", type=seconds, default=CLIENT_TIMEOUT_DEFAULT, metavar="SECONDS",
            help=f"give up when the server has not answered within this long "
            f"(default {CLIENT_TIMEOUT_DEFAULT:g})")


def program_name() -> str:
    """How the user ran us: the console script, or python -m tcpframe."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return "tcpframe" if name in ("tcpframe", "tcpframe.exe") else "python -m tcpframe"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=program_name(), description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version",
                        version=f"tcpframe {__version__} (Python {sys.version.split()[0]})")
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
    budgets.add_argument("--max-memory", type=budget(int), default=aio.DEFAULT_MAX_MEMORY,
                         metavar="BYTES", help="bytes received from all clients together and "
                         "not yet handled, messages in progress counted at their announced "
                         "size; past it the largest slow clients are closed "
                         f"(default {aio.DEFAULT_MAX_MEMORY})")
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

    sub = commands.add_parser(
        "grade", help="grade a class: every student's average server, in a table",
        description="Start each student's server.py (one directory per student; the port "
        "is its first argument), run the average-server checks on it, and print a table of "
        "checks passed and mistakes found.  Exit status 1 if any student failed.  The "
        "servers run with your rights: grade untrusted code in a container or VM.",
    )
    sub.add_argument("dirs", nargs="+", metavar="DIR", help="a directory of student directories")
    sub.add_argument("--junit", metavar="FILE", help="also write JUnit XML, for a learning "
                     "platform or CI")
    sub.add_argument("--jobs", type=budget(int), default=None, metavar="N",
                     help="servers graded at once (default: up to 4, one per CPU)")
    sub.add_argument("--timeout", type=budget(float), default=5.0, metavar="SECONDS",
                     help="how long to wait for each reply (default 5)")
    sub.add_argument("--details", action="store_true",
                     help="also print each failing student's report: what was seen, why, "
                     "what to do")
    sub.set_defaults(func=cmd_grade)
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
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
