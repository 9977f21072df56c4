"""Restricted unpickling: plain data round-trips, refusals, limits, malformed input."""
import io
import math
import os
import pickle
import random
import struct
import sys
import time
import tracemalloc
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tcpframe.safe_pickle import (
    DEFAULT_LIMITS, PickleLimits, PickleTooComplex, SafeUnpickler, UnsafePickle, safe_loads,
)

P = sys.hash_info.modulus  # 2**61 - 1 on 64-bit CPython: hash(n) == hash(n + k * P)
PROTOCOLS = range(pickle.HIGHEST_PROTOCOL + 1)
MiB = 1 << 20


def same(a, b):
    """Equal, and of the same types all the way down (True is not 1, b"" not "")."""
    if type(a) is not type(b):
        return False
    if type(a) is float:
        return a == b or (math.isnan(a) and math.isnan(b))
    if type(a) in (list, tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if type(a) is dict:
        return len(a) == len(b) and all(same(k1, k2) and same(a[k1], b[k2])
                                        for k1, k2 in zip(a, b))
    if type(a) in (set, frozenset):
        return a == b and sorted(map(repr, a)) == sorted(map(repr, b))
    return a == b


def refused(payload, limit, **kw):
    with pytest.raises(PickleTooComplex) as info:
        safe_loads(payload, **kw)
    assert info.value.limit == limit, info.value
    assert isinstance(info.value, pickle.UnpicklingError)
    return info.value


# -- plain data: everything pickle.dumps makes of it loads, from every protocol ------

ints = st.integers(min_value=-(2**200), max_value=2**200)
atoms = (st.none() | st.booleans() | ints | st.floats(allow_nan=False)
         | st.complex_numbers(allow_nan=False) | st.text(max_size=20) | st.binary(max_size=20))
hashables = st.recursive(
    atoms, lambda inner: st.lists(inner, max_size=4).map(tuple) | st.frozensets(inner, max_size=4),
    max_leaves=8)
plain = st.recursive(
    hashables | st.binary(max_size=20).map(bytearray),
    lambda inner: (st.lists(inner, max_size=5) | st.lists(inner, max_size=5).map(tuple)
                   | st.dictionaries(hashables, inner, max_size=5)
                   | st.sets(hashables, max_size=5) | st.frozensets(hashables, max_size=5)),
    max_leaves=30)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plain, st.sampled_from(PROTOCOLS))
def test_plain_data_round_trips(obj, protocol):
    data = pickle.dumps(obj, protocol)
    assert same(safe_loads(data), pickle.loads(data))


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_the_odd_corners_of_plain_data(protocol):
    # b"" and bytearray() are spelled bytes() / bytearray() in protocols 0-2
    # (the pickle.Unpickler-based version refused them); -1 and -2 share a
    # hash; 2**61 - 1 is the first int whose hash is not itself.
    obj = [b"", bytearray(), set(), frozenset(), (), "", -1, -2, P, -P, 2**64, 2**1000,
           -0.0, float("inf"), complex(0, -0.0), "\ud800", "\U0001f600",
           {-1: "a", -2: "b", (): 1, frozenset(): 2, 1.5: 3, P: 4, (1, (2.5, 3j)): 5}]
    data = pickle.dumps(obj, protocol)
    assert same(safe_loads(data), pickle.loads(data))


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_shared_and_recursive_references_survive(protocol):
    inner = [1, "x"]
    loop = []
    loop.append(loop)
    got = safe_loads(pickle.dumps([inner, inner, loop], protocol))
    assert got[0] is got[1] and got[0] == [1, "x"]
    assert got[2][0] is got[2]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_large_ordinary_payloads(protocol):
    rng = random.Random(protocol)
    obj = {
        "floats": [rng.random() for _ in range(3000)],
        "ints": [rng.randrange(-10**6, 10**6) for _ in range(3000)],
        "small": [rng.randrange(256) for _ in range(3000)],
        "records": [{"name": f"user{i}", "age": i % 90, "tags": ["a", "b"]} for i in range(500)],
        "by_id": {i * 7919: (i, str(i)) for i in range(2000)},
        "ids": set(range(0, 6000, 3)),
        "flags": [True] * 50 + [False] * 50 + [None] * 50,
    }
    data = pickle.dumps(obj, protocol)
    assert same(safe_loads(data), obj)


