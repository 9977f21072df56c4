"""tcpframe.aio's server: start_server(), FrameServer, and the budgets that
keep it answering real clients while thousands of sockets misbehave."""

import asyncio
import collections
import logging
import socket
import struct
from typing import Any, Callable, Dict, Optional, Tuple

from .._listen import listening_socket
from .._ratelog import RateLimitedLog
from .._tcpframe import MAX_SIZE, encode_frame
from ..errors import ConnectionClosed, FrameError
from .stream import LINGER_SECONDS, Handler, _Protocol

__all__ = [
    "FrameServer",
    "start_server",
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_FRAME_TIMEOUT",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_CONNECTIONS_PER_PEER",
    "DEFAULT_MAX_BUFFERED",
    "DEFAULT_MAX_MEMORY",
]

log = logging.getLogger("tcpframe.aio")

# Server budgets: defaults meant for the open internet.  None turns one off.
DEFAULT_IDLE_TIMEOUT = 60.0            # s a client may sit between frames
DEFAULT_FRAME_TIMEOUT = 10.0           # s to finish a frame once it started
DEFAULT_MAX_CONNECTIONS = 4096
DEFAULT_MAX_CONNECTIONS_PER_PEER = 256
DEFAULT_MAX_BUFFERED = 1 << 20         # bytes received, not yet read, per client
DEFAULT_MAX_MEMORY = 256 << 20         # the same, and frames in progress, all clients

# At most one walk over every client per this many seconds to keep max_memory.
_RECOUNT_EVERY = 0.05

# Hosts that mean every interface, IPv6 and IPv4 alike (dual stack).
_DUAL_STACK_HOSTS = ("::",)

# Under attack a server may shed thousands of connections a second: a warning
# for each would flood the log (and a slow stderr would stall the loop), so
# one warning at most this often says how many; each is logged at INFO.
_SHED_WARNING_EVERY = 10.0


