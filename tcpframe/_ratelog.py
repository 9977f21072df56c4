"""Logging that a flood cannot turn into a flood of lines.

A server logs what each bad client did; a thousand bad clients a second
would write a thousand lines a second (and a slow stderr would stall the
server).  RateLimitedLog lets through `burst` messages of each kind per
`period` seconds, then counts the rest and says how many it held back.
"""

import logging
import socket
import threading
import time
from typing import Any, Callable, Dict, List, Tuple

from .errors import ConnectionClosed, FrameError

__all__ = ["RateLimitedLog"]


class RateLimitedLog:
    """RateLimitedLog(logger, *, burst=10, period=10.0)

    ``log(level, kind, msg, *args, exc_info=False)``: as logger.log, at most
    `burst` times per `kind` in a `period`; past that the messages are
    counted, and the next one of that kind after the period says
    "... N more like it were not logged".  Thread-safe.
    """

    def __init__(self, logger: logging.Logger, *, burst: int = 10, period: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.burst = burst
        self.period = period
        self._clock = clock
        self._lock = threading.Lock()
        # kind -> [window start, logged in window, held back in window]
        self._windows: Dict[str, List[Any]] = {}

    def log(self, level: int, kind: str, msg: str, *args: Any, exc_info: Any = False) -> None:
        if not self.logger.isEnabledFor(level):
            return
        now = self._clock()
        with self._lock:
            window = self._windows.get(kind)
            held = 0
            if window is None or now - window[0] >= self.period:
                if window is not None:
                    held = window[2]
                window = self._windows[kind] = [now, 0, 0]
            if window[1] >= self.burst:
                window[2] += 1
                return
            window[1] += 1
        if held:
            self.logger.log(level, "%d more '%s' messages were not logged in %.0f s",
                            held, kind, self.period)
        self.logger.log(level, msg, *args, exc_info=exc_info)

    def held_back(self) -> int:
        """How many messages are counted but not logged yet (all kinds)."""
        with self._lock:
            return sum(window[2] for window in self._windows.values())

    def client_error(self, peer: Any, exc: BaseException,
                     timeouts: Tuple[type, ...] = (socket.timeout,)) -> None:
        """Log what a client did to its handler, one kind per line of logging:
        hung up mid-message, a bad frame, too slow (any of ``timeouts``),
        another connection error.  A clean hang-up is at DEBUG."""
        if isinstance(exc, ConnectionClosed):
            if exc.expected is None:
                self.logger.debug("%s closed: %s", peer, exc)
            else:
                self.log(logging.INFO, "disconnected mid-message",
                         "%s disconnected mid-message: %s", peer, exc)
        elif isinstance(exc, FrameError):
            self.log(logging.WARNING, "bad frame", "%s sent a bad frame, closing it: %s", peer, exc)
        elif isinstance(exc, timeouts):
            self.log(logging.INFO, "too slow", "%s too slow, closing it: %s", peer, exc)
        else:
            self.log(logging.INFO, "connection error", "%s connection error: %s", peer, exc)
