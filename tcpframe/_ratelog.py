"""Logging that a flood cannot turn into a flood of lines.

A server logs what each bad client did; a thousand bad clients a second
would write a thousand lines a second (and a slow stderr would stall the
server).  RateLimitedLog lets through `burst` messages of each kind per
`period` seconds, then counts the rest and says how many it held back.
"""

import logging
import threading
import time
from typing import Any, Callable, Dict, List

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
