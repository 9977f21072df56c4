"""What grading a student's server needs besides pytest: hostile peers,
ports no one races for, and the server as a process that can be watched
(its output as it comes, its CPU time, the ports it listens on) and
always stopped.  tcpframe.testing re-exports the public names; the grader
(tcpframe.grading) and the class grader (tcpframe.classroom) use it
without importing pytest.
"""

import os
import random
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple

from ._tcpframe import encode_frame

Address = Tuple[str, int]

# ---------------------------------------------------------------- peers


def connect(address: Address, timeout: float = 5.0, rcvbuf: Optional[int] = None) -> socket.socket:
    """A client socket to address, with a timeout (and a small receive buffer if asked)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(timeout)
        sock.connect(address)
    except BaseException:
        sock.close()
        raise
    return sock


def _check_socket(sock: Any, caller: str) -> None:
    # Said here, not as an AttributeError from deep inside.
    if not isinstance(sock, socket.socket):
        raise TypeError(f"{caller}() needs a connected socket.socket as its first argument, "
                        f"not {type(sock).__name__}")


def _check_bytes(data: Any, caller: str, what: str = "data") -> None:
    try:
        memoryview(data)
    except TypeError:
        hint = " (encode text first: text.encode())" if isinstance(data, str) else ""
        raise TypeError(f"{caller}() needs {what} as bytes (or another bytes-like object), "
                        f"not {type(data).__name__}{hint}") from None


def trickle(sock: socket.socket, data: bytes, chunk: int = 1, delay: float = 0.01) -> None:
    """Send data `chunk` bytes at a time, pausing `delay` s between pieces,
    with TCP_NODELAY so each piece really leaves alone."""
    _check_socket(sock, "trickle")
    _check_bytes(data, "trickle")
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for i in range(0, len(data), chunk):
        sock.sendall(data[i : i + chunk])
        if i + chunk < len(data):
            time.sleep(delay)


def coalesce(sock: socket.socket, frames: Iterable[bytes]) -> None:
    """Send several payloads, each framed, in one send: they arrive together."""
    _check_socket(sock, "coalesce")
    sock.sendall(b"".join(encode_frame(f) for f in frames))


def half_close(sock: socket.socket) -> None:
    """Shut down our sending side: the peer reads EOF but may still reply."""
    _check_socket(sock, "half_close")
    sock.shutdown(socket.SHUT_WR)


def reset(sock: socket.socket) -> None:
    """Close with RST instead of FIN (SO_LINGER 0): an abrupt disconnect."""
    _check_socket(sock, "reset")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def slow_reader(sock: socket.socket, n: int, chunk: int = 1, delay: float = 0.01) -> bytes:
    """Read n bytes, `chunk` at a time with pauses: a peer whose window is
    nearly always full.  Returns what was read (less if the peer closed)."""
    _check_socket(sock, "slow_reader")
    got = bytearray()
    while len(got) < n:
        piece = sock.recv(min(chunk, n - len(got)))
        if not piece:
            break
        got += piece
        time.sleep(delay)
    return bytes(got)


# ------------------------------------------------------------- free ports

_handed_out: Set[int] = set()
_ports_lock = threading.Lock()


def _ephemeral_range() -> Tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(x) for x in f.read().split())
            return low, high
    except (OSError, ValueError):
        return 32768, 60999


def pick_free_port(host: str = "127.0.0.1") -> int:
    """A port free now and safe to bind later.

    The usual trick -- bind port 0, read the port, close -- races: the kernel
    may hand that port to the next port-0 bind or outgoing connection before
    the server binds it.  Ports outside the kernel's ephemeral range are
    never handed out that way, so picking one there (checked free by binding
    it, and never given twice by this process) leaves no one to race with.
    """
    low, high = _ephemeral_range()
    candidates = [p for p in range(20000, 32768) if not low <= p <= high] or list(range(1024, low))
    rng = random.Random(os.getpid() ^ time.monotonic_ns())
    for _ in range(200):
        port = rng.choice(candidates)
        with _ports_lock:
            if port in _handed_out:
                continue
        with socket.socket() as probe:
            try:
                probe.bind((host, port))
            except OSError:
                continue
        with _ports_lock:
            _handed_out.add(port)
        return port
    raise RuntimeError("no free port found outside the ephemeral range")


# ------------------------------------------------- what /proc says (Linux)


def _listen_table() -> Optional[Dict[int, int]]:
    """{socket inode: port} of every TCP socket in LISTEN state, from
    /proc/net/tcp*; None where /proc cannot tell."""
    table: Dict[int, int] = {}
    seen = False
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        seen = True
        for row in rows:
            fields = row.split()
            if fields[3] == "0A":
                table[int(fields[9])] = int(fields[1].rsplit(":", 1)[1], 16)
    return table if seen else None


def _listening(address: Address) -> Optional[bool]:
    """Is a socket in LISTEN state on this port?  Read from /proc/net/tcp*
    (Linux), so that asking costs the server nothing -- connecting to find
    out would use up the accept() of a server that takes one client.
    None where /proc cannot tell."""
    table = _listen_table()
    return None if table is None else address[1] in table.values()


def _accepting(address: Address) -> bool:
    try:
        with socket.create_connection(address, timeout=0.5):
            return True
    except OSError:
        return False


def _serving(address: Address) -> bool:
    listening = _listening(address)
    return _accepting(address) if listening is None else listening


def _socket_inodes(pid: int) -> Set[int]:
    inodes: Set[int] = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return inodes
    for fd in fds:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(int(link[8:-1]))
    return inodes


def _stat_fields(pid: int) -> Optional[List[str]]:
    """/proc/PID/stat after the command name: fields 3 (state) onwards."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _group_pids(pgid: int) -> List[int]:
    pids: List[int] = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return pids
    for entry in entries:
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields is not None and int(fields[2]) == pgid:
                pids.append(int(entry))
    return pids


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pids: Iterable[int]) -> Optional[float]:
    """User + system CPU time of these processes (all their threads), from
    /proc; None where /proc cannot tell."""
    total = 0
    seen = False
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            seen = True
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / _TICK if seen else None


