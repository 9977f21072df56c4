"""Objects over frames: JSON, and pickle restricted to plain data."""
import json
from fractions import Fraction
import os
import pickle

import pytest

from tcpframe import lesson
import tcpframe
from tcpframe import UnsafePickle

from crashcheck import run_scenario

PLAIN = [
    None, True, False, 0, -7, 2**100, 1.5, float("inf"), 3 + 4j, "text ✓",
    b"\x00bytes", bytearray(b"ba"), [1, [2, [3]]], (1, (2,)), {"k": [1, 2]},
    {1, 2, 3}, frozenset({"a"}), {(1, 2): {3}},
]


def test_json_round_trip(tcp_pair):
    client, server = tcp_pair
    obj = {"numbers": [1, 2.5, -3], "name": "é", "ok": True, "none": None}
    tcpframe.send_object(client, obj)
    assert tcpframe.read_object(server) == obj


def test_json_payload_is_what_a_student_can_read(tcp_pair):
    client, server = tcp_pair
    tcpframe.send_object(client, [1, 2, 3])
    assert json.loads(lesson.read_string(server)) == [1, 2, 3]
    lesson.send_string(client, json.dumps({"average": 2.0}))
    assert tcpframe.read_object(server) == {"average": 2.0}


def test_not_json_serialisable_raises_before_sending(tcp_pair):
    client, server = tcp_pair
    for bad in [{1, 2}, object(), b"bytes"]:
        with pytest.raises(TypeError, match=r"codec='json'\) cannot send"):
            tcpframe.send_object(client, bad)
    # JSON has no NaN or infinities: a ValueError that says so, however deep.
    for bad in [float("nan"), [1, float("inf")], {"x": [-float("inf")]}]:
        with pytest.raises(ValueError, match="NaN or infinity"):
            tcpframe.send_object(client, bad)
    server.setblocking(False)
    with pytest.raises(BlockingIOError):
        server.recv(1)


def test_unpicklable_raises_type_error_before_sending(tcp_pair):
    client, server = tcp_pair
    with pytest.raises(TypeError, match="cannot pickle"):
        tcpframe.send_object(client, lambda: 1, codec="pickle")
    with pytest.raises(TypeError):
        tcpframe.send_object(client, client, codec="pickle")
    server.setblocking(False)
    with pytest.raises(BlockingIOError):
        server.recv(1)


@pytest.mark.parametrize("protocol", range(0, pickle.HIGHEST_PROTOCOL + 1))
def test_plain_data_unpickles_from_every_protocol(tcp_pair, protocol):
    client, server = tcp_pair
    tcpframe.send_bytes(client, pickle.dumps(PLAIN, protocol=protocol))
    assert tcpframe.read_object(server, codec="pickle") == PLAIN


def test_pickle_round_trip(tcp_pair):
    client, server = tcp_pair
    tcpframe.send_object(client, PLAIN, codec="pickle")
    assert tcpframe.read_object(server, codec="pickle") == PLAIN