def test_safe_loads_takes_any_bytes_like():
    data = pickle.dumps({"k": [1, 2]})
    assert safe_loads(bytearray(data)) == safe_loads(memoryview(data)) == {"k": [1, 2]}


def test_safe_unpickler_reads_one_pickle_at_a_time():
    buf = io.BytesIO(pickle.dumps([1, 2]) + pickle.dumps("two", 0) + b"tail")
    unpickler = SafeUnpickler(buf)
    assert unpickler.load() == [1, 2]
    assert SafeUnpickler(buf).load() == "two"
    assert buf.read() == b"tail"


# -- refusals: anything but plain data raises UnsafePickle, and nothing runs ----------

class Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize("payload, name", [
    (pickle.dumps(Fraction(1, 3)), "fractions.Fraction"),
    (pickle.dumps(Exploit(), protocol=0), "system"),
    (pickle.dumps(Exploit(), protocol=5), "system"),
    (b"cbuiltins\neval\n(S'1+1'\ntR.", "builtins.eval"),
    (b"\x80\x04\x8c\x08builtins\x8c\x04eval\x93.", "builtins.eval"),
    (b"c__builtin__\nbytearray\n(I99999999999\ntR.", "bytearray with a size"),
    (b"\x80\x04\x8c\x08builtins\x8c\tbytearray\x93J\xff\xff\xff\x7f\x85R.",
     "bytearray with a size"),
    (b"c__builtin__\nbytes\n(I99999999999\ntR.", "bytes with a size"),
    (b"c_codecs\nencode\n(S'x'\nS'rot13'\ntR.", "another codec"),
    (b"(I1\nP1\n.", "persistent id"),
    (b"\x80\x04N\x51.", "persistent id"),
    (b"(ios\nsystem\n(S'echo'\ntR.", "os.system"),
    (b"\x80\x02\x82\x01.", "extension registry"),
    (b"\x80\x04]}b.", "BUILD"),
    (b"\x80\x04\x8c\x08builtins\x8c\x03set\x93)\x81.", "NEWOBJ"),
    (b"\x80\x05\x97.", "out-of-band buffer"),
])
def test_refused_as_unsafe_pickle(payload, name):
    with pytest.raises(UnsafePickle, match=name) as info:
        safe_loads(payload)
    assert isinstance(info.value, pickle.UnpicklingError)
    assert "trusted=True" in str(info.value)


# -- limits: each one refuses, fast, and can be raised --------------------------------

def dict_pickle(keys, protocol):
    """Much what pickle.dumps(dict.fromkeys(keys), protocol) gives, for int
    keys, without building the dict (for colliding keys that is the quadratic
    part)."""
    out = [b"\x80" + bytes([protocol]), b"}", b"\x94" if protocol >= 4 else b"q\x00"]
    for i in range(0, len(keys), 1000):
        out.append(b"(")
        for k in keys[i:i + 1000]:
            encoded = pickle.encode_long(k)
            out.append(b"\x8a" + bytes([len(encoded)]) + encoded + b"N")  # LONG1, NONE
        out.append(b"u")
    return b"".join(out) + b"."


@pytest.mark.parametrize("protocol", [2, 5])
def test_the_issues_colliding_int_keys_are_refused_fast(protocol):
    # 80,000 int keys that all hash alike: a 1.04 MB frame that held the GIL
    # for 41 s in pickle.loads.
    keys = [k * P for k in range(80_000)]
    data = dict_pickle(keys, protocol)
    assert len(data) > 1_000_000
    assert safe_loads(dict_pickle(keys[:10], protocol)) == dict.fromkeys(keys[:10])
    start = time.process_time()
    error = refused(data, "max_same_hash")
    assert time.process_time() - start < 5
    assert "max_same_hash" in str(error) and "limits=" in str(error)