def pid_listening_on(port: int) -> Optional[int]:
    """The process that listens on this TCP port, if /proc shows one this
    user may look at."""
    table = _listen_table()
    if not table:
        return None
    inodes = {inode for inode, p in table.items() if p == port}
    if not inodes:
        return None
    try:
        entries = os.listdir("/proc")
    except OSError:
        return None
    for entry in entries:
        if entry.isdigit() and _socket_inodes(int(entry)) & inodes:
            return int(entry)
    return None


# ------------------------------------------------------------ the process


class _Output:
    """A pipe read as it is written, so that a server that prints a lot
    never blocks on a full pipe, and its latest output can be searched.
    Keeps at most the last LIMIT bytes; offsets count everything written."""

    LIMIT = 1 << 20

    def __init__(self, pipe) -> None:
        self._buf = bytearray()
        self._dropped = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._pump, args=(pipe,), daemon=True)
        self._thread.start()

    def _pump(self, pipe) -> None:
        with pipe:
            for chunk in iter(lambda: pipe.read1(65536), b""):
                with self._lock:
                    self._buf += chunk
                    if len(self._buf) > self.LIMIT:
                        cut = len(self._buf) - self.LIMIT // 2
                        del self._buf[:cut]
                        self._dropped += cut

    def mark(self) -> int:
        with self._lock:
            return self._dropped + len(self._buf)

    def since(self, mark: int) -> str:
        with self._lock:
            return self._buf[max(0, mark - self._dropped):].decode("utf-8", "replace")

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)


class NotReady(Exception):
    """The server never started listening on its port: ``mistake`` names
    why (not-running, wrong-port, not-listening), the text says what was seen."""

    def __init__(self, mistake: str, evidence: str) -> None:
        super().__init__(evidence)
        self.mistake = mistake
        self.evidence = evidence


def last_lines(text: str, n: int = 6) -> str:
    return "\n".join(text.strip().splitlines()[-n:])