def _raise_open_files_limit() -> None:
    """Let the process have as many sockets as its hard limit allows."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on POSIX
        return
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        target = hard
        if hard == resource.RLIM_INFINITY:
            # No soft limit may be infinite (Linux caps it at fs.nr_open,
            # 1 << 20 by default).  The hard limit is left as it is: lowering
            # it could never be undone.
            target = 1 << 20
        if soft != resource.RLIM_INFINITY and soft < target:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:
        log.info("could not raise the open-files limit: %s", exc)


def _reset(protocol: _Protocol) -> None:
    """Close with RST (SO_LINGER 0): the kernel drops what is still unsent."""
    transport = protocol._transport
    if transport is None or protocol._lost:
        return
    sock = transport.get_extra_info("socket")
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except (AttributeError, OSError) as exc:
        log.debug("could not set SO_LINGER on %s: %s", protocol.peer, exc)
    transport.abort()


def _budget(name: str, value: Any, integer: bool) -> Any:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            (integer and not isinstance(value, int)):
        kind = "an int" if integer else "a number of seconds"
        raise TypeError(f"{name} must be {kind} or None, not {value!r}")
    if not value > 0:
        raise ValueError(f"{name} must be > 0 (or None for no limit), not {value!r}")
    return value


class FrameServer:
    """What start_server() returns: an asyncio.Server-like object.

    ``sockets``, ``close()``, ``await wait_closed()``, ``await
    serve_forever()``, ``async with``; ``address`` (the first socket's
    (host, port)); ``connections`` (how many clients now).  close() stops
    listening and closes every client connection; wait_closed() waits for
    every handler to finish.
    """

    def __init__(self, handler: Handler, max_size: int, *, idle_timeout: Optional[float],
                 frame_timeout: Optional[float], max_connections: Optional[int],
                 max_connections_per_peer: Optional[int], max_buffered: Optional[int],
                 max_memory: Optional[int] = DEFAULT_MAX_MEMORY,
                 shed_reply: Optional[Callable[[str], bytes]]) -> None:
        self._handler = handler
        self._max_size = max_size
        self.idle_timeout = _budget("idle_timeout", idle_timeout, False)
        self.frame_timeout = _budget("frame_timeout", frame_timeout, False)
        self.max_connections = _budget("max_connections", max_connections, True)
        self.max_connections_per_peer = _budget("max_connections_per_peer",
                                                max_connections_per_peer, True)
        self.max_buffered = _budget("max_buffered", max_buffered, True)
        self.max_memory = _budget("max_memory", max_memory, True)
        if self.max_memory is not None and self.max_memory < max_size + 8:
            raise ValueError(
                f"max_memory={self.max_memory} cannot hold one frame of max_size={max_size} "
                f"(and its 8-byte header): raise max_memory or lower max_size")
        # What the clients' input holds, as max_memory counts it: each
        # connection's count is brought up to date when it receives, and
        # not when its handler reads, so this is an upper bound, made exact
        # (a walk over every client) only when it passes max_memory.
        self._memory = 0
        self._next_recount = 0.0   # loop time of the next full count allowed
        self._shed_reply = shed_reply
        self._loop = asyncio.get_running_loop()
        self._server: Optional[asyncio.AbstractServer] = None
        # Every live connection, the one with the oldest progress first.
        self._clients: "collections.OrderedDict[_Protocol, None]" = collections.OrderedDict()
        self._peers: Dict[Any, "collections.OrderedDict[_Protocol, None]"] = {}
        # Closed by a budget (or refused) and no longer counted, but still
        # lingering until the peer is done: wait_closed() ends them too.
        self._ending: "set[_Protocol]" = set()
        self._tasks: "set[asyncio.Task]" = set()
        self._sweeper: Optional[asyncio.TimerHandle] = None
        self._closing = False
        self._forever: Optional[asyncio.Future] = None   # serve_forever()'s
        self.shed_count = 0
        # What bad clients did: at most 10 lines of each kind per 10 s.
        self._client_log = RateLimitedLog(log)
        self._unwarned_sheds = 0
        self._next_shed_warning = 0.0

    # -- asyncio.Server's face ---------------------------------------------------

    @property
    def sockets(self) -> Tuple[socket.socket, ...]:
        return tuple(self._server.sockets) if self._server is not None else ()  # type: ignore[attr-defined]

    @property
    def address(self) -> Tuple[Any, ...]:
        """(host, port) of the first listening socket."""
        return self.sockets[0].getsockname()

    @property
    def connections(self) -> int:
        """How many clients are connected now."""
        return len(self._clients)

    @property
    def memory(self) -> int:
        """Bytes the clients' input holds, as max_memory counts them: receive
        buffers, whole frames not yet read (with their bytes objects) and
        frames in progress at their announced size."""
        total = 0
        for protocol in self._clients:
            total += protocol._commitment()
        return total

    def is_serving(self) -> bool:
        return self._server is not None and self._server.is_serving()

    async def start_serving(self) -> None:
        assert self._server is not None
        await self._server.start_serving()

    async def serve_forever(self) -> None:
        """Serve until cancelled (or close()); closes everything on the way out."""
        assert self._server is not None
        if self._forever is not None:
            raise RuntimeError(f"{self!r} is already being awaited on serve_forever()")
        # Not asyncio.Server.serve_forever(): cancelled, 3.12's waits for
        # every connection to end before it returns, and ours are only
        # closed by our close(), after it -- it would wait forever.
        if not self._server.is_serving():
            await self._server.start_serving()
        self._forever = self._loop.create_future()
        try:
            await self._forever
        finally:
            self._forever = None
            self.close()
            await self.wait_closed()

    def close(self) -> None:
        """Stop listening and close every client connection (handlers see
        ConnectionClosed on their next read)."""
        self._closing = True
        if self._forever is not None and not self._forever.done():
            self._forever.cancel()   # as asyncio.Server.close() does
        if self._server is not None:
            self._server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for protocol in list(self._clients):
            protocol._close("the server is shutting down")

    async def wait_closed(self) -> None:
        """Wait until every handler has returned (after close())."""
        # Connections accepted just before close() may not have reached
        # _admit yet (the loop calls connection_made soon after it makes the
        # transport): a few turns of the loop bring them there, and _admit
        # closes them at once.  Left to a loop that ends now, their sockets
        # would be closed by no one.
        for _ in range(3):
            await asyncio.sleep(0)
        if self._server is not None:
            await self._server.wait_closed()
        if self._tasks:
            # Handlers see ConnectionClosed on their next read; one busy
            # elsewhere gets a moment, then is cancelled.
            await asyncio.wait(list(self._tasks), timeout=LINGER_SECONDS * 2)
            for task in list(self._tasks):
                task.cancel()
        while self._tasks:
            await asyncio.wait(list(self._tasks))
        # Connections closing gracefully (lingering) are aborted now, and
        # their connection_lost given a turn of the loop, so that none is
        # left to a closed loop.
        lingering = list(self._clients) + list(self._ending)
        for protocol in lingering:
            protocol._abort()
        if lingering:
            await asyncio.sleep(0)

    async def __aenter__(self) -> "FrameServer":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()
        await self.wait_closed()

    def __repr__(self) -> str:
        return f"<tcpframe.aio.FrameServer sockets={self.sockets!r} connections={self.connections}>"

    # -- connections --------------------------------------------------------------

    def _admit(self, protocol: _Protocol) -> None:
        if self._closing:
            # Accepted just as the server closed (wait_closed() may be over):
            # no loop may be left to end a linger, so close at once.
            self._ending.add(protocol)
            protocol._close("the server is shutting down")
            protocol._abort()
            return
        protocol._max_buffered = self.max_buffered
        peer_key = protocol.peer[0] if isinstance(protocol.peer, tuple) else protocol.peer
        mine = self._peers.get(peer_key)
        if (self.max_connections_per_peer is not None and mine is not None
                and len(mine) >= self.max_connections_per_peer):
            self._shed_one(mine, protocol, f"too many connections from {peer_key} "
                           f"(max_connections_per_peer={self.max_connections_per_peer})")
        if self.max_connections is not None and len(self._clients) >= self.max_connections:
            self._shed_one(self._clients, protocol,
                           f"the server is full (max_connections={self.max_connections})")
        if protocol._closed_why is not None:
            return
        self._clients[protocol] = None
        # Looked up again: shedding may have emptied and removed this peer's
        # pool, and a pool outside _peers would count for nobody.
        mine = self._peers.get(peer_key)
        if mine is None:
            mine = self._peers[peer_key] = collections.OrderedDict()
        mine[protocol] = None
        protocol._peer_key = peer_key
        task = self._loop.create_task(self._serve(protocol))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if self._sweeper is None and (self.idle_timeout or self.frame_timeout):
            self._schedule_sweep()

    def _shed_one(self, pool: "collections.OrderedDict[_Protocol, None]",
                  newcomer: _Protocol, why: str) -> None:
        """Make room in pool: close its stalest idle or slow connection
        (the oldest progress first), else the oldest; the newcomer only if
        the pool is empty."""
        victim = None
        for i, candidate in enumerate(pool):
            if candidate._sheddable():
                victim = candidate
                break
            if i >= 1024:   # bounded work per newcomer under a flood
                break
        if victim is None:
            victim = next(iter(pool), None)
        self.shed_count += 1
        self._warn_shed(why)
        if victim is None:
            log.info("%s refused: %s", newcomer.peer, why)
            self._ending.add(newcomer)
            newcomer._close(f"refused: {why}", self._reply_for(f"refused: {why}"))
            return
        log.info("%s shed to make room for %s: %s", victim.peer, newcomer.peer, why)
        self._end(victim, f"shed: {why}", f"closed to make room: {why}")

    def _end(self, protocol: _Protocol, why: str, reply_why: str) -> None:
        """Close a connection for a budget: it no longer counts at once."""
        self._forget(protocol)
        self._ending.add(protocol)
        protocol._close(why, self._reply_for(reply_why))
        if protocol._write_paused:
            # It is not reading what we send: lingering, or even a plain
            # close, would leave our unsent replies to the kernel, trickling
            # out (and holding its memory) long after.  Reset instead.
            _reset(protocol)

    def _warn_shed(self, why: str) -> None:
        self._unwarned_sheds += 1
        now = self._loop.time()
        if now >= self._next_shed_warning:
            log.warning("shed %d connection(s) to make room since the last such warning; "
                        "the latest because %s", self._unwarned_sheds, why)
            self._unwarned_sheds = 0
            self._next_shed_warning = now + _SHED_WARNING_EVERY

    def _reply_for(self, why: str) -> Optional[bytes]:
        """shed_reply(why), checked here: a bad one must not stop the close."""
        if self._shed_reply is None:
            return None
        try:
            reply = self._shed_reply(why)
            encode_frame(reply)   # bytes-like, within MAX_SIZE: else say so here
            return reply
        except Exception:
            log.exception("shed_reply failed; closing without a reply")
            return None

    def _touch(self, protocol: _Protocol) -> None:
        # A frame completed: this connection is now the freshest.
        clients = self._clients
        if protocol in clients:
            clients.move_to_end(protocol)
            mine = self._peers.get(protocol._peer_key)
            if mine is not None:
                mine.move_to_end(protocol)

    def _forget(self, protocol: _Protocol) -> None:
        # Called by _end() (still connected: it joins _ending after) and by
        # connection_lost() (gone: it leaves _ending too).
        if protocol._lost:
            self._ending.discard(protocol)
        if protocol in self._clients:
            self._memory -= protocol._charged
            protocol._charged = 0
            del self._clients[protocol]
            key = protocol._peer_key
            mine = self._peers.get(key)
            if mine is not None:
                mine.pop(protocol, None)
                if not mine:
                    del self._peers[key]

    async def _serve(self, protocol: _Protocol) -> None:
        stream = protocol.stream
        peer = protocol.peer
        try:
            await self._handler(stream)  # type: ignore[arg-type]
        except (ConnectionClosed, FrameError, OSError, asyncio.TimeoutError) as exc:
            if self._closing:
                # We cut it off (close()): the client did nothing wrong.
                log.debug("%s closed by the shutdown: %s", peer, exc)
            else:
                self._client_log.client_error(peer, exc, (socket.timeout, asyncio.TimeoutError))
        except asyncio.CancelledError:
            if not self._closing:
                raise
        except Exception:
            self._client_log.log(logging.ERROR, "handler failed",
                                 "handler failed for %s; closing that client", peer,
                                 exc_info=True)
        finally:
            protocol._close("the handler returned")

    # -- budgets ------------------------------------------------------------------

    def _charge(self, protocol: _Protocol) -> bool:
        """After protocol received: count it, and keep max_memory.  True if
        protocol itself was shed."""
        if protocol not in self._clients:
            return False      # being shed already, or refused
        new = protocol._commitment()
        self._memory += new - protocol._charged
        protocol._charged = new
        if self._memory <= self.max_memory:  # type: ignore[operator]
            return False
        now = self._loop.time()
        if now >= self._next_recount:
            self._next_recount = now + _RECOUNT_EVERY
            return self._shed_for_memory(protocol)
        # Between full counts (a walk over every client: a flood of headers
        # must not make each receive cost that), the client that went past
        # the budget goes if it is slow; a client whose frames are whole
        # waits for the next count, a moment away.
        if protocol._sheddable():
            self._shed_memory_hog(protocol)
            return True
        return False

    def _shed_for_memory(self, protocol: _Protocol) -> bool:
        # Count exactly: the handlers' reads since each connection last
        # received are not in the running total.
        total = 0
        for client in self._clients:
            client._charged = client._commitment()
            total += client._charged
        self._memory = total
        limit = self.max_memory
        if total <= limit:  # type: ignore[operator]
            return False
        # Shed down to 7/8 of the budget, so that a server held at its
        # budget by a flood walks its clients once per eighth of it, not at
        # every receive.  Those not keeping up first (a frame in progress, an
        # idle or unread peer), then the rest; among them, who holds the most
        # memory it was not sent: a frame announced but not sent is the
        # cheapest attack there is, and a real upload is mostly received.
        order = sorted(self._clients, key=lambda c: (
            not c._sheddable(), -c._unsent(), -c._charged))
        shed_self = False
        for victim in order:
            if self._memory <= limit - limit // 8 or victim._charged == 0:  # type: ignore[operator]
                break
            shed_self |= victim is protocol
            self._shed_memory_hog(victim)
        return shed_self

    def _shed_memory_hog(self, victim: _Protocol) -> None:
        why = (f"the server is short of memory (max_memory={self.max_memory} bytes of "
               "input held for clients)")
        self.shed_count += 1
        self._warn_shed(why)
        log.info("%s shed, holding %d bytes: %s", victim.peer, victim._charged, why)
        self._end(victim, f"shed: {why}", f"closed: {why}")

    def _schedule_sweep(self) -> None:
        shortest = min(t for t in (self.idle_timeout, self.frame_timeout) if t)
        interval = min(max(shortest / 4, 0.05), 1.0)
        self._sweeper = self._loop.call_later(interval, self._sweep)

    def _sweep(self) -> None:
        """Close connections past idle_timeout or frame_timeout.  The oldest
        progress comes first, so the walk stops at the first that is too
        fresh to be late by either budget."""
        self._sweeper = None
        if self._closing:
            return
        try:
            now = self._loop.time()
            shortest = min(t for t in (self.idle_timeout, self.frame_timeout) if t)
            late = []
            for protocol in self._clients:
                if now - protocol._since <= shortest:
                    break
                why = protocol._overdue(now, self.idle_timeout, self.frame_timeout)
                if why is not None:
                    late.append((protocol, why))
            for protocol, why in late:
                log.info("%s closed: %s", protocol.peer, why)
                self._end(protocol, why, f"closed: {why}")
        finally:
            # Whatever went wrong above, the budgets must keep being kept.
            if self._clients and self._sweeper is None and not self._closing:
                self._schedule_sweep()


async def start_server(
    handler: Handler,
    host: Optional[str] = None,
    port: int = 0,
    *,
    max_size: int = MAX_SIZE,
    idle_timeout: Optional[float] = DEFAULT_IDLE_TIMEOUT,
    frame_timeout: Optional[float] = DEFAULT_FRAME_TIMEOUT,
    max_connections: Optional[int] = DEFAULT_MAX_CONNECTIONS,
    max_connections_per_peer: Optional[int] = DEFAULT_MAX_CONNECTIONS_PER_PEER,
    max_buffered: Optional[int] = DEFAULT_MAX_BUFFERED,
    max_memory: Optional[int] = DEFAULT_MAX_MEMORY,
    shed_reply: Optional[Callable[[str], bytes]] = None,
    **kwargs: Any,
) -> FrameServer:
    """start_server(handler, host=None, port=0, *, max_size=MAX_SIZE,
    idle_timeout=60.0, frame_timeout=10.0, max_connections=4096,
    max_connections_per_peer=256, max_buffered=1048576,
    max_memory=268435456, shed_reply=None, **kwargs) -> FrameServer

    Listen on (host, port) -- port 0 picks a free one, host None every
    interface, "::" every interface, IPv6 and IPv4 -- and run ``await handler(stream)`` in a task per client.
    When the handler returns (or raises: logged to ``tcpframe.aio``), the
    connection is closed.  kwargs go to loop.create_server (ssl, backlog,
    reuse_port...).

    Budgets (None turns one off):
    idle_timeout: seconds a client may leave the handler waiting between
        frames (or waiting for it to read a reply) before it is closed;
        a handler busy elsewhere is not waiting on its client.
    frame_timeout: seconds a client has to finish a frame once its first
        byte arrived (slow-loris senders).
    max_connections / max_connections_per_peer (by IP address): at the
        limit a new client is served and the stalest connection (idle or
        slowest, in that pool) is shed to make room.
    max_buffered: bytes received but not yet read by the handler
        (headers included), per connection; past it, while whole frames
        wait, the server stops reading from that peer (one receive may
        overshoot it) until the handler catches up.  A frame larger than
        it still arrives: max_size and frame_timeout bound that one.
    max_memory: bytes of input held for all clients together: receive
        buffers, whole frames not yet read (each with its bytes object) and
        every frame in progress at its announced size (a large frame's
        buffer is taken when its header arrives).  Past it, connections are
        shed, the largest slow or idle ones first, until 7/8 of it is held.
        Without it the worst case is max_connections * (max_size +
        max_buffered).
    shed_reply(reason) -> bytes: the payload of a last frame sent to a
        connection closed by a budget, for protocols that have an error
        reply (the CLI's average service sends {"error": reason}).  A
        client that is not reading is reset instead.

    The process's soft limit of open files is raised to its hard limit
    (the hard limit is left as it is).
    """
    if not callable(handler):
        raise TypeError(f"start_server needs an async handler(stream) function, not "
                        f"{type(handler).__name__}")
    _raise_open_files_limit()
    server = FrameServer(handler, max_size, idle_timeout=idle_timeout,
                         frame_timeout=frame_timeout, max_connections=max_connections,
                         max_connections_per_peer=max_connections_per_peer,
                         max_buffered=max_buffered, max_memory=max_memory,
                         shed_reply=shed_reply)
    kwargs.setdefault("backlog", 4096)
    loop = server._loop
    made = None
    if "sock" in kwargs:
        host = port = None      # type: ignore[assignment]
    elif host in _DUAL_STACK_HOSTS:
        # asyncio listens on "::" for IPv6 only (it sets IPV6_V6ONLY); a
        # server told "::" is expected to answer IPv4 clients too.
        made = kwargs["sock"] = listening_socket(host, port, kwargs.pop("backlog"))
        host = port = None      # type: ignore[assignment]
    try:
        server._server = await loop.create_server(lambda: _Protocol(max_size, server),
                                                  host, port, **kwargs)
    except BaseException:
        if made is not None:
            made.close()
        raise
    return server