class Exploit:
    """The classic: unpickling calls os.system(...)."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_malicious_pickle_runs_nothing(tcp_pair, tmp_path):
    client, server = tcp_pair
    marker = tmp_path / "pwned"
    tcpframe.send_bytes(client, pickle.dumps(Exploit(f"touch {marker}")))
    with pytest.raises(UnsafePickle) as info:
        tcpframe.read_object(server, codec="pickle")
    assert not marker.exists()
    assert isinstance(info.value, pickle.UnpicklingError)
    assert info.value.global_name in ("posix.system", "os.system", "nt.system")
    assert "trusted=True" in str(info.value)
    # The frame was consumed whole: the stream is still in sync.
    tcpframe.send_object(client, [1], codec="pickle")
    assert tcpframe.read_object(server, codec="pickle") == [1]


@pytest.mark.parametrize("payload, refused", [
    (pickle.dumps(Fraction(1, 3)), "fractions.Fraction"),
    (pickle.dumps(Exploit("x"), protocol=0), "system"),
    (b"cbuiltins\neval\n(S'1+1'\ntR.", "builtins.eval"),
    (b"c__builtin__\nbytearray\n(I99999999999\ntR.", "bytearray with a size"),
    (b"c_codecs\nencode\n(S'x'\nS'rot13'\ntR.", "another codec"),
    (b"(I1\nP1\n.", "persistent id"),
])
def test_other_globals_are_refused(tcp_pair, payload, refused):
    client, server = tcp_pair
    tcpframe.send_bytes(client, payload)
    with pytest.raises(UnsafePickle, match=refused):
        tcpframe.read_object(server, codec="pickle")


def test_trusted_pickle_allows_classes(tcp_pair):
    client, server = tcp_pair
    tcpframe.send_object(client, Fraction(1, 3), codec="pickle")
    assert tcpframe.read_object(server, codec="pickle", trusted=True) == Fraction(1, 3)


def test_unknown_codec(tcp_pair):
    client, server = tcp_pair
    with pytest.raises(ValueError, match="unknown codec 'xml'"):
        tcpframe.send_object(client, 1, codec="xml")
    with pytest.raises(ValueError, match="unknown codec"):
        tcpframe.read_object(server, codec="xml")


def test_read_object_limits_size(tcp_pair):
    client, server = tcp_pair
    tcpframe.send_object(client, "x" * 100)
    with pytest.raises(tcpframe.FrameTooLarge):
        tcpframe.read_object(server, max_size=50)


def test_bad_json_is_a_value_error_and_keeps_sync(tcp_pair):
    client, server = tcp_pair
    tcpframe.send_bytes(client, b"{not json")
    tcpframe.send_object(client, "fine")
    with pytest.raises(ValueError):
        tcpframe.read_object(server)
    assert tcpframe.read_object(server) == "fine"


def test_unsafe_pickle_error_pickles():
    err = pickle.loads(pickle.dumps(UnsafePickle("os.system")))
    assert err.global_name == "os.system"


def test_deep_nesting_is_bounded(tcp_pair):
    client, server = tcp_pair
    tcpframe.send_bytes(client, b"[" * 100000 + b"]" * 100000)
    with pytest.raises(ValueError, match="max_depth=100"):
        tcpframe.read_object(server)
    # The limit is the documented one, and can be raised; brackets inside
    # strings do not count.
    deep = b"[" * 100 + b'"[[[[\\"[["' + b"]" * 100
    tcpframe.send_bytes(client, deep)
    value = tcpframe.read_object(server)
    for _ in range(100):
        value = value[0] if isinstance(value, list) else value
    assert value == '[[[["[['
    tcpframe.send_bytes(client, b"[" * 150 + b"]" * 150)
    assert tcpframe.read_object(server, max_depth=200) is not None


# A tuple nested a million deep as a dict key: pickle.loads crashes hashing
# it (C recursion, no limit).  From a peer, that was a crash of the reader.
DEEP_TUPLE_KEY = b"\x80\x04}N" + b"\x85" * 1_000_000 + b"Ns."


def test_the_deep_tuple_key_is_refused_not_a_crash():
    got = run_scenario("""
        import pickle
        a, b = make_pair()
        tcpframe.send_bytes(a, bytes.fromhex(P["head"]) + b"\\x85" * 1_000_000
                            + bytes.fromhex(P["tail"]))
        try:
            tcpframe.read_object(b, codec="pickle")
        except tcpframe.PickleTooComplex as exc:
            report(limit=exc.limit, unpickling=isinstance(exc, pickle.UnpicklingError))
    """, head=DEEP_TUPLE_KEY[:4].hex(), tail=DEEP_TUPLE_KEY[-3:].hex())
    assert got == {"limit": "max_depth", "unpickling": True}


@pytest.mark.parametrize("how", ["module", "connection"])
def test_pickle_limits_are_the_callers_to_raise(tcp_pair, how):
    client, server = tcp_pair
    reader = tcpframe.Connection(server) if how == "connection" else server
    many = [[i] for i in range(100)]
    for _ in range(4):
        tcpframe.send_object(client, many, codec="pickle")
    # Past a limit: PickleTooComplex (an UnpicklingError) names it, and says
    # how to raise it; the frame was consumed, so the stream is in sync.
    with pytest.raises(tcpframe.PickleTooComplex, match="max_containers") as info:
        tcpframe.read_object(reader, codec="pickle", pickle_limits={"max_containers": 50})
    assert isinstance(info.value, pickle.UnpicklingError)
    assert (info.value.limit, info.value.value) == ("max_containers", 50)
    assert tcpframe.read_object(reader, codec="pickle",
                                pickle_limits={"max_containers": 101}) == many
    assert tcpframe.read_object(reader, codec="pickle",
                                pickle_limits=tcpframe.PickleLimits(max_containers=None)) == many
    if how == "connection":
        assert reader.read_object(codec="pickle",
                                  pickle_limits={"max_containers": 101}) == many
    else:
        assert tcpframe.read_object(reader, codec="pickle") == many  # the defaults
    with pytest.raises(ValueError, match="max_ratio"):
        tcpframe.read_object(reader, codec="pickle", pickle_limits={"max_ratio": -1})
    with pytest.raises(TypeError, match="nonsense"):
        tcpframe.read_object(reader, codec="pickle", pickle_limits={"nonsense": 1})


def test_malformed_pickles_are_unpickling_errors(tcp_pair):
    client, server = tcp_pair
    for payload in (b"\x80\x04K", b"\x80\x04\xff.", b"garbage", b"\x80\x04)\x85s.",
                    b"\x80\x04]\x94h\x05."):
        tcpframe.send_bytes(client, payload)
        with pytest.raises(pickle.UnpicklingError):
            tcpframe.read_object(server, codec="pickle")
    tcpframe.send_object(client, [1], codec="pickle")
    assert tcpframe.read_object(server, codec="pickle") == [1]


def test_the_json_depth_check_costs_no_memory():
    # The depth check once matched strings with '"(?:[^"\\]|\\.)*"': the
    # regex engine kept state per character, 146 MiB for a 1 MiB string.
    import tracemalloc
    from tcpframe.objects import _check_json_depth
    deep = "[" * 101 + "]" * 101
    for text in ('["' + "a" * (1 << 20) + '", ' + deep + "]",
                 '["' + "\\u0000" * 170_000 + '", ' + deep + "]",
                 "[" + '"[\\"",' * 200_000 + deep + "]"):
        tracemalloc.start()
        try:
            with pytest.raises(ValueError, match="max_depth=100"):
                _check_json_depth(text, 100)
            assert tracemalloc.get_traced_memory()[1] < 256 << 10
        finally:
            tracemalloc.stop()
    # Brackets in strings, escaped quotes and backslashes do not count.
    _check_json_depth('["\\"[[[", "\\\\", ' + "[" * 98 + "]" * 98 + "]", 100)


def test_json_without_nan_or_infinity(tcp_pair):
    client, server = tcp_pair
    for text in (b"[NaN]", b"Infinity", b'{"a": -Infinity}'):
        tcpframe.send_bytes(client, text)
        with pytest.raises(ValueError, match="not a JSON number"):
            tcpframe.read_object(server)
    tcpframe.send_bytes(client, b"[1]")      # still in sync
    assert tcpframe.read_object(server) == [1]
