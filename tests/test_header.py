"""The 8-digit header codec: strict where int() is lenient."""
import pickle

import pytest

import tcpframe
from tcpframe import FrameError, FrameTooLarge

# Each of these is accepted by the lesson's int(slen) and must not be by us.
BAD_HEADERS = [
    b"+0000001",
    b"0000_001",
    b"-0000001",
    b" 0000001",
    b"0000001 ",
    b"000000\xd9\xa1",  # ARABIC-INDIC DIGIT ONE in UTF-8: int() reads it as 1
    b"\xef\xbc\x90\xef\xbc\x91\x30\x31",  # FULLWIDTH digits
    b"0000001\n",
    b"0000001\x00",
    b"0x000001",
    b"1e+00001",
    b"abcdefgh",
]


@pytest.mark.parametrize("n, header", [
    (0, b"00000000"),
    (1, b"00000001"),
    (12345, b"00012345"),
    (tcpframe.MAX_SIZE, b"99999999"),
])
def test_encode_and_decode_round_trip(n, header):
    assert tcpframe.encode_header(n) == header
    assert tcpframe.decode_header(header) == n
    assert tcpframe.decode_header(bytearray(header)) == n
    assert tcpframe.decode_header(memoryview(header)) == n


def test_constants():
    assert tcpframe.HEADER_SIZE == 8
    assert tcpframe.MAX_SIZE == 99_999_999 == int("9" * 8)


def test_encode_over_max_size_raises_frame_too_large():
    with pytest.raises(FrameTooLarge) as info:
        tcpframe.encode_header(tcpframe.MAX_SIZE + 1)
    assert info.value.size == tcpframe.MAX_SIZE + 1
    assert info.value.limit == tcpframe.MAX_SIZE
    assert "99,999,999" in str(info.value)


def test_encode_rejects_caller_mistakes_as_builtins():
    with pytest.raises(ValueError, match="n must be >= 0"):
        tcpframe.encode_header(-1)
    with pytest.raises(TypeError):
        tcpframe.encode_header("5")
    with pytest.raises(tcpframe.FrameTooLarge):  # a ValueError too
        tcpframe.encode_header(1 << 80)


@pytest.mark.parametrize("header", BAD_HEADERS)
def test_decode_rejects_what_int_accepts(header):
    with pytest.raises(FrameError) as info:
        tcpframe.decode_header(header)
    assert info.value.header == bytes(header)
    assert "8 ASCII digits" in str(info.value)


@pytest.mark.parametrize("header", [b"", b"0000001", b"000000001"])
def test_decode_rejects_wrong_length(header):
    with pytest.raises(FrameError, match="exactly 8 bytes"):
        tcpframe.decode_header(header)


def test_every_non_digit_byte_at_every_position_is_rejected():
    for position in range(8):
        for value in range(256):
            header = bytearray(b"00000000")
            header[position] = value
            if 0x30 <= value <= 0x39:
                assert tcpframe.decode_header(header) == int(header)
            else:
                with pytest.raises(FrameError):
                    tcpframe.decode_header(header)


def test_decode_rejects_non_buffers():
    with pytest.raises(TypeError):
        tcpframe.decode_header("00000001")


def test_frame_errors_are_value_errors_and_pickle():
    err = FrameTooLarge("too big", 10, 5, b"00000010")
    assert isinstance(err, FrameError) and isinstance(err, ValueError)
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.size, copy.limit, copy.header, str(copy)) == (10, 5, b"00000010", "too big")
    copy = pickle.loads(pickle.dumps(FrameError("bad", b"+0000001")))
    assert copy.header == b"+0000001"