@pytest.mark.parametrize("container", [set, frozenset, lambda keys: list(keys)])
def test_colliding_keys_in_sets_and_set_reduce(container):
    keys = [k * P + 3 for k in range(200)]
    for protocol in (2, 5):
        data = pickle.dumps(container(keys), protocol)
        if container in (set, frozenset):
            refused(data, "max_same_hash")
            assert same(safe_loads(data, limits={"max_same_hash": 200}), container(keys))
        else:
            assert safe_loads(data) == keys  # a list does not hash


def colliding_pairs(n, target=12345):
    """n distinct 2-tuples of ints whose hash is target (CPython's tuple hash)."""
    m64 = (1 << 64) - 1
    p1, p2, p5 = 11400714785074694791, 14029467366897019727, 2870177450012600261
    acc2 = (target - (2 ^ (p5 ^ 3527539))) & m64
    x = (acc2 * pow(p1, -1, 1 << 64)) & m64
    x = ((x >> 31) | (x << 33)) & m64
    out, a = [], 0
    while len(out) < n:
        a += 1
        acc1 = (p5 + a * p2) & m64
        acc1 = ((((acc1 << 31) | (acc1 >> 33)) & m64) * p1) & m64
        b = ((x - acc1) * pow(p2, -1, 1 << 64)) & m64
        b = b - (1 << 64) if b >> 63 else b
        if 0 <= b < P or -P < b < -2:
            out.append((a, b))
    return out


def test_colliding_tuple_keys_are_refused():
    pairs = colliding_pairs(300)
    if len({hash(t) for t in pairs}) != 1:
        pytest.skip("this Python hashes tuples differently")
    for protocol in (0, 2, 5):
        refused(pickle.dumps(dict.fromkeys(pairs), protocol), "max_same_hash")
        refused(pickle.dumps(frozenset(pairs), protocol), "max_same_hash")
    data = pickle.dumps(dict.fromkeys(pairs), 5)
    assert list(safe_loads(data, limits={"max_same_hash": 300})) == pairs


def test_the_issues_empty_sets_are_refused_in_bounded_memory():
    # 10 MB of EMPTY_SET opcodes grew pickle.loads's process by 2.34 GB.
    data = b"\x80\x04(" + b"\x8f" * 10_000_000 + b"l."
    tracemalloc.start()
    try:
        start = time.process_time()
        error = refused(data, "max_ratio")
        elapsed = time.process_time() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert elapsed < 5
    # Refused after about headroom / (224 - 64) sets: well under the bound.
    assert peak < DEFAULT_LIMITS.max_ratio * len(data) + DEFAULT_LIMITS.headroom
    assert peak < 4 * MiB
    assert "max_ratio" in str(error)


