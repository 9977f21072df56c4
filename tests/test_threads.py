"""The GIL is released while a call waits."""
import threading
import time

import tcpframe
from conftest import make_pair


def test_other_threads_run_while_one_blocks(tcp_pair, background):
    client, server = tcp_pair
    server.settimeout(None)
    bg = background(tcpframe.read_bytes, server)
    time.sleep(0.05)  # let it block
    # If the GIL were held in recv(), this loop could not run at all.
    ticks = 0
    end = time.monotonic() + 0.3
    while time.monotonic() < end:
        ticks += 1
    assert ticks > 1000
    assert bg.thread.is_alive()
    tcpframe.send_bytes(client, b"release")
    assert bg.join() == b"release"


def test_many_threads_exchange_frames_at_once():
    pairs = [make_pair() for _ in range(8)]
    errors = []

    def echo(sock):
        try:
            while True:
                tcpframe.send_bytes(sock, tcpframe.read_bytes(sock))
        except tcpframe.ConnectionClosed:
            pass
        except Exception as exc:  # reported below
            errors.append(exc)

    def talk(sock, tag):
        try:
            for i in range(200):
                message = b"%d:%d:" % (tag, i) + bytes(i)
                tcpframe.send_bytes(sock, message)
                assert tcpframe.read_bytes(sock) == message
        except Exception as exc:
            errors.append(exc)
        finally:
            sock.close()

    threads = [threading.Thread(target=echo, args=(server,)) for _, server in pairs]
    threads += [threading.Thread(target=talk, args=(client, i)) for i, (client, _) in enumerate(pairs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for _, server in pairs:
        server.close()
    assert not errors
    assert not any(t.is_alive() for t in threads)
