"""The sans-IO decoder: same frames however the stream is chunked."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tcpframe
from tcpframe import Decoder, FrameError, FrameTooLarge, encode_frame
from test_header import BAD_HEADERS

payloads = st.lists(st.binary(max_size=300), max_size=20)


def chunked(data, cuts):
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for p in points + [len(data)]:
        pieces.append(data[last:p])
        last = p
    return pieces


@settings(max_examples=300, deadline=None)
@given(frames=payloads, cuts=st.lists(st.integers(min_value=0), max_size=40))
def test_any_chunking_yields_the_same_frames(frames, cuts):
    stream = b"".join(encode_frame(f) for f in frames)
    decoder = Decoder()
    out = []
    for piece in chunked(stream, cuts):
        out.extend(decoder.feed(piece))
    assert out == frames
    assert decoder.buffered == 0 and decoder.needed == 8


def test_byte_by_byte():
    frames = [b"", b"a", b"hello", bytes(1000)]
    decoder = Decoder()
    out = []
    for byte in b"".join(map(encode_frame, frames)):
        out.extend(decoder.feed(bytes([byte])))
    assert out == frames


def test_needed_and_buffered():
    decoder = Decoder()
    assert decoder.feed(b"0000") == []
    assert (decoder.buffered, decoder.needed) == (4, 4)
    assert decoder.feed(b"0010abc") == []
    assert (decoder.buffered, decoder.needed) == (11, 7)
    assert decoder.feed(b"defghij") == [b"abcdefghij"]


@pytest.mark.parametrize("header", BAD_HEADERS)
def test_bad_header_raises_after_the_frames_before_it(header):
    decoder = Decoder()
    assert decoder.feed(encode_frame(b"ok") + header + b"tail") == [b"ok"]
    with pytest.raises(FrameError) as info:
        decoder.feed(b"")
    assert info.value.header == header
    with pytest.raises(FrameError):  # and it stays broken
        decoder.feed(b"more")


def test_size_limit_checked_on_the_header_alone():
    decoder = Decoder(max_size=10)
    with pytest.raises(FrameTooLarge) as info:
        decoder.feed(b"99999999")  # no payload byte yet
    assert (info.value.size, info.value.limit) == (99_999_999, 10)
    assert Decoder(max_size=10).feed(encode_frame(b"x" * 10)) == [b"x" * 10]


def test_encode_frame():
    assert encode_frame(b"hi") == b"00000002hi"
    assert encode_frame(memoryview(b"")) == b"00000000"
    with pytest.raises(FrameTooLarge):
        import mmap

        with mmap.mmap(-1, tcpframe.MAX_SIZE + 1) as huge:
            encode_frame(huge)


def test_decoder_arguments():
    with pytest.raises(ValueError):
        Decoder(max_size=-1)
    with pytest.raises(TypeError):
        Decoder(5)
    with pytest.raises(TypeError):
        Decoder().feed("text")
