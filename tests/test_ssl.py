"""Objects that are not a plain socket.socket go through their own methods:
TLS is never bypassed."""
import socket
import ssl
import threading

import pytest

import tcpframe
from conftest import make_pair

trustme = pytest.importorskip("trustme")


@pytest.fixture(scope="module")
def tls_contexts():
    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    return server_ctx, client_ctx


@pytest.fixture
def tls_pair(tls_contexts):
    server_ctx, client_ctx = tls_contexts
    raw_client, raw_server = make_pair()
    wrapped = {}

    def handshake_server():
        wrapped["server"] = server_ctx.wrap_socket(raw_server, server_side=True)

    t = threading.Thread(target=handshake_server)
    t.start()
    client = client_ctx.wrap_socket(raw_client, server_hostname="localhost")
    t.join(10)
    server = wrapped["server"]
    try:
        yield client, server
    finally:
        client.close()
        server.close()


@pytest.mark.parametrize("size", [0, 5, 20000, 3 << 20])
def test_frames_round_trip_over_tls(tls_pair, background, size):
    client, server = tls_pair
    payload = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    bg = background(tcpframe.send_bytes, client, payload)
    # Had tcpframe read the file descriptor, it would see TLS records, not
    # 8 ASCII digits, and raise FrameError.
    assert tcpframe.read_bytes(server) == payload
    bg.join()
    tcpframe.send_string(server, "réponse")
    assert tcpframe.read_string(client) == "réponse"


def test_byte_loops_over_tls(tls_pair):
    client, server = tls_pair
    tcpframe.send_all(client, b"0123456789")
    buf = bytearray(4)
    assert tcpframe.receive_into(server, buf) == 4 and buf == b"0123"
    assert tcpframe.receive_all(server, 6) == b"456789"


def test_tls_timeout_is_one_deadline_and_restored(tls_pair):
    _, server = tls_pair
    server.settimeout(0.3)
    with pytest.raises(tcpframe.TransferTimeout) as info:
        tcpframe.read_bytes(server)
    assert info.value.partial == b""
    assert server.gettimeout() == 0.3


def test_tls_peer_close_mid_frame(tls_pair):
    client, server = tls_pair
    # Let the client read what the server sent first (TLS 1.3 session
    # tickets among it): closing with unread data would send RST, not FIN.
    tcpframe.send_bytes(server, b"hi")
    assert tcpframe.read_bytes(client) == b"hi"
    client.sendall(b"00000009abc")
    client.close()
    with pytest.raises(tcpframe.ConnectionClosed) as info:
        tcpframe.read_bytes(server)
    assert info.value.partial == b"00000009abc"
    assert info.value.expected == 17


class Wrapper:
    """The least a socket-like object needs: recv_into and sendall."""

    def __init__(self, sock):
        self.sock = sock
        self.calls = []

    def recv_into(self, buffer):
        self.calls.append("recv_into")
        return self.sock.recv_into(buffer)

    def sendall(self, data):
        self.calls.append("sendall")
        self.sock.sendall(data)


def test_duck_typed_wrapper(tcp_pair):
    client, server = tcp_pair
    tcpframe.send_bytes(Wrapper(client), b"small frame")
    # A small frame leaves in one sendall(): no Nagle stall over TLS either.
    w = Wrapper(server)
    assert tcpframe.read_bytes(w) == b"small frame"
    assert "recv_into" in w.calls
    sender = Wrapper(client)
    tcpframe.send_bytes(sender, b"q")
    assert sender.calls == ["sendall"]


def test_wrapper_that_misbehaves_is_reported(tcp_pair):
    class Liar(Wrapper):
        def recv_into(self, buffer):
            return len(buffer) + 1

    with pytest.raises(ValueError, match="returned 9 for a buffer of 8"):
        tcpframe.read_bytes(Liar(tcp_pair[1]))


def test_wrapper_errors_propagate(tcp_pair):
    class Broken(Wrapper):
        def recv_into(self, buffer):
            raise ssl.SSLError("bad record")

    with pytest.raises(ssl.SSLError):
        tcpframe.read_bytes(Broken(tcp_pair[1]))


def test_socket_type_check_is_exact():
    # socket.socket is the type driven by fd; SSLSocket is a subclass and
    # must not be.
    assert issubclass(ssl.SSLSocket, socket.socket)
