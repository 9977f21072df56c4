"""tcpframe.aio's connection: the buffered protocol on the C Receiver, and
FrameStream, what a task reads and sends frames with.  The budget hooks a
server needs (progress times, closing with a reason, lingering) live on the
protocol too; tcpframe.aio.server decides when to use them."""

import asyncio
from typing import TYPE_CHECKING, Any, AsyncIterator, Awaitable, Callable, Iterable, List, Optional

from .._tcpframe import HEADER_SIZE as _HEADER_SIZE
from .._tcpframe import MAX_SIZE, Receiver, encode_frame, encode_frames, encode_header
from ..errors import ConnectionClosed
from ..objects import JSON_MAX_DEPTH, LimitsArg, _check_arguments, _decode, _encode

if TYPE_CHECKING:  # pragma: no cover
    from .server import FrameServer

__all__ = ["FrameStream", "open_connection", "Handler", "LINGER_SECONDS"]



# Small frames written in one step of a task are gathered into one write; a
# batch this large goes out at once (so flow control sees it).
_GATHER_LIMIT = 1 << 16
# Payloads this large go to the transport as they are, after their header.
_DIRECT_SEND = 1 << 16
# A closing connection waits this long for the peer to read our last frames
# (an RST would make its kernel drop them), and drains at most this much.
LINGER_SECONDS = 0.5
_TOUCH_EVERY = 0.01
_LINGER_BYTES = 1 << 16
_SCRATCH = memoryview(bytearray(_LINGER_BYTES))   # where lingering input goes