class ServerProcess:
    """A student's server as a subprocess: a script path, or ["-m", "module"].

    It runs in its own session, so stop() reaches every process it started
    (a server that forks per client); its stdout and stderr are collected as
    they come (``stdout``, ``stderr``, ``output_mark()``/``stdout_since()``);
    ``cpu_seconds()`` is the CPU time of the whole group so far."""

    def __init__(self, command: Sequence[str], address: Address, *,
                 cwd: Optional[str] = None, env: Optional[Dict[str, str]] = None) -> None:
        self.address = address
        self.command = list(command)
        self.proc = subprocess.Popen(
            [sys.executable, "-u", *self.command], cwd=cwd, env=env,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self._out = _Output(self.proc.stdout)
        self._err = _Output(self.proc.stderr)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def stdout(self) -> str:
        return self._out.since(0)

    @property
    def stderr(self) -> str:
        return self._err.since(0)

    def output_mark(self) -> Tuple[int, int]:
        return self._out.mark(), self._err.mark()

    def stdout_since(self, mark: Tuple[int, int]) -> str:
        return self._out.since(mark[0])

    def stderr_since(self, mark: Tuple[int, int]) -> str:
        return self._err.since(mark[1])

    def alive(self) -> bool:
        return self.proc.poll() is None

    def pids(self) -> List[int]:
        return _group_pids(self.proc.pid) or [self.proc.pid]

    def cpu_seconds(self) -> Optional[float]:
        return cpu_seconds(self.pids())

    def listening_ports(self) -> Optional[Set[int]]:
        table = _listen_table()
        if table is None:
            return None
        inodes: Set[int] = set()
        for pid in self.pids():
            inodes |= _socket_inodes(pid)
        return {port for inode, port in table.items() if inode in inodes}

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Return once the server listens on its port; raise NotReady at
        once if it exits or listens on another port, else after timeout."""
        host, port = self.address
        deadline = time.monotonic() + timeout
        elsewhere_since = None
        while True:
            if _serving(self.address):
                return
            if not self.alive():
                self._err.join(1.0)
                tail = last_lines(self.stderr)
                raise NotReady("not-running", f"the server exited with status "
                               f"{self.proc.returncode} before listening on port {port}"
                               + (f"; its last words:\n{tail}" if tail else
                                  " and printed no error"))
            ports = self.listening_ports()
            if ports:
                elsewhere_since = elsewhere_since or time.monotonic()
                if time.monotonic() - elsewhere_since > 0.5:
                    raise NotReady("wrong-port", f"the server listens on port "
                                   f"{', '.join(map(str, sorted(ports)))}, not on {port}, "
                                   "the port given as its first argument")
            if time.monotonic() > deadline:
                raise NotReady("not-listening", f"the server ran for {timeout:g} s and never "
                               f"listened on {host}:{port}")
            time.sleep(0.05)

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def stop(self, timeout: float) -> List[str]:
        """Ctrl-C it; returns the problems seen (empty when all was well).

        Exiting on its own with status 0 is fine (a server may be meant to
        end); a non-zero status before Ctrl-C is a crash; after Ctrl-C any
        exit is fine (an unhandled KeyboardInterrupt exits with status 1).
        Whatever is left of its process group afterwards is killed."""
        problems = []
        if not self.alive():
            if self.proc.returncode != 0:
                problems.append(f"the server crashed: it exited with status {self.proc.returncode}")
        else:
            self.proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                problems.append(f"the server did not stop within {timeout:g} s of Ctrl-C (SIGINT)")
        self.kill()
        return problems

    def kill(self) -> None:
        """SIGKILL to the whole group; collect the process and its output."""
        # Only while the group has members: then its id cannot have been
        # reused by someone else's process.
        if self.alive() or _group_pids(self.proc.pid):
            self._signal_group(signal.SIGKILL)
        if self.alive():
            self.proc.kill()
        self.proc.wait()
        self._out.join(2.0)
        self._err.join(2.0)


def wait_accepting(address: Address, timeout: float, alive: Callable[[], bool]) -> None:
    """Wait until something listens on address (a server in a thread)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _serving(address):
            return
        if not alive():
            return  # the caller reports the crash
        time.sleep(0.05)
    raise TimeoutError(
        f"the server never accepted a connection on {address[0]}:{address[1]} within "
        f"{timeout:.0f} s: does it bind that port and call listen()?"
    )
