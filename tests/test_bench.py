"""`python -m tcpframe bench --quick` runs every row (no timing asserted)."""
import json
import os
import subprocess
import sys

from tcpframe import bench
from tcpframe.bench import aio_rows


def check_aio_section(section):
    """Every asyncio row that applies ran, on every loop installed, and gave
    a positive figure; the ratios are computable."""
    assert section["loops"] == ["asyncio"] + (["uvloop"] if aio_rows.have_uvloop() else [])
    assert [w["label"] for w in section["workloads"]] == [w.label for w in aio_rows.WORKLOADS]
    for w, spec in zip(section["workloads"], aio_rows.WORKLOADS):
        assert w["unit"] == aio_rows.unit(spec)
        assert list(w["medians"]) == section["loops"], w["label"]
        for loop_name, medians in w["medians"].items():
            expected = {i for i in aio_rows.IMPLS if aio_rows.applies(i, spec)}
            assert set(medians) == expected, (w["label"], loop_name)
            assert aio_rows.BASELINE in medians
            for impl, value in medians.items():
                assert value > 0, (w["label"], loop_name, impl)
                assert aio_rows.versus(value, medians[aio_rows.BASELINE]) > 0
                assert aio_rows.speedup(w["mode"], value, medians[aio_rows.BASELINE]) > 0


def test_quick_bench_runs_every_row(tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, "-m", "tcpframe", "bench", "--quick", "--json", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    zmq = bench.have_zmq()
    assert [w["label"] for w in report["workloads"]] == [w.label for w in bench.WORKLOADS]
    for w, spec in zip(report["workloads"], bench.WORKLOADS):
        expected = {i for i in bench.IMPLS if bench.applies(i, spec, zmq)}
        assert set(w["medians"]) == expected, w["label"]
        if w["mode"] == "rss" and os.environ.get("TCPFRAME_EXPECT_SANITIZED") == "1":
            # ASan's allocator maps and quarantines memory its own way: the
            # RSS growth it shows for one frame means nothing (may be 0).
            assert all(v >= 0 for v in w["medians"].values()), w
        else:
            assert all(v > 0 for v in w["medians"].values()), w
    check_aio_section(report["aio"])
    assert "plain C reference" in result.stdout
    assert "machine:" in result.stdout
    assert "asyncio (both ends on one loop, one process)" in result.stdout


def test_quick_asyncio_rows_alone(tmp_path):
    """The asyncio section on its own: each row a fresh process, both ends on
    one loop; quick mode takes a few seconds."""
    out = tmp_path / "aio.json"
    result = subprocess.run(
        [sys.executable, "-m", "tcpframe.bench.aio_rows", "--quick", "--json", str(out)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "RuntimeWarning" not in result.stderr
    section = json.loads(out.read_text())
    assert section["rounds"] == 1
    check_aio_section(section)
    for impl in ("streams", "aio", "aio_many"):
        assert aio_rows.DESCRIPTIONS[impl] in result.stdout
    if aio_rows.have_uvloop():
        assert "uvloop" in result.stdout


def test_asyncio_row_child_counts_every_frame():
    """One measurement, as the driver runs it: the receiver counted every
    frame (the child raises otherwise) and the figure is positive."""
    for impl in ("streams", "aio", "aio_many"):
        result = aio_rows.run_one("asyncio", impl, aio_rows.Workload("stream", 100, 0, 0), 257)
        assert result["seconds"] > 0, impl
    result = aio_rows.run_one("asyncio", "aio", aio_rows.Workload("rr", 16, 0, 0), 5)
    assert result["median_us"] > 0
