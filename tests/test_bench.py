"""`python -m tcpframe bench --quick` runs every row (no timing asserted)."""
import json
import subprocess
import sys

from tcpframe import bench


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
        assert all(v > 0 for v in w["medians"].values()), w
    assert "plain C reference" in result.stdout
    assert "machine:" in result.stdout