N = 6000
AMPLIFIERS = {
    "EMPTY_SET": b"\x80\x04(" + b"\x8f" * N + b"l.",
    "EMPTY_DICT": b"\x80\x04(" + b"}" * N + b"l.",
    "EMPTY_LIST": b"\x80\x04(" + b"]" * N + b"l.",
    "memoized lists": b"\x80\x04(" + b"]\x94" * (N // 2) + b"l.",
    "nested tuples": b"\x80\x04N" + b"\x85" * N + b".",
    "frozenset()": b"\x80\x04(" + b"(\x91" * (N // 2) + b"l.",
    "MARKs": b"\x80\x04" + b"(" * 999 + b"N" * N + b".",
    "DUPs": b"\x80\x04N" + b"2" * N + b".",
    "MEMOIZEs": b"\x80\x04N" + b"\x94" * N + b".",
    "scattered memo keys": b"\x80\x04N" + b"".join(
        b"r" + struct.pack("<I", 7 * i + 3) for i in range(N // 5)) + b".",
    "one-key dicts": b"\x80\x04(\x8c\x01a\x94" + b"}h\x00K\x01s" * (N // 6) + b"l.",
    "set() calls": (b"\x80\x04\x8c\x08builtins\x8c\x03set\x93\x94("
                    + b"h\x00)R" * (N // 4) + b"l."),
}


@pytest.mark.parametrize("name", AMPLIFIERS)
def test_peak_memory_stays_within_max_ratio(name):
    # With no headroom, the peak (tracemalloc's count, the interpreter's own
    # stack and memo included) stays under max_ratio bytes per byte of input.
    data = AMPLIFIERS[name]
    tracemalloc.start()
    try:
        try:
            safe_loads(data, limits={"headroom": 0})
        except PickleTooComplex as error:
            assert error.limit == "max_ratio"
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= DEFAULT_LIMITS.max_ratio * len(data) + 16 * 1024, peak / len(data)


def test_max_ratio_can_be_raised():
    data = b"\x80\x04(" + b"\x8f" * 100_000 + b"l."
    refused(data, "max_ratio")
    assert len(safe_loads(data, limits={"max_ratio": 256})) == 100_000
    assert len(safe_loads(data, limits=PickleLimits(max_ratio=None))) == 100_000


def test_max_containers():
    data = pickle.dumps([[] for _ in range(1000)], 5)
    refused(data, "max_containers", limits={"max_containers": 500})
    assert len(safe_loads(data)) == 1000
    assert len(safe_loads(data, limits={"max_containers": 1001})) == 1000
    assert DEFAULT_LIMITS.max_containers == 1_000_000


def test_max_depth_of_marks():
    assert safe_loads(b"\x80\x04" + b"(" * 1000 + b"N.") is None
    refused(b"\x80\x04" + b"(" * 1001 + b"N.", "max_depth")
    refused(b"\x80\x04" + b"(" * 10_000_000 + b"N.", "max_depth")
    assert safe_loads(b"\x80\x04" + b"(" * 1001 + b"N.", limits={"max_depth": 1001}) is None


def test_deeply_nested_tuple_keys():
    # Hashing a tuple recurses in C with no recursion limit: a deep one
    # would crash the process, here or later in the caller's own code.
    def key_of_depth(depth):
        return b"\x80\x04}N" + b"\x85" * depth + b"Ns."

    got = safe_loads(key_of_depth(1000))
    assert len(got) == 1
    refused(key_of_depth(1001), "max_depth")
    start = time.process_time()
    refused(key_of_depth(200_000), "max_depth")
    assert time.process_time() - start < 5
    # Not a key here, but the caller may hash it (put it in a set): refused too.
    deep = safe_loads(b"\x80\x04N" + b"\x85" * 1000 + b".")
    assert hash(deep) == hash(deep)
    refused(b"\x80\x04N" + b"\x85" * 1001 + b".", "max_depth")
    refused(b"\x80\x04N" + b"\x85" * 100_000 + b".", "max_depth")
    refused(b"\x80\x04(N" + b"\x85" * 1001 + b"K\x01t.", "max_depth")  # via TUPLE


def test_hash_work():
    # A tuple whose halves are one tuple, 60 times over: hashing it would
    # take 2**60 steps (pickle.loads never returns).
    dag = b"\x80\x04K\x01\x85\x94"
    for i in range(60):
        dag += b"h" + bytes([i]) + b"h" + bytes([i]) + b"\x86\x94"
    start = time.process_time()
    refused(dag + b"}\x94h" + bytes([60]) + b"Ns.", "hash_work")
    refused(dag + b"(h" + bytes([60]) + b"\x91.", "hash_work")
    assert time.process_time() - start < 1
    # A big tuple used as a key over and over: 5000 element hashes for 5 bytes.
    big = b"\x80\x04(" + b"K\x01" * 5000 + b"t\x94(" + b"(h\x00Nd" * 2000 + b"l."
    refused(big, "hash_work")
    assert len(safe_loads(big, limits={"hash_work": 10_000})) == 2000


def test_hash_seconds():
    data = pickle.dumps(set(range(20_000)), 5)
    refused(data, "hash_seconds", limits={"hash_seconds": 1e-12})
    refused(pickle.dumps(dict.fromkeys(range(20_000)), 5), "hash_seconds",
            limits={"hash_seconds": 1e-12})
    refused(pickle.dumps(frozenset(range(20_000)), 2), "hash_seconds",
            limits={"hash_seconds": 1e-12})
    assert safe_loads(data) == set(range(20_000))
    assert safe_loads(data, limits={"hash_seconds": None}) == set(range(20_000))
    # str keys have secret hashes: not timed at all.
    words = {str(i): i for i in range(20_000)}
    assert safe_loads(pickle.dumps(words, 5), limits={"hash_seconds": 1e-12}) == words


def test_text_ints_are_bounded():
    data = b"I" + b"7" * 1_000_000 + b"\n."
    start = time.process_time()
    with pytest.raises(pickle.UnpicklingError, match="digits"):
        safe_loads(data)
    assert time.process_time() - start < 1


def test_limits_arguments():
    assert DEFAULT_LIMITS == PickleLimits()
    assert PickleLimits(max_ratio=None).max_ratio is None
    with pytest.raises(ValueError):
        PickleLimits(max_ratio=-1)
    with pytest.raises(ValueError):
        PickleLimits(max_depth="deep")
    with pytest.raises(TypeError, match="max_raito"):
        safe_loads(pickle.dumps(1), limits={"max_raito": 10})
    with pytest.raises(TypeError):
        safe_loads(pickle.dumps(1), limits=64)
    assert SafeUnpickler(io.BytesIO(), limits={"max_depth": 5}).limits.max_depth == 5


def test_limit_errors_say_how_to_raise_them_and_pickle():
    error = refused(b"\x80\x04" + b"(" * 1001 + b"N.", "max_depth")
    assert error.value == 1000
    assert "limits={'max_depth': 4000}" in str(error)
    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), copy.limit, copy.value, str(copy)) == (
        PickleTooComplex, "max_depth", 1000, str(error))


# -- malformed input: always an UnpicklingError, never another exception -------------

@pytest.mark.parametrize("payload", [
    b"", b".", b"N", b"\x80", b"\x80\x06N.", b"\xff", b"\x00",
    b"\x80\x04\x8c\x05ab", b"X\xff\xff\xff\xffab.", b"\x8d" + struct.pack("<Q", 1 << 62) + b".",
    b"\x8e" + struct.pack("<Q", 1 << 63) + b".", b"\x96" + struct.pack("<Q", 10**12) + b".",
    b"\x8b" + struct.pack("<i", -1) + b".", b"\x8b" + struct.pack("<i", 2**31 - 1) + b"ab.",
    b"T" + struct.pack("<i", -5) + b".", b"\x95" + struct.pack("<Q", 10**9) + b"N.",
    b"h\x05.", b"j\x05\x00\x00\x00.", b"g5\n.", b"g-1\n.", b"p-1\n.", b"g\n.",
    b"e.", b"(e.", b"N(e.", b"Ne.", b"NNs.", b"]NNs.",
    b"}(Nu.", b"}N(Nu.", b"](Nu.", b"N(N\x90.",
    b"N\x85\x85(\x94.", b"(\x94.", b"(2.", b"0.", b"1.",
    b"\x85.", b"\x86.", b"N\x87.", b"N(N\x86.", b"R.", b"NR.", b"N)R.", b"K\x01)R.",
    b"K\x01K\x02\x93.", b"\x93.", b"c__builtin__\n", b"c__builtin__\nset", b"I12x\n.",
    b"I\n.", b"F1.5", b"Fnope\n.", b"S'abc\n.", b"S'\\x'\n.", b"Vabc", b"V\\u12\n.",
    b"\x8c\x02\xff\xfe.", b"X\x02\x00\x00\x00\xc3(.", b"U\x02\xc3\xa9.",
    b"c__builtin__\nset\n(K\x01tR.", b"c__builtin__\nset\n(K\x01K\x02tR.",
    b"c__builtin__\ncomplex\n(S'1+2j'\ntR.", b"c__builtin__\ncomplex\n(L" + b"9" * 400 + b"\ntR.",
    b"c__builtin__\nfrozenset\n(]]atR.", b"\x80\x04}]Ns.", b"\x80\x04\x8f(]\x90.",
    b"\x80\x04(]\x91.", b"\x80\x04(]N\x86\x91.", b"\x80\x04(]Nd.",
])
def test_malformed_pickles_raise_unpickling_error(payload):
    with pytest.raises(pickle.UnpicklingError) as info:
        safe_loads(payload)
    assert not isinstance(info.value, PickleTooComplex), info.value


def test_mutated_pickles_give_a_value_or_an_unpickling_error():
    rng = random.Random(20240611)
    seeds = [
        pickle.dumps(obj, protocol) for protocol in PROTOCOLS for obj in (
            [None, True, 1, -300, 70000, 2**40, 2**100, 1.5, 3 - 4j, "é✓", b"by", bytearray(b"ba")],
            {"k": [1, (2, 3)], (1, "t"): {4.5, frozenset({6})}, 7: set(), "e": ()},
            [[i, float(i), str(i)] for i in range(20)] + [b"", bytearray()],
        )
    ]
    outcomes = {"value": 0, "error": 0}
    for _ in range(6000):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randrange(1, 4)):
            r = rng.random()
            if r < 0.45 and data:
                data[rng.randrange(len(data))] = rng.randrange(256)
            elif r < 0.7:
                data.insert(rng.randrange(len(data) + 1), rng.randrange(256))
            elif r < 0.85 and data:
                del data[rng.randrange(len(data))]
            else:
                data = data[:rng.randrange(len(data) + 1)]
        try:
            safe_loads(bytes(data))
            outcomes["value"] += 1
        except pickle.UnpicklingError:
            outcomes["error"] += 1
        # Any other exception fails the test, naming the input.
    assert outcomes["value"] > 100 and outcomes["error"] > 1000, outcomes


# -- found by an attacker's review ------------------------------------------------------


@pytest.mark.parametrize("func, item", [(b"frozenset", b"\x8c\x01a"), (b"set", b"\x8c\x01a"),
                                        (b"frozenset", b"N"), (b"set", b"K\x05")])
def test_set_of_a_memoized_list_again_and_again_is_hash_work(func, item):
    # Seven bytes apply set()/frozenset() to a memoized list of 500,000
    # items: 74,000 times in 1 MB was ~800 s of CPU.  Each visit is charged.
    n, reps = 500_000, 74_000
    payload = (b"\x80\x04\x8c\x08builtins\x8c" + bytes([len(func)]) + func + b"\x93\x940"
               + b"(" + item + b"2" * (n - 1) + b"l\x940" + b"h\x00h\x01\x85R0" * reps + b"N.")
    start = time.process_time()
    # The count, not the clock, stops it (the clock may stop it first on a
    # slow machine, under a sanitizer: either is right there).
    refused(payload, "hash_work", limits={"hash_seconds": None})
    assert time.process_time() - start < 5
    with pytest.raises(PickleTooComplex, match="hash_work|hash_seconds"):
        safe_loads(payload)
    # Once is fine: the list's bytes paid for it.
    once = payload[:payload.index(b"h\x00h\x01")] + b"h\x00h\x01\x85R."
    assert len(safe_loads(once)) == 1


@pytest.mark.parametrize("payload, name", [
    (b"cbuiltins\nset\n.", "set"),
    (b"c__builtin__\nbytearray\n.", "_bytearray"),
    (b"\x80\x02]q\x00c__builtin__\nset\nq\x01a.", "set"),
    (b"\x80\x04}\x8c\x08builtins\x8c\x07complex\x93K\x01s.", "complex"),
])
def test_a_global_that_is_never_called_is_refused(payload, name):
    with pytest.raises(UnsafePickle, match=f"{name} \\(a global, not called\\)"):
        safe_loads(payload)
    # Called, as pickle.dumps writes them, they load.
    for protocol in PROTOCOLS:
        plain = [{1, 2}, frozenset({3}), 1 + 2j, bytearray(b"x"), b"y"]
        assert same(safe_loads(pickle.dumps(plain, protocol=protocol)), plain)


def test_an_invalid_string_escape_is_an_unpickling_error_even_under_w_error():
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for payload in (b"S'\\q'\n.", b"S'a\\\\\\z'\n.", b"S'\\x4'\n.", b"S'a\\'\n."):
            with pytest.raises(pickle.UnpicklingError):
                safe_loads(payload)
        text = "a\\b\n\t'\"\x00\x7f"
        assert safe_loads(pickle.dumps(text, protocol=0)) == text
        assert safe_loads(b"S'\\\\q'\n.") == "\\q"
