"""The benchmark: tcpframe against every alternative and a plain-C reference.

``python -m tcpframe bench [--quick] [--plot FILE] [--json FILE]``

Every row is one process per side on loopback, started fresh; the rounds
interleave the implementations so that a noisy moment hits them all alike;
each figure is the median over rounds.  The C reference (c_reference.c,
compiled here) is the machine's physical line for the same framing without
read-ahead: one writev() per frame, recv() loops for header and payload.

A second section (aio_rows.py) runs tcpframe.aio against asyncio streams
with both ends on one event loop in one process: asyncio's, and uvloop's
when it is installed.
"""

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from importlib import resources
from typing import Dict, List, NamedTuple, Optional

KIB, MIB = 1 << 10, 1 << 20


class Workload(NamedTuple):
    mode: str      # rr | stream | rss
    size: int
    count: int     # full run
    quick: int     # --quick run

    @property
    def label(self) -> str:
        size = f"{self.size // MIB} MiB" if self.size >= MIB else (
            f"{self.size // KIB} KiB" if self.size >= KIB else f"{self.size} B")
        return {"rr": f"request/response {size}", "stream": f"stream of {size} frames",
                "rss": f"receive one {size} frame"}[self.mode]


WORKLOADS = [
    Workload("rr", 16, 4000, 200),
    Workload("rr", KIB, 4000, 200),
    Workload("rr", 64 * KIB, 1000, 50),
    Workload("rr", MIB, 200, 10),
    Workload("stream", 16, 400_000, 20_000),
    Workload("stream", KIB, 200_000, 10_000),
    Workload("stream", MIB, 400, 20),
    Workload("stream", 16 * MIB, 32, 3),
    Workload("rss", 64 * MIB, 1, 1),
]

# In the order of the table.  zmq runs when pyzmq is installed: round trips
# (REQ/REP) and streams (DEALER, whose I/O thread batches sends).  The
# natural loops -- send_bytes once per frame on a Connection, unbuffered and
# with a write buffer -- run the streams; the buffered one the round trips too
# (the unbuffered round trip is the "connection" row).
IMPLS = ["c", "tcpframe", "connection", "conn_loop", "conn_buffered", "sendall", "mpconn",
         "zmq", "lesson"]
DESCRIPTIONS = {
    "c": "plain C reference (writev per frame, recv loops)",
    "tcpframe": "tcpframe.send_bytes / read_bytes",
    "connection": "tcpframe.Connection (+ send_many)",
    "conn_loop": "Connection, send_bytes per frame",
    "conn_buffered": "Connection(write_buffer=65536), send_bytes",
    "sendall": "Python sock.sendall + recv_into loop",
    "mpconn": "multiprocessing.connection",
    "zmq": "pyzmq (REQ/REP; DEALER streams)",
    "lesson": "the lesson's hand-typed helpers",
}
# The lesson's helpers stall ~40-85 ms a round trip: a few make the point.
LESSON_RR_CAP = (20, 3)


def build_reference(workdir: str) -> str:
    """Compile the C reference; returns the executable's path."""
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(cc) is None:
        cc = "cc"
    source = resources.files("tcpframe.bench").joinpath("c_reference.c")
    exe = os.path.join(workdir, "c_reference")
    with resources.as_file(source) as path:
        subprocess.run([cc, "-O2", "-o", exe, str(path)], check=True)
    return exe


def have_zmq() -> bool:
    try:
        import zmq  # noqa: F401
    except ImportError:
        return False
    return True