class _Protocol(asyncio.BufferedProtocol):
    """One connection's state: the receive buffer, waiting readers, flow control."""

    _max_buffered: Optional[int] = None   # servers set it per connection
    _peer_key: Any = None

    def __init__(self, max_size: int, server: Optional["FrameServer"] = None) -> None:
        self._receiver = Receiver(max_size=max_size)
        self._server = server
        self._transport: Optional[asyncio.Transport] = None
        self._loop = asyncio.get_running_loop() if server is None else server._loop
        self._readers: List[asyncio.Future] = []
        self._eof = False
        self._lost = False
        self._lost_exc: Optional[BaseException] = None
        self._closed_why: Optional[str] = None    # we closed it: why
        self._closed_event: Optional[asyncio.Future] = None
        self._write_paused = False
        self._drainers: List[asyncio.Future] = []
        self._gathered: Optional[bytearray] = None   # frames of this step, not yet written
        self._wrote = False           # a frame went out directly in this step
        self._read_paused = False     # by max_buffered
        self._owed = 0                # bytes to read (paused) before _after_pop
        self._lingering = False
        self._lingered = 0
        # Budget bookkeeping (servers only), in loop.time() seconds.
        self._since = 0.0             # connected, or last frame completed
        self._touched = 0.0           # last moved to the end of the server's pool
        self._frame_since: Optional[float] = None   # current frame's first bytes
        self._wait_since: Optional[float] = None    # a reader began waiting
        self._drain_since: Optional[float] = None   # a sender began waiting on the peer
        self._pending_at_sweep = 0    # write buffer size when last looked at
        self._charged = 0             # bytes counted against the server's max_memory
        self.peer: Any = None
        self.stream: Optional["FrameStream"] = None

    # -- asyncio callbacks ------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._closed_event = self._loop.create_future()
        peer = transport.get_extra_info("peername")
        self.peer = peer
        self.stream = FrameStream(self)
        if self._server is not None:
            self._since = self._loop.time()
            try:
                self._server._admit(self)
            except Exception:
                # A bug of ours must not orphan the socket: no task would
                # serve it and nothing would close it.
                transport.abort()  # type: ignore[attr-defined]
                raise

    def get_buffer(self, sizehint: int) -> Any:
        if self._lingering:
            return _SCRATCH
        return self._receiver.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        if self._lingering:
            self._lingered += nbytes
            if self._lingered > _LINGER_BYTES and self._transport is not None:
                self._transport.abort()
            return
        self._wrote = False           # a new step of the loop
        receiver = self._receiver
        if self._server is not None:
            before = receiver.ready
            ready = receiver.buffer_updated(nbytes)
            self._progress(ready > before)
            if self._server.max_memory is not None and self._server._charge(self):
                return                # shed: it no longer reads
        else:
            ready = receiver.buffer_updated(nbytes)
        if ready or receiver.failed:
            woke = False
            readers = self._readers
            if readers:
                self._readers = []
                for waiter in readers:
                    if not waiter.done():
                        waiter.set_result(None)
                        woke = True
            if receiver.failed and self._transport is not None:
                # Nothing after a bad header is a frame: stop reading.
                self._transport.pause_reading()
            elif (self._max_buffered is not None and not self._read_paused
                  and (unread := self._unread_after_wake(woke)) > self._max_buffered
                  and self._transport is not None):
                self._read_paused = True
                # Bytes to read before resuming can be due: _after_pop's
                # exact check is not worth making at every frame.
                self._owed = unread - self._max_buffered // 2
                self._transport.pause_reading()

    def eof_received(self) -> bool:
        self._eof = True
        over_tls = self._transport is not None and \
            self._transport.get_extra_info("sslcontext") is not None
        if self._lingering and self._transport is not None:
            self._transport.close()   # the peer is done too
        self._wake_readers()
        # Keep our side open (replies may still be going out); TLS cannot
        # half-close, and says so if asked to.
        return not over_tls

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        self._lost = True
        self._lost_exc = exc
        transport = self._transport
        if transport is not None and transport.get_extra_info("sslcontext") is not None:
            # Before 3.11, a TLS transport whose connection ended by itself is
            # still "unclosed" (a ResourceWarning when collected) until we
            # say so; close() after the end is harmless.
            try:
                if not transport.is_closing():
                    transport.close()
            except Exception:  # pragma: no cover - already torn down
                pass
        self._wake_readers()
        self._wake_drainers()
        if self._closed_event is not None and not self._closed_event.done():
            self._closed_event.set_result(None)
        if self._server is not None:
            self._server._forget(self)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        for waiter in self._drainers:
            if not waiter.done():
                waiter.set_result(None)
        self._drainers.clear()

    # -- reading ------------------------------------------------------------

    def _wake_readers(self) -> None:
        readers = self._readers
        if readers:
            self._readers = []
            for waiter in readers:
                if not waiter.done():
                    waiter.set_result(None)

    def _after_pop(self) -> None:
        # Called after frames left the buffer: resume a peer paused by max_buffered.
        # With no whole frame left, resume whatever is buffered: the reader
        # now waits for the frame arriving, which may be larger than
        # max_buffered (max_size bounds that), and paused it never would.
        receiver = self._receiver
        if not receiver.ready or self._unread() <= self._max_buffered // 2:  # type: ignore[operator]
            self._read_paused = False
            if self._server is not None:
                self._frame_since = self._loop.time() if self._receiver.in_frame else None
            if self._transport is not None and not self._lost:
                self._transport.resume_reading()

    def _waiter(self) -> asyncio.Future:
        """A future done at a frame, an error, EOF or the end of the
        connection; the reader awaits it, then calls _unwait() (a plain
        future, not a coroutine: one frame less at every wake-up)."""
        if self._eof or self._lost or self._closed_why is not None:
            self._raise_if_done()
        self._wrote = False           # what this task sends next is in a later step
        waiter = self._loop.create_future()
        self._readers.append(waiter)
        if self._server is not None and self._wait_since is None:
            self._wait_since = self._loop.time()
        return waiter

    def _unwait(self, waiter: asyncio.Future) -> None:
        """The await of a waiter raised (cancelled, most likely): forget it.
        (Woken normally, it has left _readers already: _wake_readers.)"""
        self._wait_since = None
        waiter.cancel()
        try:
            self._readers.remove(waiter)
        except ValueError:
            pass

    def _raise_if_done(self) -> None:
        """No frame is queued: raise if none can come any more."""
        if self._closed_why is not None:
            if self._closed_why == "closed":
                raise ValueError("I/O on a closed FrameStream: it was closed by close()")
            # Closed mid-frame (frame_timeout, shed while slow): the handler
            # gets what had arrived, as when the peer hangs up mid-frame.
            # (expected is None until the header is whole: 8 bytes were due.)
            receiver = self._receiver
            partial, expected = b"", None
            if receiver.in_frame:
                partial, expected = receiver.partial(), receiver.expected or 8
            raise ConnectionClosed(
                f"the server closed this connection: {self._closed_why}", partial, expected
            )
        if not (self._eof or self._lost):
            return
        receiver = self._receiver
        if self._lost_exc is not None:
            partial = receiver.partial()
            expected = receiver.expected
            raise ConnectionClosed(
                f"the connection was lost ({self._lost_exc})"
                + (f" after {len(partial)} bytes of a frame" if partial else ""),
                # Mid-header (or between frames) a header's 8 bytes were due,
                # as the blocking API reports it: not len(partial).
                partial, expected if expected is not None else 8,
            ) from self._lost_exc
        if receiver.in_frame:
            partial = receiver.partial()
            expected = receiver.expected
            if expected is None:
                raise ConnectionClosed(
                    f"peer closed the connection after {len(partial)} of the 8 header bytes",
                    partial, 8,
                )
            raise ConnectionClosed(
                f"peer closed the connection mid-frame: {len(partial)} of {expected} "
                "bytes (header included) arrived", partial, expected,
            )
        raise ConnectionClosed("peer closed the connection between frames", b"", None)

    # -- writing ------------------------------------------------------------

    def _check_writable(self) -> asyncio.Transport:
        transport = self._transport
        if self._closed_why == "closed":
            raise ValueError("I/O on a closed FrameStream: it was closed by close()")
        if self._lost or self._closed_why is not None or transport is None or transport.is_closing():
            why = self._closed_why or (f"lost ({self._lost_exc})" if self._lost_exc else "closed")
            raise ConnectionClosed(f"cannot send: the connection was closed: {why}", b"", None)
        return transport

    def _write(self, frame: bytes) -> None:
        """Queue one encoded frame (or batch): gathered with the other frames
        written in this step of the loop, then written in one call."""
        gathered = self._gathered
        if gathered is not None:
            gathered += frame
            if len(gathered) >= _GATHER_LIMIT:
                self._flush(again=True)
        elif not self._wrote or len(frame) >= _GATHER_LIMIT:
            # The first write since this connection last waited for input
            # goes out at once (no added latency for request/response) and
            # schedules nothing; the next ones are gathered until the end
            # of the step, unless large enough to go alone.  Order is kept:
            # nothing goes out directly while frames are gathered.
            self._transport.write(frame)  # type: ignore[union-attr]
            self._wrote = True
        else:
            self._gathered = bytearray(frame)
            self._loop.call_soon(self._flush)

    def _flush(self, again: bool = False) -> None:
        gathered = self._gathered
        if again:
            self._gathered = bytearray()
        else:
            self._gathered = None
            self._wrote = False
        if gathered and self._transport is not None and not self._transport.is_closing():
            # The bytearray is handed over, never touched again: a transport
            # may keep it (or a view of it) until it is sent.
            self._transport.write(gathered)

    async def _drain(self) -> None:
        if self._gathered:
            self._flush(again=True)
        if self._write_paused and not self._lost and self._drain_since is None:
            # A peer that does not read our replies leaves the handler
            # waiting as surely as one that sends nothing: idle_timeout's
            # business too.
            self._drain_since = self._loop.time()
        try:
            while self._write_paused and not self._lost and self._closed_why is None:
                waiter = self._loop.create_future()
                self._drainers.append(waiter)
                await waiter
        finally:
            self._drain_since = None
        if self._lost or self._closed_why is not None:
            self._check_writable()   # raises: the frame may not have gone out

    def _wake_drainers(self) -> None:
        drainers, self._drainers = self._drainers, []
        for waiter in drainers:
            if not waiter.done():
                waiter.set_result(None)

    # -- budgets (servers) ----------------------------------------------------

    def _unread_after_wake(self, woke: bool) -> int:
        """_unread(), less the one whole frame a woken reader is about to
        take: a frame as large as max_buffered, read as soon as it is whole,
        pauses nothing."""
        receiver = self._receiver
        ready = receiver.ready
        unread = receiver.buffered + _HEADER_SIZE * ready
        if woke and ready == 1:
            unread -= receiver.ready_bytes + _HEADER_SIZE
        return unread

    def _commitment(self) -> int:
        """Memory this connection's input holds, as max_memory counts it
        (Receiver.allocated): the receive buffer, whole frames not yet read
        with their bytes objects, and the frame in progress at its announced
        size, which a large frame's buffer takes as soon as its header is in."""
        return self._receiver.allocated

    def _unsent(self) -> int:
        """Bytes of the frame in progress announced and not received yet."""
        receiver = self._receiver
        expected = receiver.expected
        if expected is None:
            return 0
        return expected - (receiver.buffered - receiver.ready_bytes)

    def _unread(self) -> int:
        """Bytes received, not yet read, as max_buffered counts them: the
        receiver's count leaves out whole frames' headers, and a peer sending
        empty frames would otherwise queue millions of them for free."""
        receiver = self._receiver
        return receiver.buffered + _HEADER_SIZE * receiver.ready

    def _progress(self, completed: bool) -> None:
        now = self._loop.time()
        if completed:
            self._since = now
            # Reorder the server's pool at most every _TOUCH_EVERY seconds:
            # the sweep's oldest-first order is then right to that much.
            if now - self._touched >= _TOUCH_EVERY:
                self._touched = now
                self._server._touch(self)  # type: ignore[union-attr]
            self._frame_since = now if self._receiver.in_frame else None
        elif self._frame_since is None and self._receiver.in_frame:
            self._frame_since = now

    def _overdue(self, now: float, idle_timeout: Optional[float],
                 frame_timeout: Optional[float]) -> Optional[str]:
        """Why this connection should be closed now, or None."""
        if self._lingering or self._closed_why is not None:
            return None
        if self._drain_since is not None and self._transport is not None:
            # A peer reading slowly is reading: each sweep that finds the
            # write buffer shorter than the last restarts the clock.
            pending = self._transport.get_write_buffer_size()
            if pending < self._pending_at_sweep:
                self._drain_since = now
            self._pending_at_sweep = pending
        if (idle_timeout is not None and self._drain_since is not None
                and now - self._drain_since > idle_timeout):
            return f"did not read its replies for more than idle_timeout={idle_timeout:g} s"
        receiver = self._receiver
        if receiver.in_frame:
            if (frame_timeout is not None and not self._read_paused
                    and self._frame_since is not None and now - self._frame_since > frame_timeout):
                return f"a frame took more than frame_timeout={frame_timeout:g} s to arrive"
        elif idle_timeout is not None and self._wait_since is not None and not receiver.ready:
            if now - max(self._since, self._wait_since) > idle_timeout:
                return f"idle for more than idle_timeout={idle_timeout:g} s"
        return None

    def _sheddable(self) -> bool:
        """Closing already, idle (waited on, nothing arriving) or slow (in a
        frame, or not reading our replies): fair to shed."""
        return (self._closed_why is not None or self._receiver.in_frame or self._write_paused
                or (self._wait_since is not None and not self._receiver.ready))

    def _close(self, why: str, reply: Optional[bytes] = None) -> None:
        """Close from our side, telling a reader why; reply (a payload) first."""
        if self._closed_why is None:
            self._closed_why = why
        transport = self._transport
        if transport is None or self._lost:
            return
        if self._gathered:
            self._flush()
        self._gathered = None
        if reply is not None and not self._lingering and not transport.is_closing():
            # (Lingering, write_eof() has been sent: nothing more may go out.)
            transport.write(encode_frame(reply))
        self._linger()
        self._wake_readers()
        self._wake_drainers()

    def _linger(self) -> None:
        """Send FIN, read and drop what still comes for a moment, then close.

        Closing with unread input sends RST, which makes the peer's kernel
        drop what it had not read yet -- our last reply, say."""
        transport = self._transport
        if transport is None or self._lost or self._lingering:
            return
        self._lingering = True
        if self._eof:
            transport.close()   # the peer sent all it will: nothing to drain
            self._loop.call_later(LINGER_SECONDS, self._abort)
            return
        try:
            if transport.can_write_eof():
                transport.write_eof()
            transport.resume_reading()
        except (OSError, RuntimeError):
            transport.abort()
            return
        self._loop.call_later(LINGER_SECONDS, self._end_linger)

    def _abort_if_stuck(self) -> None:
        """After close(): abort unless the peer took bytes since the last look."""
        transport = self._transport
        if transport is None or self._lost:
            return
        pending = transport.get_write_buffer_size()
        if pending == 0 or pending >= self._pending_at_sweep:
            transport.abort()
        else:
            self._pending_at_sweep = pending
            self._loop.call_later(LINGER_SECONDS, self._abort_if_stuck)

    def _end_linger(self) -> None:
        if self._transport is not None and not self._lost:
            self._transport.close()
            # A peer that never reads our last bytes would keep it open.
            self._loop.call_later(LINGER_SECONDS, self._abort)

    def _abort(self) -> None:
        if self._transport is not None and not self._lost:
            self._transport.abort()


