"""Wire compatibility, both ways, with the lesson's own hand-typed helpers."""
import time

from tcpframe import lesson
import tcpframe


def test_tcpframe_sender_to_lesson_reader(tcp_pair):
    client, server = tcp_pair
    for text in ["HelloWorld", "", "héllo ✓", "x" * 100000]:
        tcpframe.send_string(client, text)
        assert lesson.read_string(server) == text.encode()


def test_lesson_sender_to_tcpframe_reader(tcp_pair):
    client, server = tcp_pair
    for text in ["HelloWorld", "", "héllo ✓", "x" * 100000]:
        lesson.send_string(client, text)
        assert tcpframe.read_string(server) == text


def test_lesson_byte_helpers_interoperate(tcp_pair):
    client, server = tcp_pair
    lesson.send_all_bytes(client, b"abc")
    assert tcpframe.receive_all_bytes(server, 3) == b"abc"
    tcpframe.send_all_bytes(client, b"def")
    assert lesson.receive_all_bytes(server, 3) == b"def"


def test_hello_sleep_world(tcp_pair, background):
    """The lesson's slide: "Hello", a pause, "World" -- one message, two sends."""
    client, server = tcp_pair

    def student_client():
        lesson.send_all_bytes(client, b"000")
        time.sleep(0.05)
        lesson.send_all_bytes(client, b"00010Hello")
        time.sleep(0.2)
        lesson.send_all_bytes(client, b"World")

    bg = background(student_client)
    assert tcpframe.read_string(server) == "HelloWorld"
    bg.join()


def test_lesson_reader_with_trickled_tcpframe_frames(tcp_pair):
    client, server = tcp_pair
    tcpframe.send_string(client, "one")
    tcpframe.send_string(client, "two")
    assert lesson.read_string(server) == b"one"
    assert lesson.read_string(server) == b"two"