def pinned(cpu: int):
    """A preexec_fn putting the child on one CPU.  Server and client get one
    each, for every implementation alike: on a small machine where the
    scheduler puts the two sides moves round-trip times by 2x from run to
    run, more than the differences being measured."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(cpus) < 2:
        return None
    target = {cpus[cpu]}
    return lambda: os.sched_setaffinity(0, target)


def run_pair(impl: str, w: Workload, count: int, reference: str) -> dict:
    if impl == "c":
        server_cmd = [reference, "server", w.mode]
        client_cmd = [reference, "client", w.mode]
    else:
        peers = [sys.executable, "-m", "tcpframe.bench.peers"]
        server_cmd = peers + ["server", impl, w.mode]
        client_cmd = peers + ["client", impl, w.mode]
    server = subprocess.Popen(server_cmd, stdout=subprocess.PIPE, text=True,
                              preexec_fn=pinned(0))
    try:
        port = server.stdout.readline().strip()
        if not port:
            raise RuntimeError(f"{impl} server for {w.label} did not start")
        client = subprocess.run(client_cmd + [port, str(w.size), str(count)],
                                capture_output=True, text=True, timeout=600,
                                preexec_fn=pinned(1))
        if client.returncode != 0:
            raise RuntimeError(f"{impl} client for {w.label} failed: {client.stderr.strip()}")
        server.wait(60)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        server.stdout.close()
    return json.loads(client.stdout)


def figure(w: Workload, result: dict, count: int) -> float:
    """The row's number: µs per round trip, frames/s, MB/s, or RSS ratio."""
    if w.mode == "rr":
        return result["median_us"]
    if w.mode == "stream":
        per_second = count / result["seconds"]
        return per_second if w.size < MIB else per_second * w.size / 1e6
    return result["rss_growth"] / w.size


def unit(w: Workload) -> str:
    return {"rr": "µs", "rss": "x size"}.get(w.mode) or ("frames/s" if w.size < MIB else "MB/s")


def applies(impl: str, w: Workload, zmq_ok: bool) -> bool:
    if impl == "zmq":
        return zmq_ok and w.mode in ("rr", "stream")
    if impl == "conn_loop":
        return w.mode == "stream"
    if impl == "conn_buffered":
        return w.mode in ("rr", "stream")
    return True


SECTIONS = ("sockets", "aio")


def run(quick: bool = False, rounds: Optional[int] = None, log=print,
        sections=SECTIONS) -> dict:
    """Every section by default; sections=("aio",) for the asyncio rows only
    (then the report's workloads are empty)."""
    rounds = rounds or (1 if quick else 5)
    zmq_ok = have_zmq()
    results: Dict[str, Dict[str, List[float]]] = {}
    started = time.monotonic()
    workloads = WORKLOADS if "sockets" in sections else []
    with tempfile.TemporaryDirectory() as workdir:
        reference = build_reference(workdir) if workloads else ""
        for w in workloads:
            count = w.quick if quick else w.count
            rows = results.setdefault(w.label, {})
            for r in range(rounds):
                for impl in IMPLS:
                    if not applies(impl, w, zmq_ok):
                        continue
                    n = count
                    if impl == "lesson" and w.mode == "rr":
                        n = min(count, LESSON_RR_CAP[1 if quick else 0])
                    value = figure(w, run_pair(impl, w, n, reference), n)
                    rows.setdefault(impl, []).append(value)
            log(f"  {w.label}: done ({time.monotonic() - started:.0f}s)")
    report = {
        "machine": machine(),
        "quick": quick,
        "rounds": rounds,
        "workloads": [
            {"label": w.label, "mode": w.mode, "size": w.size, "unit": unit(w),
             "medians": {impl: statistics.median(v) for impl, v in results[w.label].items()}}
            for w in workloads
        ],
    }
    if "aio" in sections:
        from . import aio_rows

        report["aio"] = aio_rows.run(quick=quick, rounds=rounds, log=log)
    return report


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        if names:
            cpu = f"{names[0]} x{len(names)}"
    except OSError:
        pass
    return f"{cpu}; {platform.system()} {platform.release()}; CPython {platform.python_version()}"


def ratio(value: float, ref: Optional[float]) -> str:
    """Against C: time ratio for round trips (lower is better), rate ratio
    for streams (higher is better)."""
    if not ref:
        return ""
    return f"{value / ref:.2f}x"


def versus_zmq(w: dict, impl: str) -> str:
    """A stream's rate against pyzmq's in the same run (higher is better)."""
    zmq = w["medians"].get("zmq")
    if w["mode"] != "stream" or not zmq or impl in ("c", "zmq"):
        return ""
    return f"{w['medians'][impl] / zmq:.2f}x zmq"


