"""The package as a whole: exports, signatures, stubs, multi-phase init."""
import ast
import importlib.util
import inspect
import pathlib
import os
import pickle
import socket
import subprocess
import sys

import pytest

import tcpframe
from tcpframe import _tcpframe

PACKAGE = pathlib.Path(tcpframe.__file__).parent
FUNCTIONS = [
    "send_all", "receive_all", "receive_into", "send_bytes", "read_bytes",
    "send_string", "read_string", "encode_header", "decode_header", "encode_frame",
    "encode_frames",
]


def test_all_is_complete_and_real():
    for name in tcpframe.__all__:
        assert hasattr(tcpframe, name), name
    public = {
        n for n in dir(tcpframe)
        if not n.startswith("_") and not inspect.ismodule(getattr(tcpframe, n))
    }
    assert public == set(tcpframe.__all__)


def test_version():
    assert tcpframe.__version__.count(".") == 2


@pytest.mark.parametrize("name", FUNCTIONS)
def test_help_shows_real_signatures(name):
    func = getattr(tcpframe, name)
    sig = inspect.signature(func)
    assert list(sig.parameters)[0] in ("sock", "n", "header", "data", "frames")
    assert func.__doc__ and len(func.__doc__.splitlines()) >= 1


def test_signature_details():
    sig = inspect.signature(tcpframe.read_string)
    assert str(sig) == "(sock, /, *, max_size=99999999, encoding='utf-8')"
    assert str(inspect.signature(tcpframe.send_string)) == "(sock, text, /, encoding='utf-8')"


def test_stubs_match_the_extension():
    stub = ast.parse((PACKAGE / "_tcpframe.pyi").read_text())
    stubbed = {
        node.name for node in stub.body
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_")
    }
    classes = {"Connection", "Decoder", "Receiver", "ReceiveWindow"}
    assert stubbed == set(FUNCTIONS) | classes
    public = {n for n in dir(_tcpframe) if not n.startswith("_")}
    assert public == set(FUNCTIONS) | {"HEADER_SIZE", "MAX_SIZE"} | classes
    for cls in ("Connection", "Decoder", "Receiver"):
        node = next(n for n in stub.body if isinstance(n, ast.ClassDef) and n.name == cls)
        stub_members = {m.name for m in node.body if isinstance(m, ast.FunctionDef)}
        runtime = {m for m in dir(getattr(_tcpframe, cls)) if not m.startswith("_")}
        assert runtime <= stub_members, runtime - stub_members
    assert (PACKAGE / "py.typed").exists()


def test_stub_signatures_match_runtime():
    stub = ast.parse((PACKAGE / "_tcpframe.pyi").read_text())
    for node in stub.body:
        if isinstance(node, ast.FunctionDef):
            runtime = inspect.signature(getattr(_tcpframe, node.name))
            names = [a.arg for a in node.args.posonlyargs + node.args.args + node.args.kwonlyargs]
            assert names == list(runtime.parameters), node.name


def test_fresh_module_instance_from_multi_phase_init(tcp_pair):
    spec = importlib.util.find_spec("tcpframe._tcpframe")
    other = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(other)
    assert other is not _tcpframe
    client, server = tcp_pair
    other.send_string(client, "from a second instance")
    assert _tcpframe.read_string(server) == "from a second instance"
    with pytest.raises(tcpframe.FrameError):
        other.decode_header(b"nope!!!!")


def test_errors_pickle_with_their_fields():
    for err in [
        tcpframe.ConnectionClosed("closed", b"ab", 10),
        tcpframe.TransferTimeout("late", b"", None, 8),
        tcpframe.TransferTimeout("late", None, 5, 8),
    ]:
        copy = pickle.loads(pickle.dumps(err))
        assert type(copy) is type(err) and str(copy) == str(err)
        assert copy.__reduce__() == err.__reduce__()


def test_timeout_is_the_socket_timeout():
    assert issubclass(tcpframe.TransferTimeout, socket.timeout)
    if sys.version_info >= (3, 10):
        assert issubclass(tcpframe.TransferTimeout, TimeoutError)


def test_no_reference_leaks_on_success_and_error_paths(tcp_pair):
    import gc
    import tracemalloc

    client, server = tcp_pair

    def cycle():
        tcpframe.send_bytes(client, b"x" * 100)
        tcpframe.read_bytes(server)
        client.sendall(b"+0000001")
        with pytest.raises(tcpframe.FrameError):
            tcpframe.read_bytes(server)
        with pytest.raises(tcpframe.FrameTooLarge):
            tcpframe.encode_header(10**9)

    for _ in range(200):
        cycle()
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for _ in range(3000):
        cycle()
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
    assert grown < 64 * 1024, f"{grown} bytes kept after 3000 cycles"


def test_source_tree_without_extension_says_what_to_do(tmp_path):
    pkg = tmp_path / "tcpframe"
    pkg.mkdir()
    for name in ["__init__.py", "errors.py"]:
        (pkg / name).write_text((PACKAGE / name).read_text())
    run = subprocess.run(
        [sys.executable, "-S", "-c", "import tcpframe"], cwd=tmp_path,
        capture_output=True, text=True, timeout=60,
    )
    assert run.returncode != 0
    assert "pip install -e ." in run.stderr


@pytest.mark.skipif(os.environ.get("TCPFRAME_EXPECT_SANITIZED") != "1",
                    reason="only in CI's sanitizer run")
def test_the_sanitized_build_is_the_one_loaded():
    with open("/proc/self/maps") as f:
        assert "libasan" in f.read()
    with open(_tcpframe.__file__, "rb") as f:
        assert b"__asan_report" in f.read()