class FrameStream:
    """A framed connection for asyncio; from open_connection() or start_server().

    Reads: ``await read_bytes()``, ``read_string()``, ``read_object()``,
    ``read_many()``, ``async for frame in stream``.  Sends (coroutines that
    return at once unless the peer is behind and the write buffer is full):
    ``await send_bytes(data)``, ``send_string``, ``send_object``,
    ``send_many(iterable)``.  ``close()``, ``await wait_closed()``, ``async
    with``.  Not for use from other threads (as all asyncio objects).
    """

    __slots__ = ("_protocol", "_receiver", "__weakref__")

    def __init__(self, protocol: _Protocol) -> None:
        self._protocol = protocol
        self._receiver = protocol._receiver

    # -- reading --------------------------------------------------------------

    async def read_bytes(self) -> bytes:
        """read_bytes() -> bytes

        The next frame's payload, waiting for it.  Raises ConnectionClosed
        (``.partial``, ``.expected``) when the peer hangs up first (``expected``
        is None between frames), FrameError / FrameTooLarge at a bad header
        (before any of its payload is buffered).  Cancelling it loses nothing.
        """
        if self._protocol._closed_why == "closed":
            # As a closed Connection: even a frame already buffered is not read.
            self._protocol._raise_if_done()
        receiver = self._receiver
        frame = receiver.pop()
        if frame is None:
            protocol = self._protocol
            while frame is None:
                waiter = protocol._waiter()
                try:
                    await waiter
                except BaseException:
                    protocol._unwait(waiter)
                    raise
                protocol._wait_since = None
                frame = receiver.pop()
        protocol = self._protocol
        if protocol._read_paused:
            protocol._owed -= len(frame) + _HEADER_SIZE
            if protocol._owed <= 0 or not self._receiver.ready:
                protocol._after_pop()
        return frame

    async def read_many(self) -> List[bytes]:
        """read_many() -> list of bytes

        Every whole frame already received (at least one: waits for it), in
        order.  Raises as read_bytes() when none can come.
        """
        if self._protocol._closed_why == "closed":
            self._protocol._raise_if_done()   # ValueError, as read_bytes()
        frames = self._receiver.pop_all()
        if not frames:
            protocol = self._protocol
            while not frames:
                waiter = protocol._waiter()
                try:
                    await waiter
                except BaseException:
                    protocol._unwait(waiter)
                    raise
                protocol._wait_since = None
                frames = self._receiver.pop_all()
        if self._protocol._read_paused:
            self._protocol._after_pop()   # nothing whole is left: resumes
        return frames

    async def read_string(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        """read_string(encoding="utf-8", errors="strict") -> str"""
        return (await self.read_bytes()).decode(encoding, errors)

    async def read_object(self, *, codec: str = "json", trusted: bool = False,
                          max_depth: int = JSON_MAX_DEPTH,
                          pickle_limits: LimitsArg = None) -> Any:
        """read_object(*, codec="json", trusted=False, max_depth=100, pickle_limits=None)

        One frame, deserialised as tcpframe.read_object does: JSON (nested
        at most max_depth deep), or pickle rebuilding plain data only
        (UnsafePickle otherwise) within pickle_limits (PickleTooComplex
        otherwise) unless trusted=True.  A frame that is not valid JSON
        raises ValueError, a malformed pickle UnpicklingError; the frame was
        consumed, so the stream is still in sync.
        """
        pickle_limits = _check_arguments(codec, pickle_limits)
        return _decode(await self.read_bytes(), codec, trusted, max_depth, pickle_limits)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        if self._protocol._closed_why == "closed":
            self._protocol._raise_if_done()   # ValueError, as read_bytes()
        receiver = self._receiver
        frame = receiver.pop()
        if frame is None:
            try:
                protocol = self._protocol
                while frame is None:
                    waiter = protocol._waiter()
                    try:
                        await waiter
                    except BaseException:
                        protocol._unwait(waiter)
                        raise
                    protocol._wait_since = None
                    frame = receiver.pop()
            except ConnectionClosed as exc:
                if exc.expected is None:
                    raise StopAsyncIteration from None
                raise
        protocol = self._protocol
        if protocol._read_paused:
            protocol._owed -= len(frame) + _HEADER_SIZE
            if protocol._owed <= 0 or not self._receiver.ready:
                protocol._after_pop()
        return frame

    # -- sending --------------------------------------------------------------

    async def send_bytes(self, data: Any) -> None:
        """send_bytes(data)

        Send data (any bytes-like object) as one frame.  Returns at once
        while the write buffer is below its high-water mark, else once the
        peer has caught up.  Over MAX_SIZE raises FrameTooLarge before
        anything is sent.  The frame is whole in the stream even if this is
        cancelled while waiting.
        """
        protocol = self._protocol
        transport = protocol._transport
        if (protocol._lost or protocol._closed_why is not None or transport is None
                or transport.is_closing()):
            protocol._check_writable()   # raises
        if type(data) is bytes and len(data) >= _DIRECT_SEND:
            # Large: no copy into a frame; the header and payload go together.
            header = encode_header(len(data))
            if protocol._gathered:
                protocol._flush(again=True)
            # Two write()s, not writelines(): before 3.12 it joins (copies)
            # them, and 3.12's skips flow control (no pause_writing()).
            transport.write(header)  # type: ignore[union-attr]
            transport.write(data)  # type: ignore[union-attr]
        else:
            protocol._write(encode_frame(data))
        if protocol._write_paused or protocol._lost:
            await protocol._drain()

    async def send_many(self, frames: Iterable[Any]) -> int:
        """send_many(frames) -> int

        Send every payload of the iterable as its own frame, in one write.
        Returns how many.  A payload over MAX_SIZE raises FrameTooLarge
        before anything is sent.
        """
        protocol = self._protocol
        protocol._check_writable()
        frames = tuple(frames)
        large = [i for i, f in enumerate(frames) if type(f) is bytes and len(f) >= _DIRECT_SEND]
        if not large:
            batch = encode_frames(frames)
            if batch:
                protocol._write(batch)
        else:
            # Large bytes payloads go to the transport as they are (as in
            # send_bytes), not copied into the batch; the small ones between
            # them are encoded together.  Every size is checked first.
            batches = [encode_frames(frames[start:end]) for start, end
                       in zip([0] + [i + 1 for i in large], large + [len(frames)])]
            headers = [encode_header(len(frames[i])) for i in large]   # FrameTooLarge
            if protocol._gathered:
                protocol._flush(again=True)
            transport = protocol._transport
            for batch, i, header in zip(batches, large + [-1], headers + [b""]):
                if batch:
                    transport.write(batch)  # type: ignore[union-attr]
                if i >= 0:
                    transport.write(header)  # type: ignore[union-attr]
                    transport.write(frames[i])  # type: ignore[union-attr]
        if protocol._write_paused or protocol._lost:
            await protocol._drain()
        return len(frames)

    async def send_string(self, text: str, encoding: str = "utf-8") -> None:
        """send_string(text, encoding="utf-8")"""
        if not isinstance(text, str):
            raise TypeError(f"send_string() needs a str, not {type(text).__name__}")
        await self.send_bytes(text.encode(encoding))

    async def send_object(self, obj: Any, *, codec: str = "json") -> None:
        """send_object(obj, *, codec="json")

        Serialise obj and send it as one frame; TypeError (nothing sent) if
        it cannot be serialised with that codec.
        """
        await self.send_bytes(_encode(obj, codec))

    async def drain(self) -> None:
        """Wait until the write buffer is below its high-water mark."""
        await self._protocol._drain()

    # -- the connection ---------------------------------------------------------

    @property
    def peername(self) -> Any:
        """The peer's address, as the socket's getpeername() gave it."""
        return self._protocol.peer

    @property
    def sockname(self) -> Any:
        transport = self._protocol._transport
        return transport.get_extra_info("sockname") if transport is not None else None

    @property
    def transport(self) -> Optional[asyncio.Transport]:
        return self._protocol._transport

    @property
    def max_size(self) -> int:
        """The largest payload a read accepts."""
        return self._receiver.max_size

    @property
    def buffered(self) -> int:
        """Bytes received and not yet read: whole frames and the one arriving."""
        return self._receiver.buffered

    @property
    def frame_ready(self) -> bool:
        """True when a whole frame is buffered: the next read will not wait."""
        return self._receiver.ready > 0

    @property
    def closed(self) -> bool:
        protocol = self._protocol
        return protocol._lost or protocol._closed_why is not None

    def close(self) -> None:
        """Send what is buffered, then close.  Reads then raise ValueError."""
        protocol = self._protocol
        if protocol._closed_why is None:
            protocol._closed_why = "closed"
        transport = protocol._transport
        if protocol._gathered:
            protocol._flush()
        protocol._gathered = None
        if transport is not None and not protocol._lost:
            transport.close()
            # A peer that stops reading would keep the connection (and
            # wait_closed()) forever: give up once it stops taking bytes.
            protocol._pending_at_sweep = transport.get_write_buffer_size()
            protocol._loop.call_later(LINGER_SECONDS, protocol._abort_if_stuck)
        protocol._wake_readers()
        protocol._wake_drainers()

    async def wait_closed(self) -> None:
        """Wait until the connection is closed (close() first)."""
        if self._protocol._closed_event is not None:
            await asyncio.shield(self._protocol._closed_event)

    async def __aenter__(self) -> "FrameStream":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()
        await self.wait_closed()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<tcpframe.aio.FrameStream {state} peer={self.peername!r} buffered={self.buffered}>"


Handler = Callable[[FrameStream], Awaitable[None]]


async def open_connection(host: Optional[str] = None, port: Optional[int] = None, *,
                          max_size: int = MAX_SIZE, **kwargs: Any) -> FrameStream:
    """open_connection(host, port, *, max_size=MAX_SIZE, **kwargs) -> FrameStream

    Connect (kwargs go to loop.create_connection: ssl, local_addr, sock,
    happy_eyeballs_delay...) and return a FrameStream whose reads accept
    payloads up to max_size.
    """
    loop = asyncio.get_running_loop()
    # Made before connecting: a bad max_size raises here, where no socket
    # exists yet (create_connection leaks the connected one if the factory raises).
    protocol = _Protocol(max_size)
    await loop.create_connection(lambda: protocol, host, port, **kwargs)  # type: ignore[arg-type]
    assert protocol.stream is not None
    return protocol.stream


