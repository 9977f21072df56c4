"""Build and run the plain-C core's own unit tests (no Python.h involved)."""
import pathlib
import shutil
import subprocess
import sysconfig

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
CSRC = ROOT / "csrc"


def test_core_builds_without_python_and_passes(tmp_path):
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(cc) is None:
        pytest.skip(f"no C compiler {cc!r}")
    exe = tmp_path / "test_core"
    # No Python include directory on the command line: the core must not need it.
    subprocess.run(
        [cc, "-std=c11", "-D_GNU_SOURCE", "-Wall", "-Wextra", "-Werror", "-O1",
         "-I", str(CSRC), str(ROOT / "tests" / "c" / "test_core.c"),
         str(CSRC / "frame_header.c"), str(CSRC / "frame_io.c"), str(CSRC / "frame_decoder.c"),
         str(CSRC / "frame_outbuf.c"),
         "-pthread", "-o", str(exe)],
        check=True, capture_output=True, text=True, timeout=120,
    )
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().endswith("passed, 0 failed")