def table(report: dict) -> str:
    lines = [f"machine: {report['machine']}", ""]
    if report["workloads"]:
        lines[1:] = [f"one process per side: medians of {report['rounds']} interleaved "
                     "round(s), server and client each pinned to its own CPU;",
                     "x C = time ratio for round trips (lower is better), rate ratio for "
                     "streams (higher is better)", ""]
    for w in report["workloads"]:
        medians = w["medians"]
        ref = medians.get("c")
        lines.append(f"{w['label']} ({w['unit']})")
        for impl in IMPLS:
            if impl in medians:
                value = medians[impl]
                shown = f"{value:,.0f}" if value >= 1000 else f"{value:,.2f}"
                lines.append(f"  {DESCRIPTIONS[impl]:<50} {shown:>14}  {ratio(value, ref):>8}"
                             f"  {versus_zmq(w, impl)}".rstrip())
        lines.append("")
    if report.get("aio"):
        from . import aio_rows

        lines.append(aio_rows.table(report["aio"]))
    return "\n".join(lines)


def plot(report: dict, path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        raise SystemExit("--plot needs matplotlib: pip install 'tcpframe[bench]'") from None
    from . import aio_rows

    rows = [w for w in report["workloads"] if w["mode"] != "rss"]
    aio = report.get("aio", {}).get("workloads", [])
    panels = len(rows) + len(aio)
    fig, axes = plt.subplots(panels, 1, figsize=(9, 2.1 * panels), squeeze=False)
    axes = list(axes[:, 0])
    for ax, w in zip(axes[len(rows):], aio):
        # asyncio rows: times as fast as asyncio streams on the same loop.
        names, speed, colors = [], [], []
        for loop_name, medians in w["medians"].items():
            for impl in aio_rows.IMPLS:
                if impl in medians:
                    x = aio_rows.speedup(w["mode"], medians[impl], medians.get(aio_rows.BASELINE))
                    names.append(f"{loop_name}: {impl}")
                    speed.append(x or 0.0)
                    colors.append("#1f77b4" if impl.startswith("aio") else "#bbbbbb")
        ax.barh(names, speed, color=colors)
        ax.set_xscale("log")
        # Bars on a log axis start at its left edge: keep 1x well inside.
        shown = [x for x in speed if x > 0] or [1.0]
        ax.set_xlim(min(0.5, min(shown) / 1.5), max(2.0, max(shown) * 1.5))
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x:g}x"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.set_title(f"asyncio, one loop: {w['label']}: speed relative to asyncio streams "
                     "(higher is better)", fontsize=9)
        ax.invert_yaxis()
        ax.tick_params(labelsize=8)
    for ax, w in zip(axes, rows):
        medians = w["medians"]
        ref = medians["c"]
        names = [i for i in IMPLS if i in medians]
        # Everything as "times C's speed": higher is better in every panel.
        speed = [(ref / medians[i]) if w["mode"] == "rr" else (medians[i] / ref) for i in names]
        colors = ["#555555" if i == "c" else "#1f77b4" if i in (
            "tcpframe", "connection", "conn_loop", "conn_buffered") else "#bbbbbb" for i in names]
        ax.barh(names, speed, color=colors)
        ax.set_xscale("log")
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.set_title(f"{w['label']}: speed relative to C (higher is better)", fontsize=9)
        ax.invert_yaxis()
        ax.tick_params(labelsize=8)
    fig.suptitle(f"tcpframe benchmark — {report['machine']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: Optional[List[str]] = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tcpframe bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small counts, one round (~30 s)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 5, quick 1)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--plot", metavar="FILE", help="also draw a PNG chart (needs matplotlib)")
    parser.add_argument("--only", choices=SECTIONS,
                        help="one section: sockets (one process per side) or aio (asyncio rows)")
    args = parser.parse_args(argv)
    sections = (args.only,) if args.only else SECTIONS
    return report_main(args.quick, args.rounds, args.json, args.plot, sections=sections)


def report_main(quick: bool, rounds: Optional[int], json_path: Optional[str],
                plot_path: Optional[str], sections=SECTIONS) -> int:
    print(f"running {'quick ' if quick else ''}benchmark (loopback)...", flush=True)
    report = run(quick=quick, rounds=rounds, log=lambda m: print(m, flush=True),
                 sections=sections)
    print()
    print(table(report))
    if json_path:
        with open(json_path, "w") as f:
            json.dump(report, f, indent=1)
    if plot_path:
        plot(report, plot_path)
        print(f"chart written to {plot_path}")
    return 0
