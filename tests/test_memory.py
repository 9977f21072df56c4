"""Memory follows the bytes received, not the length announced."""
import subprocess
import sys
import textwrap

import pytest

import tcpframe

# Run in a fresh interpreter so that its peak RSS says only what this does.
PROBE = textwrap.dedent(
    """
    import resource, socket, threading, tcpframe

    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    listener.close()
    chunk = bytes(1 << 20)

    def peer(announce, chunks):
        tcpframe.send_all(client, tcpframe.encode_header(announce))
        for _ in range(chunks):
            tcpframe.send_all(client, chunk)
        tcpframe.send_all(client, b"x" * 10)
        client.close()

    def peak_kib():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    announce, chunks, buffered = {args}
    reader = tcpframe.Connection(server) if buffered else server
    t = threading.Thread(target=peer, args=(announce, chunks))
    before = peak_kib()
    t.start()
    try:
        got = tcpframe.read_bytes(reader)
        outcome = len(got)
    except tcpframe.ConnectionClosed as exc:
        outcome = len(exc.partial)
    t.join()
    print(outcome, peak_kib() - before)
    """
)


def probe(announce, chunks, buffered=False):
    out = subprocess.run(
        [sys.executable, "-c", PROBE.replace("{args}", f"{announce}, {chunks}, {buffered}")],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout.split()
    return int(out[0]), int(out[1]) * 1024


@pytest.mark.parametrize("buffered", [False, True], ids=["functions", "Connection"])
def test_huge_announcement_with_little_data_costs_little(buffered):
    received, growth = probe(99_999_999, 0, buffered)
    assert received == 8 + 10
    assert growth < 4 << 20, f"peak RSS grew {growth >> 20} MiB for 18 bytes"


@pytest.mark.parametrize("buffered", [False, True], ids=["functions", "Connection"])
def test_sixty_four_mib_frame_needs_no_extra_copy(buffered):
    size = (64 << 20) + 10
    received, growth = probe(size, 64, buffered)
    assert received == size
    # A second full copy would make this 128 MiB or more.
    assert growth < 1.5 * size, f"peak RSS grew {growth / size:.2f}x the frame"



@pytest.mark.parametrize("how", ["read_bytes", "receive_all", "Connection.read_bytes",
                                 "Connection.receive_all"])
def test_allocation_follows_what_arrives(how):
    """Peak *allocated* memory, not RSS: an allocation of the announced size
    would cost no RSS until touched, but tracemalloc sees it."""
    import tracemalloc

    from conftest import make_pair

    client, server = make_pair()
    reader = tcpframe.Connection(server) if how.startswith("Connection") else server
    announce = b"99999999" if how.endswith("read_bytes") else b""
    client.sendall(announce + b"x" * 10)
    client.close()
    tracemalloc.start()
    try:
        with pytest.raises(tcpframe.ConnectionClosed) as info:
            if how.endswith("read_bytes"):
                tcpframe.read_bytes(reader)
            else:
                tcpframe.receive_all(reader, 99_999_999)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        reader.close()
    assert len(info.value.partial) == len(announce) + 10
    assert peak < 4 << 20, f"{peak >> 20} MiB allocated for {len(announce) + 10} bytes"
