# mypy: disable-error-code="assignment,var-annotated,arg-type,attr-defined"
# (mypy: an interpreter loop, where one variable holds whatever an opcode built.)
"""Unpickling restricted to plain data, for pickles from a peer.

Unpickling runs code chosen by whoever made the pickle, and over a socket
that is whoever connects.  SafeUnpickler rebuilds plain data only; anything
else raises UnsafePickle before it can run.

It is also bounded.  Given a pickle of nothing but plain data, CPython's
unpickler spends 41 s on a 1 MB dict of int keys that share a hash value,
builds 2.3 GB of empty sets from 10 MB of EMPTY_SET opcodes, and cannot be
stopped from outside.  So SafeUnpickler is its own interpreter, in Python,
for the opcodes plain data needs (protocols 0-5).  It never recurses, and it
keeps count as it goes (PickleLimits; the defaults):

* memory: what it builds (each object and each container's growth as
  ``sys.getsizeof`` counts them, 8 bytes per stack and memo slot) stays
  under ``max_ratio`` (64) bytes per byte of pickle read so far, plus
  ``headroom`` (1 MiB);
* containers: at most ``max_containers`` (1,000,000) lists, dicts, sets,
  frozensets and non-empty tuples in all;
* depth: at most ``max_depth`` (1000) MARKs open at once, and no tuple
  nested deeper than that (hashing one recurses in C, so a deeper one would
  crash whoever hashes it: here as a dict key, or the caller later);
* equal hashes: at most ``max_same_hash`` (64) keys of one dict, set or
  frozenset with the same hash value (Python hashes an int n as
  n % (2**61 - 1), so such keys are easy to make);
* hash work: keys whose hash is neither O(1) nor cached (tuples, element by
  element; frozensets; floats; complex numbers; ints of 61 bits or more)
  cost at most ``hash_work`` (16) element hashes and comparisons per byte
  read, plus 1,048,576;
* hash time: only str and bytes hashes are secret.  Other keys -- small
  ints included, whose hashes all differ -- can in principle be chosen so
  that CPython's probing walks past the keys before them, which no count of
  equal hashes sees.  So once a dict, set or frozenset is past 64 keys,
  keys other than str and bytes go in chunk by chunk, for at most
  ``hash_seconds`` (0.25) seconds of this thread's CPU per MiB read, plus a
  fifth of that.  It is the one limit that depends on the machine;
  ordinary data uses a few percent of it.

Lists and dicts may nest as deep as the pickle is long (nothing in Python
recurses on them without a check: repr() and == raise RecursionError).  A
global must be called (set, frozenset, complex...): one that is not would
reach the caller as a function, and is refused.

Past a limit: PickleTooComplex, naming it.  Malformed, truncated, unknown:
pickle.UnpicklingError.  A global that is not plain data: UnsafePickle.
All three are UnpicklingErrors; nothing else escapes but MemoryError
(and whatever a subclass's find_class raises).
Raise a limit with ``limits={"max_ratio": 256}`` or a PickleLimits.
"""

import io
from itertools import repeat
import pickle
import re
import sys
import time
from dataclasses import dataclass, fields, replace
import struct
from typing import Any, Mapping, Optional, Union

__all__ = [
    "UnsafePickle", "PickleTooComplex", "PickleLimits", "DEFAULT_LIMITS",
    "SafeUnpickler", "safe_loads",
]

UnpicklingError = pickle.UnpicklingError


class UnsafePickle(UnpicklingError):
    """A pickle asked for something other than plain data; nothing was run.

    ``global_name``: the ``module.name`` it asked for.
    """

    def __init__(self, global_name: str) -> None:
        super().__init__(
            f"refused to unpickle {global_name!r}: read_object(codec='pickle') "
            "rebuilds only plain data (None, bool, int, float, complex, str, "
            "bytes, bytearray, list, tuple, dict, set, frozenset); pass "
            "trusted=True only if you trust the peer with your process"
        )
        self.global_name = global_name

    def __reduce__(self):
        return (type(self), (self.global_name,))


@dataclass(frozen=True)
class PickleLimits:
    """What one restricted unpickling may cost.  ``None`` means no limit.

    max_ratio
        Bytes of objects built (``sys.getsizeof`` of each object and of each
        container's growth, 8 per stack or memo slot) per byte of pickle read
        so far.  Plain data needs up to about 45 (a list of empty dicts);
        a list of thousands of empty sets needs 120.  It is checked at each
        step that builds a container or more than 36 bytes per byte read, so
        a value below 36 acts as 36.
    headroom
        Bytes that may be built beyond ``max_ratio``, so that small pickles
        of small containers always load.
    max_containers
        Lists, dicts, sets, frozensets and non-empty tuples built, in all.
    max_depth
        MARKs open at once, and the nesting of tuples in tuples.
    max_same_hash
        Keys of one dict, set or frozenset that share a hash value.  Keys
        chosen to collide make each insertion compare with all the others.
    hash_work
        Element hashes and comparisons, per byte of pickle read (plus
        1,048,576), spent on keys whose hash is not O(1) and cached: tuples
        (counted element by element), frozensets, floats, complex numbers
        and ints of 61 bits or more.
    hash_seconds
        CPU seconds (this thread's) per MiB of pickle read, plus a fifth of
        that, spent inserting keys other than str and bytes into dicts, sets
        and frozensets past 64 keys.  Crafted keys make CPython's probing
        quadratic without sharing a hash value; this bounds that.
    """

    max_ratio: Optional[float] = 64
    headroom: Optional[int] = 1 << 20
    max_containers: Optional[int] = 1_000_000
    max_depth: Optional[int] = 1000
    max_same_hash: Optional[int] = 64
    hash_work: Optional[float] = 16
    hash_seconds: Optional[float] = 0.25

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None and (
                    isinstance(value, bool) or not isinstance(value, (int, float))
                    or not value >= 0):
                raise ValueError(f"PickleLimits.{f.name} must be a number >= 0 or None, "
                                 f"not {value!r}")


DEFAULT_LIMITS = PickleLimits()

LimitsArg = Union[PickleLimits, Mapping[str, Any], None]


def _resolve_limits(limits: LimitsArg) -> PickleLimits:
    if limits is None:
        return DEFAULT_LIMITS
    if isinstance(limits, PickleLimits):
        return limits
    if isinstance(limits, Mapping):
        known = {f.name for f in fields(PickleLimits)}
        unknown = set(limits) - known
        if unknown:
            raise TypeError(f"unknown pickle limit(s) {sorted(unknown)}: "
                            f"choose from {sorted(known)}")
        return replace(DEFAULT_LIMITS, **limits)
    raise TypeError(f"limits must be a PickleLimits, a mapping or None, "
                    f"not {type(limits).__name__}")


class PickleTooComplex(UnpicklingError):
    """A pickle would cost more than a limit allows; what was built is dropped.

    ``limit``: the PickleLimits field; ``value``: its value.
    """

    def __init__(self, limit: str, value: Any, detail: str = "") -> None:
        bigger = "None" if value is None else repr(value * 4 if value else 1)
        super().__init__(
            f"pickle refused: {detail or 'it exceeds a limit'} "
            f"(limit {limit}={value!r}); if the peer is entitled to that, raise "
            f"it: read_object(..., pickle_limits={{{limit!r}: {bigger}}}), or "
            "safe_loads(..., limits=...); see tcpframe.PickleLimits"
        )
        self.limit = limit
        self.value = value
        self.detail = detail

    def __reduce__(self):
        return (type(self), (self.limit, self.value, self.detail))


def _bytearray(*args):
    # bytearray(n) would allocate n bytes chosen by the peer: allow only the
    # forms pickle itself uses, a bytes source (or a str in latin-1).
    if not args:
        return bytearray()
    if len(args) == 1 and type(args[0]) in (bytes, bytearray):
        return bytearray(args[0])
    if (len(args) == 2 and type(args[0]) is str
            and args[1] in ("latin1", "latin-1", "iso-8859-1")):
        return bytearray(args[0], "latin-1")
    if args and isinstance(args[0], str):
        raise UnsafePickle("builtins.bytearray with another codec")
    raise UnsafePickle("builtins.bytearray with a size")


def _bytes(*args):
    # Protocols 0-2 spell b"" as bytes(); bytes(n) would allocate n bytes.
    if not args:
        return b""
    if len(args) == 1 and type(args[0]) is bytes:
        return args[0]
    raise UnsafePickle("builtins.bytes with a size")


def _latin1_bytes(text, encoding="latin1"):
    # Protocols 0-2 spell bytes as _codecs.encode(str, "latin1"); no other
    # codec is plain data.
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickle("_codecs.encode with another codec")
    return text.encode("latin1")


# The plain types that older pickle protocols reach through a global rather
# than an opcode.  Everything else -- os.system, any class -- is refused.
_PLAIN_GLOBALS = {
    ("builtins", "complex"): complex,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "bytearray"): _bytearray,
    ("builtins", "bytes"): _bytes,
    ("_codecs", "encode"): _latin1_bytes,
}
# Python 2 names, which protocols 0-2 use.
_PLAIN_GLOBALS.update({("__builtin__", n): f for (m, n), f in list(_PLAIN_GLOBALS.items())
                       if m == "builtins"})

# Opcodes plain data never uses, refused as UnsafePickle: they construct
# objects, or name them through registries and buffers we do not have.
_OBJECT_OPCODES = {
    0x62: "BUILD (object state)", 0x6F: "OBJ (object construction)",
    0x81: "NEWOBJ (object construction)", 0x92: "NEWOBJ_EX (object construction)",
    0x82: "EXT1 (extension registry)", 0x83: "EXT2 (extension registry)",
    0x84: "EXT4 (extension registry)", 0x97: "NEXT_BUFFER (out-of-band buffer)",
    0x98: "READONLY_BUFFER (out-of-band buffer)",
}

# The hash of an int of magnitude below this is the int itself (but for -1
# and -2): such keys never share a hash (they still go in under hash_seconds).
_MODULUS = sys.hash_info.modulus
# Keys whose hash is O(1) or cached and cannot be forged to collide.
_SAFE_KEYS = frozenset((str, bytes, type(None), bool))  # str and bytes: secret hashes
_INTS = frozenset((int, bool))
_INT_ONLY = frozenset((int,))
# Hashable leaves whose hash costs O(1) (cached for str and bytes).
_LEAVES = frozenset((str, bytes, type(None), bool, float, complex))
_LEAVES_INT = _LEAVES | {int}
_UNHASHABLE = frozenset((list, dict, set, bytearray))

# Sizes charged.  The interpreter charges CPython's 64-bit sizes as literals
# where it matters for speed: 8 per stack slot, 9 per memo slot, 32 per
# float, 36 per int past the cached ones or per MARK, 57 + length per ASCII
# str, 40 + 8 per item per tuple -- each with its 8-byte stack slot.
_SZ_LIST = sys.getsizeof([])
_SZ_DICT = sys.getsizeof({})
_SZ_SET = sys.getsizeof(set())
_SZ_MEMO = 9                          # a slot in the memo list, over-allocated
_SZ_MEMO_FAR = 120                    # an entry in the memo's dict part, and its key
_SZ_HASH_COUNT = 120                  # an entry in a container's count of hash values
_SZ_TUPLE_COST = 160                  # a nested tuple key's cached cost
_SZ_NESTING = 120                     # a tuple-of-tuples' registered depth

_RUN = 64  # most same-opcode numbers decoded at once

_unpack_d = struct.Struct(">d").unpack_from
_unpack_i = struct.Struct("<i").unpack_from
_unpack_I = struct.Struct("<I").unpack_from
_unpack_Q = struct.Struct("<Q").unpack_from
_int_max_str_digits = getattr(sys, "get_int_max_str_digits", lambda: 0)
_thread_time = getattr(time, "thread_time", time.process_time)


def _run_length(data: bytes, start: int, op: bytes, size: int, most: int = _RUN) -> int:
    """How many (up to most) size-byte records of opcode op start at start."""
    seg = data[start:start + size * most:size]
    return min(len(seg) - len(seg.lstrip(op)), (len(data) - start) // size)


_RUN_STRUCTS: dict = {}


def _run_values(data: bytes, start: int, op: bytes, size: int, code: str) -> tuple:
    """The numbers of the run of records (opcode op, then one struct code)."""
    k = _run_length(data, start, op, size)
    unpack = _RUN_STRUCTS.get((code, k))
    if unpack is None:
        unpack = _RUN_STRUCTS[code, k] = struct.Struct(code[0] + code[1:] * k).unpack_from
    return unpack(data, start)


def _truncated(pos: int) -> UnpicklingError:
    return UnpicklingError(f"pickle data was truncated (needed byte {pos})")


def _underflow(pos: int) -> UnpicklingError:
    return UnpicklingError(f"unpickling stack underflow at byte {pos - 1}")


def _no_mark(name: str, pos: int) -> UnpicklingError:
    return UnpicklingError(f"{name} without a MARK at byte {pos - 1}")


def _wrong_target(name: str, target: Any, pos: int) -> UnpicklingError:
    return UnpicklingError(f"{name} into a {type(target).__name__} at byte {pos - 1}")


class SafeUnpickler:
    """An unpickler that rebuilds plain data and refuses every other global.

    ``SafeUnpickler(file, *, limits=None).load()`` reads one pickle from a
    binary file, as ``pickle.Unpickler(file).load()`` does, within
    ``limits``: a PickleLimits, a mapping of the fields to change
    (``{"max_ratio": 256}``), or None for DEFAULT_LIMITS.  It reads the file
    to its end, and seeks back to just after the pickle if it can.
    """

    def __init__(self, file: Any, *, limits: LimitsArg = None) -> None:
        self._file = file
        self.limits = _resolve_limits(limits)

    # -- hooks, as pickle.Unpickler has them --------------------------------

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _PLAIN_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickle(f"{module}.{name}") from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickle("persistent id")

    # -- entry points ----------------------------------------------------------

    def load(self) -> Any:
        file = self._file
        data = file.read()
        if type(data) is not bytes:
            data = bytes(data)
        obj, end = self._load(data)
        if end < len(data):
            try:
                if file.seekable():
                    file.seek(end - len(data), io.SEEK_CUR)
            except (AttributeError, OSError, ValueError):
                pass
        return obj

    def _load(self, data: bytes):
        """Unpickle data; return (object, offset just past STOP)."""
        limits = self.limits
        inf = float("inf")
        self._max_depth = inf if limits.max_depth is None else limits.max_depth
        self._max_same = inf if limits.max_same_hash is None else limits.max_same_hash
        self._work_ratio = inf if limits.hash_work is None else limits.hash_work
        self._work = 0
        self._seconds = 0.0
        self._seconds_per_byte = (inf if limits.hash_seconds is None
                                  else limits.hash_seconds / (1 << 20))
        self._charge = 0      # bytes charged by the key checks, collected by _run
        self._counts = {}     # id(container) -> (container, {hash value: keys})
        self._tuple_cost = {}  # id(tuple) -> (cost, depth, tuple), for nested tuples
        self._nesting = {}     # id(tuple) -> (depth, tuple), for tuples holding tuples
        self._globals = False  # a GLOBAL or STACK_GLOBAL was loaded
        try:
            obj, end = self._run(
                data,
                inf if limits.max_ratio is None else limits.max_ratio,
                inf if limits.headroom is None else limits.headroom,
                inf if limits.max_containers is None else limits.max_containers,
                self._max_depth,
            )
            if self._globals:
                _refuse_uncalled_globals(obj)
            return obj, end
        finally:
            self._counts = self._tuple_cost = self._nesting = None

    # -- limits ------------------------------------------------------------------

    def _limit(self, name: str, detail: str) -> PickleTooComplex:
        return PickleTooComplex(name, getattr(self.limits, name), detail)

    def _exceeded(self, used: int, pos: int, containers: int = 0, depth: int = 0):
        limits = self.limits
        if limits.max_containers is not None and containers > limits.max_containers:
            return self._limit("max_containers",
                               f"it builds more than {limits.max_containers:,} containers")
        if limits.max_depth is not None and depth > limits.max_depth:
            return self._limit("max_depth", f"it opens more than {limits.max_depth:,} "
                                            f"MARKs at once")
        return self._limit(
            "max_ratio",
            f"it would build {used:,} bytes of objects from its first {pos:,} bytes, "
            f"more than {limits.max_ratio} per byte plus headroom={limits.headroom}")

    # -- keys --------------------------------------------------------------------

    def _key_cost(self, key: Any, pos: int) -> int:
        """What hashing key (and comparing it with a collision) costs."""
        t = type(key)
        if t in _LEAVES:
            return 1
        if t is int:
            return 1 + (key.bit_length() >> 6)
        if t is tuple:
            kinds = set(map(type, key))
            if kinds <= _LEAVES:
                return 1 + len(key)
            if kinds <= _LEAVES_INT:
                if len(kinds) == 1:
                    return 1 + len(key) + (sum(map(int.bit_length, key)) >> 6)
                return 1 + len(key) + (sum([i.bit_length() for i in key if type(i) is int])
                                       >> 6)
            return self._nested_tuple_cost(key, pos)
        if t is frozenset:
            return 1 + len(key)  # hash cached, but comparing two is O(len)
        if t in _UNHASHABLE:
            raise UnpicklingError(f"unhashable {t.__name__} as a dict key or set element "
                                  f"at byte {pos - 1}")
        hash(key)  # a type some find_class hook allowed: it must hash at least
        return 1

    def _nested_tuple_cost(self, key: tuple, pos: int) -> int:
        # Iterative post-order walk.  Each nested tuple is costed once, so the
        # walk is linear in the tuples' sizes even when they share sub-tuples
        # (whose cost, and the hash's, can double with each level).
        cache = self._tuple_cost
        got = cache.get(id(key))
        if got is not None:
            return got[0]
        max_depth = self._max_depth
        todo = [(key, 1, False)]
        while todo:
            tup, level, ready = todo.pop()
            if id(tup) in cache:
                continue
            if not ready:
                todo.append((tup, level, True))
                children = [(item, level + 1, False) for item in tup
                            if type(item) is tuple and id(item) not in cache]
                if children and level >= max_depth:
                    raise self._limit("max_depth", f"a tuple nested more than {max_depth} "
                                                    f"deep is used as a dict key or set element")
                todo.extend(children)
                continue
            cost, depth = 1, 1
            for item in tup:
                it = type(item)
                if it is tuple:
                    c, d, _ = cache[id(item)]
                    cost += c
                    if d >= depth:
                        depth = d + 1
                elif it in _UNHASHABLE:
                    raise UnpicklingError(
                        f"unhashable {it.__name__} inside a tuple used as a dict key or "
                        f"set element at byte {pos - 1}")
                else:
                    cost += self._key_cost(item, pos)
            if depth > max_depth:
                raise self._limit("max_depth", f"a tuple nested {depth} deep is used as "
                                                f"a dict key or set element")
            cache[id(tup)] = (cost, depth, tup)
            self._charge += _SZ_TUPLE_COST
        return cache[id(key)][0]

    def _tuple_depth(self, tup: tuple) -> int:
        """Register tup, just built from tuples among others; return the bytes to charge.

        hash() of a tuple recurses in C with no depth check, so a tuple nested
        a million deep crashes whoever hashes it -- here, or the caller later
        (putting it in a set).  No tuple deeper than max_depth is built.
        """
        nesting = self._nesting
        depth = 2
        for item in tup:
            if type(item) is tuple:
                got = nesting.get(id(item))
                if got is not None and got[0] >= depth:
                    depth = got[0] + 1
        if depth > self._max_depth:
            raise self._limit("max_depth", f"it builds a tuple nested more than "
                                           f"{self._max_depth} deep")
        nesting[id(tup)] = (depth, tup)  # kept alive, so that its id stays its own
        return _SZ_NESTING

    def _check_keys(self, container: Any, keys: Any, pos: int) -> int:
        """Vet keys about to go into container; return the bytes to charge.

        Keys whose hash is O(1) and never shared (str, bytes, None, bool, ints
        of magnitude below 2**61 - 1) pass.  The others are counted per hash
        value in this container, and hashing them is charged as work.
        container is None for a frozenset being built.
        """
        kinds = set(map(type, keys))
        if kinds <= _SAFE_KEYS:
            return 0
        if kinds <= _INTS and -_MODULUS < min(keys) and max(keys) < _MODULUS:
            return 0
        modulus = _MODULUS
        slot = self._counts.get(id(container)) if container is not None else None
        if slot is None:
            slot = (container, {})
            if container is not None:
                self._counts[id(container)] = slot
        counts = slot[1]
        max_same = self._max_same
        key_cost = self._key_cost
        allowed = self._work_ratio * pos + (1 << 20)
        work = self._work
        new = 0
        safe, leaves, int_only = _SAFE_KEYS, _LEAVES, _INT_ONLY
        for key in keys:
            t = type(key)
            if t in safe or (t is int and -modulus < key < modulus):
                continue
            if t is tuple:
                kinds = set(map(type, key))
                if kinds <= leaves:
                    cost = 1 + len(key)
                elif kinds == int_only:
                    cost = 1 + len(key) + (sum(map(int.bit_length, key)) >> 6)
                else:
                    cost = key_cost(key, pos)
            else:
                cost = key_cost(key, pos)
            work += cost  # hashing it: checked first, as a hash cannot be stopped
            if work > allowed:
                raise self._hash_work(work, pos)
            h = hash(key)
            n = counts.get(h, 0) + 1
            if n > max_same:
                raise self._limit(
                    "max_same_hash",
                    f"more than {max_same} keys of one dict or set share the hash value "
                    f"{h} (keys chosen to collide make each insertion compare with all "
                    f"the others)")
            if n == 1:
                new += 1
            counts[h] = n
            work += cost * n  # the container hashing it, and comparing with n - 1 others
        self._work = work
        if work > allowed:
            raise self._hash_work(work, pos)
        charge = self._charge + new * _SZ_HASH_COUNT
        self._charge = 0
        return charge

    def _insert(self, target: Any, keys: Any, values: Any, pos: int,
                counted: Any = True, weight: int = 1) -> int:
        """Put keys (with values, for a dict) into target; return bytes to charge.

        The keys are vetted by _check_keys first (counted under target, or
        not at all when counted is None: a frozenset's scratch set).  Only
        str and bytes have hashes an attacker cannot choose; for other keys
        CPython's probing itself can be steered into long walks, so once the
        container is past 64 keys the insertions run in chunks small enough
        to stay near a millisecond each even then, and their CPU time is
        charged (times weight) to the hash_seconds budget.
        """
        charge = self._check_keys(target if counted else None, keys, pos)
        n = len(keys)
        if len(target) + n <= 64:
            if values is None:
                target.update(keys)
            else:
                target.update(zip(keys, values))
            return charge
        clock = _thread_time
        spent = self._seconds
        allowed = self._seconds_per_byte * (pos + (1 << 20) // 5)
        i = 0
        while i < n:
            step = (1 << 22) // (len(target) + 1)
            step = 8 if step < 8 else 1024 if step > 1024 else step
            start = clock()
            if values is None:
                target.update(keys[i:i + step])
            else:
                target.update(zip(keys[i:i + step], values[i:i + step]))
            spent += (clock() - start) * weight
            i += step
            if spent > allowed:
                self._seconds = spent
                raise self._limit(
                    "hash_seconds",
                    f"inserting its keys took {spent:.3f} s of CPU after {pos:,} bytes of "
                    f"pickle (keys other than str and bytes can be chosen so that each "
                    f"insertion walks through the ones before)")
        self._seconds = spent
        return charge

    def _frozenset(self, items: Any, pos: int):
        """frozenset(items), vetted and timed; (frozenset, bytes to charge)."""
        if set(map(type, items)) <= _SAFE_KEYS:
            return frozenset(items), 0
        # A scratch set built from the same list in the same order goes
        # through the same table sizes and probes as frozenset(items) will,
        # so timing it (twice over) bounds both.
        scratch = set()
        charge = self._insert(scratch, items, None, pos, counted=None, weight=2)
        return frozenset(items), charge + sys.getsizeof(scratch)

    def _hash_work(self, work: int, pos: int) -> PickleTooComplex:
        return self._limit(
            "hash_work",
            f"hashing its keys would take {work:,} element hashes after {pos:,} bytes "
            f"of pickle (tuples, frozensets, floats, complex numbers or big ints used "
            f"as keys, or used as keys many times)")

    # -- the interpreter ---------------------------------------------------------

    def _run(self, data: bytes, ratio, headroom, max_containers, max_depth):  # noqa: C901
        # One loop, no recursion.  Opcodes are tested most frequent first, and
        # the MEMOIZE or BINPUT that follows a new object is done in the same
        # step.  After every step that can build more than 36 bytes per byte
        # read, ``used`` is checked against ratio * pos + headroom; the other
        # steps build less than that, so they cannot break the bound.
        getsizeof = sys.getsizeof
        unpack_d = _unpack_d
        unpack_i = _unpack_i
        unpack_I = _unpack_I
        from_bytes = int.from_bytes
        insert = self._insert
        other = self._other
        safe_keys = _SAFE_KEYS
        n_data = len(data)
        stack: list = []
        append = stack.append
        pop = stack.pop
        marks: list = []
        marks_append = marks.append
        fence = 0            # stack index of the innermost open MARK
        memo: list = []      # memo[i] for i < len(memo)
        memo_append = memo.append
        memo_far: dict = {}  # memo keys past len(memo): only hand-made pickles have them
        used = 0             # bytes charged
        containers = 0
        pos = 0
        op = -1
        try:
            while True:
                op = data[pos]
                pos += 1
                if op == 0x8C:  # SHORT_BINUNICODE
                    n = data[pos]
                    pos += 1
                    end = pos + n
                    if end > n_data:
                        raise _truncated(end)
                    s = data[pos:end].decode("utf-8", "surrogatepass")
                    append(s)
                    pos = end
                    used += (57 + n) if len(s) == n else getsizeof(s) + 8
                    if data[pos] == 0x94 and not memo_far:
                        pos += 1
                        memo_append(s)
                        used += 9
                elif op == 0x68:  # BINGET
                    i = data[pos]
                    pos += 1
                    append(memo[i] if i < len(memo) else self._memo_get(memo_far, i, pos))
                    used += 8
                elif op == 0x4B:  # BININT1
                    if (pos + 5 < n_data and data[pos + 5] == 0x4B
                            and data[pos + 3] == 0x4B and data[pos + 1] == 0x4B):  # a run
                        k = _run_length(data, pos - 1, b"K", 2, 1024)
                        stack.extend(data[pos:pos - 1 + 2 * k:2])
                        pos += 2 * k - 1
                        used += 8 * k
                    else:
                        append(data[pos])
                        pos += 1
                        used += 8
                elif op == 0x47:  # BINFLOAT
                    if (pos + 26 < n_data and data[pos + 26] == 0x47
                            and data[pos + 17] == 0x47 and data[pos + 8] == 0x47):  # a run
                        values = _run_values(data, pos - 1, b"G", 9, ">xd")
                        stack.extend(values)
                        k = len(values)
                        pos += 9 * k - 1
                        used += 32 * k
                    else:
                        append(unpack_d(data, pos)[0])
                        pos += 8
                        used += 32
                elif op == 0x4A:  # BININT
                    if (pos + 14 < n_data and data[pos + 14] == 0x4A
                            and data[pos + 9] == 0x4A and data[pos + 4] == 0x4A):  # a run
                        values = _run_values(data, pos - 1, b"J", 5, "<xi")
                        stack.extend(values)
                        k = len(values)
                        pos += 5 * k - 1
                        used += 36 * k
                    else:
                        append(unpack_i(data, pos)[0])
                        pos += 4
                        used += 36
                elif op == 0x28:  # MARK
                    marks_append(fence)
                    fence = len(stack)
                    used += 36
                    if len(marks) > max_depth:
                        raise self._exceeded(used, pos, 0, len(marks))
                elif op == 0x5D or op == 0x7D or op == 0x8F:  # EMPTY_LIST, _DICT, _SET
                    if op == 0x5D:
                        value = []
                        used += _SZ_LIST + 16  # and the stack's own growth: 64 + 16 > 64
                    elif op == 0x7D:
                        value = {}
                        used += _SZ_DICT + 8
                    else:
                        value = set()
                        used += _SZ_SET + 8
                    append(value)
                    containers += 1
                    if containers > max_containers or used > ratio * pos + headroom:
                        raise self._exceeded(used, pos, containers)
                    op = data[pos]
                    if op == 0x94:
                        if not memo_far:
                            pos += 1
                            memo_append(value)
                            used += 9
                    elif op == 0x71:
                        if data[pos + 1] == len(memo) and not memo_far:
                            pos += 2
                            memo_append(value)
                            used += 9
                    elif op == 0x72:
                        if unpack_I(data, pos + 1)[0] == len(memo) and not memo_far:
                            pos += 5
                            memo_append(value)
                            used += 9
                elif op >= 0x80:
                    if 0x85 <= op <= 0x87:  # TUPLE1, TUPLE2, TUPLE3
                        if op == 0x86:
                            if len(stack) - fence < 2:
                                raise _underflow(pos)
                            value = pop()
                            value = (pop(), value)
                            used += 64
                        elif op == 0x85:
                            if len(stack) <= fence:
                                raise _underflow(pos)
                            value = (pop(),)
                            used += 56
                        else:
                            if len(stack) - fence < 3:
                                raise _underflow(pos)
                            value = tuple(stack[-3:])
                            del stack[-3:]
                            used += 72
                        if tuple in map(type, value):
                            used += self._tuple_depth(value)
                        append(value)
                        containers += 1
                        if containers > max_containers or used > ratio * pos + headroom:
                            raise self._exceeded(used, pos, containers)
                        op = data[pos]
                        if op == 0x94:
                            if not memo_far:
                                pos += 1
                                memo_append(value)
                                used += 9
                        elif op == 0x71:
                            if data[pos + 1] == len(memo) and not memo_far:
                                pos += 2
                                memo_append(value)
                                used += 9
                        elif op == 0x72:
                            if unpack_I(data, pos + 1)[0] == len(memo) and not memo_far:
                                pos += 5
                                memo_append(value)
                                used += 9
                    elif op == 0x94:  # MEMOIZE
                        if len(stack) <= fence:
                            raise _underflow(pos)
                        if memo_far:
                            used += self._memo_put(memo, memo_far, len(memo) + len(memo_far),
                                                   stack[-1])
                            if used > ratio * pos + headroom:
                                raise self._exceeded(used, pos)
                        else:
                            memo_append(stack[-1])
                            used += 9
                    elif op == 0x88 or op == 0x89:  # NEWTRUE, NEWFALSE
                        value = op == 0x88
                        if (pos + 2 < n_data and data[pos + 2] == op
                                and data[pos + 1] == op and data[pos] == op):  # a run
                            k = _run_length(data, pos - 1, bytes((op,)), 1, 1024)
                            stack.extend(repeat(value, k))
                            pos += k - 1
                            used += 8 * k
                        else:
                            append(value)
                            used += 8
                    elif op == 0x8A:  # LONG1
                        n = data[pos]
                        pos += 1
                        end = pos + n
                        if end > n_data:
                            raise _truncated(end)
                        value = from_bytes(data[pos:end], "little", signed=True)
                        append(value)
                        pos = end
                        used += getsizeof(value) + 8
                    elif op == 0x90:  # ADDITEMS
                        if not marks:
                            raise _no_mark("ADDITEMS", pos)
                        if fence <= marks[-1]:
                            raise _underflow(pos)
                        target = stack[fence - 1]
                        if type(target) is not set:
                            raise _wrong_target("ADDITEMS", target, pos)
                        items = stack[fence:]
                        del stack[fence:]
                        fence = marks.pop()
                        before = getsizeof(target)
                        if set(map(type, items)) <= safe_keys:
                            target.update(items)
                        else:
                            used += insert(target, items, None, pos)
                        used += getsizeof(target) - before
                        if used > ratio * pos + headroom:
                            raise self._exceeded(used, pos)
                    elif op == 0x91:  # FROZENSET
                        if not marks:
                            raise _no_mark("FROZENSET", pos)
                        items = stack[fence:]
                        del stack[fence:]
                        fence = marks.pop()
                        if items:
                            value, charge = self._frozenset(items, pos)
                            used += charge
                        else:
                            value = frozenset()
                        append(value)
                        used += getsizeof(value) + 8
                        containers += 1
                        if containers > max_containers or used > ratio * pos + headroom:
                            raise self._exceeded(used, pos, containers)
                    elif op == 0x93:  # STACK_GLOBAL
                        if len(stack) - fence < 2:
                            raise _underflow(pos)
                        name = pop()
                        module = pop()
                        if type(name) is not str or type(module) is not str:
                            raise UnpicklingError(f"STACK_GLOBAL of a non-str at byte {pos - 1}")
                        append(self.find_class(module, name))
                        self._globals = True
                        used += 8
                    elif op == 0x95:  # FRAME: says only how long the next frame is
                        n = _unpack_Q(data, pos)[0]
                        pos += 8
                        if pos + n > n_data:
                            raise _truncated(pos + n)
                    elif op == 0x80:  # PROTO
                        if data[pos] > pickle.HIGHEST_PROTOCOL:
                            raise UnpicklingError(f"unsupported pickle protocol: {data[pos]}")
                        pos += 1
                    elif op == 0x8D:  # BINUNICODE8
                        n = _unpack_Q(data, pos)[0]
                        pos += 8
                        end = pos + n
                        if end > n_data:
                            raise _truncated(end)
                        s = data[pos:end].decode("utf-8", "surrogatepass")
                        append(s)
                        pos = end
                        used += getsizeof(s) + 8
                    elif op == 0x8B:  # LONG4
                        n = unpack_i(data, pos)[0]
                        pos += 4
                        if n < 0:
                            raise UnpicklingError(f"LONG4 of a negative length at byte {pos - 5}")
                        end = pos + n
                        if end > n_data:
                            raise _truncated(end)
                        value = from_bytes(data[pos:end], "little", signed=True)
                        append(value)
                        pos = end
                        used += getsizeof(value) + 8
                    elif op == 0x8E or op == 0x96:  # BINBYTES8, BYTEARRAY8
                        n = _unpack_Q(data, pos)[0]
                        pos += 8
                        end = pos + n
                        if end > n_data:
                            raise _truncated(end)
                        value = data[pos:end]
                        if op == 0x96:
                            value = bytearray(value)
                        append(value)
                        pos = end
                        used += getsizeof(value) + 8
                    else:
                        pos, charge = other(op, data, pos, stack, memo, memo_far, fence)
                        used += charge
                        if used > ratio * pos + headroom:
                            raise self._exceeded(used, pos)
                elif op >= 0x5D:
                    if op == 0x65:  # APPENDS
                        if not marks:
                            raise _no_mark("APPENDS", pos)
                        if fence <= marks[-1]:
                            raise _underflow(pos)
                        target = stack[fence - 1]
                        if type(target) is not list:
                            raise _wrong_target("APPENDS", target, pos)
                        before = getsizeof(target)
                        target.extend(stack[fence:])
                        del stack[fence:]
                        fence = marks.pop()
                        used += getsizeof(target) - before
                        if used > ratio * pos + headroom:
                            raise self._exceeded(used, pos)
                    elif op == 0x75:  # SETITEMS
                        if not marks:
                            raise _no_mark("SETITEMS", pos)
                        if fence <= marks[-1]:
                            raise _underflow(pos)
                        target = stack[fence - 1]
                        if type(target) is not dict:
                            raise _wrong_target("SETITEMS", target, pos)
                        items = stack[fence:]
                        n = len(items)
                        if n & 1:
                            raise UnpicklingError(f"SETITEMS of an odd number of items at byte "
                                                  f"{pos - 1}")
                        del stack[fence:]
                        fence = marks.pop()
                        before = getsizeof(target)
                        if n <= 16:
                            for i in range(0, n, 2):
                                key = items[i]
                                if type(key) in safe_keys:
                                    target[key] = items[i + 1]
                                else:
                                    used += insert(target, items[i::2], items[i + 1::2], pos)
                                    break
                        else:
                            keys = items[0::2]
                            if set(map(type, keys)) <= safe_keys:
                                target.update(zip(keys, items[1::2]))
                            else:
                                used += insert(target, keys, items[1::2], pos)
                        used += getsizeof(target) - before
                        if used > ratio * pos + headroom:
                            raise self._exceeded(used, pos)
                    elif op == 0x71:  # BINPUT
                        if len(stack) <= fence:
                            raise _underflow(pos)
                        i = data[pos]
                        pos += 1
                        if i == len(memo) and not memo_far:
                            memo_append(stack[-1])
                            used += 9
                        else:
                            used += self._memo_put(memo, memo_far, i, stack[-1])
                            if used > ratio * pos + headroom:
                                raise self._exceeded(used, pos)
                    elif op == 0x72:  # LONG_BINPUT
                        if len(stack) <= fence:
                            raise _underflow(pos)
                        i = unpack_I(data, pos)[0]
                        pos += 4
                        if i == len(memo) and not memo_far:
                            memo_append(stack[-1])
                            used += 9
                        else:
                            used += self._memo_put(memo, memo_far, i, stack[-1])
                            if used > ratio * pos + headroom:
                                raise self._exceeded(used, pos)
                    elif op == 0x6A:  # LONG_BINGET
                        i = unpack_I(data, pos)[0]
                        pos += 4
                        append(memo[i] if i < len(memo) else self._memo_get(memo_far, i, pos))
                        used += 8
                    elif op == 0x61:  # APPEND
                        if len(stack) - fence < 2:
                            raise _underflow(pos)
                        value = pop()
                        target = stack[-1]
                        if type(target) is not list:
                            raise _wrong_target("APPEND", target, pos)
                        before = getsizeof(target)
                        target.append(value)
                        used += getsizeof(target) - before
                        if used > ratio * pos + headroom:
                            raise self._exceeded(used, pos)
                    elif op == 0x73:  # SETITEM
                        if len(stack) - fence < 3:
                            raise _underflow(pos)
                        value = pop()
                        key = pop()
                        target = stack[-1]
                        if type(target) is not dict:
                            raise _wrong_target("SETITEM", target, pos)
                        before = getsizeof(target)
                        if type(key) in safe_keys:
                            target[key] = value
                        else:
                            used += insert(target, (key,), (value,), pos)
                        used += getsizeof(target) - before
                        if used > ratio * pos + headroom:
                            raise self._exceeded(used, pos)
                    elif op == 0x74 or op == 0x6C:  # TUPLE, LIST
                        if not marks:
                            raise _no_mark("TUPLE" if op == 0x74 else "LIST", pos)
                        items = stack[fence:]
                        del stack[fence:]
                        fence = marks.pop()
                        if op == 0x6C:
                            value = items
                            containers += 1
                        elif items:
                            value = tuple(items)
                            containers += 1
                            if tuple in map(type, value):
                                used += self._tuple_depth(value)
                        else:
                            value = ()
                        append(value)
                        used += getsizeof(value) + 8
                        if containers > max_containers or used > ratio * pos + headroom:
                            raise self._exceeded(used, pos, containers)
                    elif op == 0x64:  # DICT
                        if not marks:
                            raise _no_mark("DICT", pos)
                        items = stack[fence:]
                        del stack[fence:]
                        fence = marks.pop()
                        if len(items) & 1:
                            raise UnpicklingError(f"DICT of an odd number of items at byte "
                                                  f"{pos - 1}")
                        value = {}
                        if items:
                            used += insert(value, items[0::2], items[1::2], pos)
                        append(value)
                        used += getsizeof(value) + 8
                        containers += 1
                        if containers > max_containers or used > ratio * pos + headroom:
                            raise self._exceeded(used, pos, containers)
                    else:
                        pos, charge = other(op, data, pos, stack, memo, memo_far, fence)
                        used += charge
                        if used > ratio * pos + headroom:
                            raise self._exceeded(used, pos)
                else:
                    if op == 0x4E:  # NONE
                        value = None
                        if (pos + 2 < n_data and data[pos + 2] == op
                                and data[pos + 1] == op and data[pos] == op):  # a run
                            k = _run_length(data, pos - 1, bytes((op,)), 1, 1024)
                            stack.extend(repeat(value, k))
                            pos += k - 1
                            used += 8 * k
                        else:
                            append(value)
                            used += 8
                    elif op == 0x4D:  # BININT2
                        if (pos + 8 < n_data and data[pos + 8] == 0x4D
                                and data[pos + 5] == 0x4D and data[pos + 2] == 0x4D):  # a run
                            values = _run_values(data, pos - 1, b"M", 3, "<xH")
                            stack.extend(values)
                            k = len(values)
                            pos += 3 * k - 1
                            used += 36 * k
                        else:
                            append(data[pos] | data[pos + 1] << 8)
                            pos += 2
                            used += 36
                    elif op == 0x58:  # BINUNICODE
                        n = unpack_I(data, pos)[0]
                        pos += 4
                        end = pos + n
                        if end > n_data:
                            raise _truncated(end)
                        s = data[pos:end].decode("utf-8", "surrogatepass")
                        append(s)
                        pos = end
                        used += (57 + n) if len(s) == n else getsizeof(s) + 8
                        op = data[pos]
                        if op == 0x71:
                            if data[pos + 1] == len(memo) and not memo_far:
                                pos += 2
                                memo_append(s)
                                used += 9
                        elif op == 0x72:
                            if unpack_I(data, pos + 1)[0] == len(memo) and not memo_far:
                                pos += 5
                                memo_append(s)
                                used += 9
                        elif op == 0x94 and not memo_far:
                            pos += 1
                            memo_append(s)
                            used += 9
                    elif op == 0x29:  # EMPTY_TUPLE
                        append(())
                        used += 8
                    elif op == 0x43 or op == 0x42:  # SHORT_BINBYTES, BINBYTES
                        if op == 0x43:
                            n = data[pos]
                            pos += 1
                        else:
                            n = unpack_I(data, pos)[0]
                            pos += 4
                        end = pos + n
                        if end > n_data:
                            raise _truncated(end)
                        value = data[pos:end]
                        append(value)
                        pos = end
                        used += getsizeof(value) + 8
                    elif op == 0x52:  # REDUCE
                        if len(stack) - fence < 2:
                            raise _underflow(pos)
                        args = pop()
                        func = pop()
                        value, charge = self._reduce(func, args, pos)
                        append(value)
                        used += getsizeof(value) + 8 + charge
                        if type(value) in (set, frozenset):
                            containers += 1
                        if containers > max_containers or used > ratio * pos + headroom:
                            raise self._exceeded(used, pos, containers)
                    elif op == 0x2E:  # STOP
                        if len(stack) <= fence:
                            raise _underflow(pos)
                        return stack[-1], pos
                    elif op == 0x30:  # POP
                        if len(stack) > fence:
                            pop()
                        elif marks:  # as pickle does: POP right after MARK drops the mark
                            fence = marks.pop()
                        else:
                            raise _underflow(pos)
                    elif op == 0x31:  # POP_MARK
                        if not marks:
                            raise _no_mark("POP_MARK", pos)
                        del stack[fence:]
                        fence = marks.pop()
                    elif op == 0x32:  # DUP
                        if len(stack) <= fence:
                            raise _underflow(pos)
                        if (pos + 2 < n_data and data[pos + 2] == 0x32
                                and data[pos + 1] == 0x32 and data[pos] == 0x32):  # a run
                            k = _run_length(data, pos - 1, b"2", 1, 1024)
                            stack.extend(repeat(stack[-1], k))
                            pos += k - 1
                            used += 8 * k
                        else:
                            append(stack[-1])
                            used += 8
                    elif op == 0x55 or op == 0x54:  # SHORT_BINSTRING, BINSTRING
                        if op == 0x55:
                            n = data[pos]
                            pos += 1
                        else:
                            n = unpack_i(data, pos)[0]
                            pos += 4
                            if n < 0:
                                raise UnpicklingError(
                                    f"BINSTRING of a negative length at byte {pos - 5}")
                        end = pos + n
                        if end > n_data:
                            raise _truncated(end)
                        s = data[pos:end].decode("ascii")  # as pickle.loads: encoding="ASCII"
                        append(s)
                        pos = end
                        used += n + 57
                    else:
                        pos, charge = other(op, data, pos, stack, memo, memo_far, fence)
                        used += charge
                        if used > ratio * pos + headroom:
                            raise self._exceeded(used, pos)
        except UnpicklingError:
            raise
        except IndexError as exc:  # every stack and memo index is checked first
            raise _truncated(n_data) from exc
        except struct.error as exc:
            raise _truncated(n_data) from exc
        except (ValueError, TypeError, KeyError, OverflowError, AttributeError,
                RecursionError, LookupError) as exc:
            raise UnpicklingError(
                f"malformed pickle at byte {pos - 1} (opcode "
                f"{bytes((op,)) if op >= 0 else b''!r}): {type(exc).__name__}: {exc}"
            ) from exc

    def _other(self, op: int, data: bytes, pos: int, stack: list, memo: list,
               memo_far: dict, fence: int):
        """Protocol 0's text opcodes, and the ones plain data never uses.

        Returns (position after the opcode, bytes to charge).
        """
        getsizeof = sys.getsizeof
        append = stack.append
        n_data = len(data)
        used = 0
        end = data.find(b"\n", pos)
        if op in _TEXT_OPCODES and end < 0:
            raise _truncated(n_data + 1)
        if op == 0x49 or op == 0x4C:  # INT, LONG
            line = data[pos:end]
            pos = end + 1
            if op == 0x49 and line == b"00":
                value = False
            elif op == 0x49 and line == b"01":
                value = True
            else:
                if op == 0x4C and line[-1:] == b"L":
                    line = line[:-1]
                digits = _int_max_str_digits() or 4300
                if len(line) > digits + 8:
                    # Decimal text to int is quadratic in its length.
                    raise UnpicklingError(
                        f"a text int of {len(line):,} characters at byte "
                        f"{pos - 1}, over Python's limit of {digits} digits "
                        f"(sys.set_int_max_str_digits)")
                value = int(line, 0)
            append(value)
            used += getsizeof(value) + 8
        elif op == 0x70 or op == 0x67:  # PUT, GET
            line = data[pos:end]
            pos = end + 1
            if not 0 < len(line) <= 20 or not line.isdigit():
                raise UnpicklingError(f"bad memo index {line[:30]!r} at byte "
                                      f"{pos - 1}")
            i = int(line)
            if op == 0x67:
                append(memo[i] if i < len(memo)
                       else self._memo_get(memo_far, i, pos))
                used += 8
            else:
                if len(stack) <= fence:
                    raise _underflow(pos)
                used += self._memo_put(memo, memo_far, i, stack[-1])
        elif op == 0x46:  # FLOAT
            append(float(data[pos:end]))
            pos = end + 1
            used += 32
        elif op == 0x56:  # UNICODE
            s = str(data[pos:end], "raw-unicode-escape")
            append(s)
            pos = end + 1
            used += getsizeof(s) + 8
        elif op == 0x53:  # STRING
            line = data[pos:end]
            pos = end + 1
            if len(line) < 2 or line[0] != line[-1] or line[0] not in b"\"'":
                raise UnpicklingError(
                    f"the STRING opcode argument must be quoted at byte {pos - 1}")
            if b"\\" in line and not _valid_escapes(line):
                # escape_decode would warn (an error under -W error) and keep it.
                raise UnpicklingError(f"invalid escape in a STRING at byte {pos - 1}")
            s = _escape_decode(line[1:-1])[0].decode("ascii")
            append(s)
            used += getsizeof(s) + 8
        elif op == 0x63:  # GLOBAL
            module = data[pos:end].decode("utf-8")
            pos = end + 1
            end = data.find(b"\n", pos)
            if end < 0:
                raise _truncated(n_data + 1)
            name = data[pos:end].decode("utf-8")
            pos = end + 1
            append(self.find_class(module, name))
            self._globals = True
            used += 8
        elif op == 0x69:  # INST
            module = data[pos:end].decode("utf-8", "replace")
            name = data[end + 1:data.find(b"\n", end + 1)]
            raise UnsafePickle(f"{module}.{name.decode('utf-8', 'replace')} "
                               f"(INST)")
        elif op == 0x50:  # PERSID
            pid = data[pos:end].decode("ascii")
            pos = end + 1
            append(self.persistent_load(pid))
        elif op == 0x51:  # BINPERSID
            if len(stack) <= fence:
                raise _underflow(pos)
            append(self.persistent_load(stack.pop()))
        elif op in _OBJECT_OPCODES:
            raise UnsafePickle(_OBJECT_OPCODES[op])
        else:
            raise UnpicklingError(
                f"invalid load key, {bytes((op,))!r} at byte {pos - 1}")
        return pos, used

    # -- helpers for the rarer opcodes -------------------------------------------

    @staticmethod
    def _memo_get(memo_far: dict, i: int, pos: int) -> Any:
        try:
            return memo_far[i]
        except KeyError:
            raise UnpicklingError(f"memo value not found at index {i} "
                                  f"(byte {pos - 1})") from None

    @staticmethod
    def _memo_put(memo: list, memo_far: dict, i: int, value: Any) -> int:
        # memo_far holds only keys past len(memo), so len(memo) + len(memo_far)
        # is the number of keys, which is the key MEMOIZE uses.
        if i < len(memo):
            memo[i] = value
            return 0
        if i == len(memo):
            memo.append(value)
            memo_far.pop(i, None)
            while len(memo) in memo_far:
                memo.append(memo_far.pop(len(memo)))
            return _SZ_MEMO
        if i in memo_far:
            memo_far[i] = value
            return 0
        memo_far[i] = value
        return _SZ_MEMO_FAR

    def _reduce(self, func: Any, args: Any, pos: int):
        """func(*args) for the plain globals; (value, extra bytes to charge)."""
        if type(args) is not tuple:
            raise UnpicklingError(f"REDUCE of arguments that are not a tuple at byte "
                                  f"{pos - 1}")
        if func is set or func is frozenset:
            if len(args) > 1:
                raise UnpicklingError(f"{func.__name__}() of {len(args)} arguments at byte "
                                      f"{pos - 1}")
            items = args[0] if args else ()
            if type(items) not in (list, tuple):
                raise UnpicklingError(f"{func.__name__}() of a {type(items).__name__} at "
                                      f"byte {pos - 1}")
            # Seven bytes can apply it to a memoized list of any length, again
            # and again: each element visited is charged as hash work, before
            # the visit (the safe keys are otherwise free).
            self._work += len(items)
            if self._work > self._work_ratio * pos + (1 << 20):
                raise self._hash_work(self._work, pos)
            if func is set:
                value = set()
                return value, self._insert(value, items, None, pos)
            return self._frozenset(items, pos)
        if func is complex:
            if len(args) > 2 or not set(map(type, args)) <= {int, float, bool}:
                raise UnpicklingError(f"complex() of other than numbers at byte {pos - 1}")
            return complex(*args), 0
        if func is _bytearray or func is _bytes or func is _latin1_bytes:
            return func(*args), 0
        if not callable(func):
            raise UnpicklingError(f"REDUCE of a {type(func).__name__} at byte {pos - 1}")
        # Something a subclass's find_class allowed: its own risk.
        return func(*args), 0


_TEXT_OPCODES = frozenset(b"ILpgFVScPi")

# A backslash and what it escapes; the escapes repr() of a str uses.
_ESCAPE = re.compile(rb"\\.", re.DOTALL)
_ESCAPED = frozenset(b"\n\\'\"abfnrtv01234567x")


def _valid_escapes(line: bytes) -> bool:
    """No escape in a quoted STRING argument that escape_decode would warn about."""
    escaped = _ESCAPED
    for match in _ESCAPE.finditer(line, 1, len(line) - 1):
        if match.group()[1] not in escaped:
            return False
    return True

_PLAIN_GLOBAL_IDS = frozenset(map(id, _PLAIN_GLOBALS.values()))
_WALKED = (list, tuple, set, frozenset)


def _refuse_uncalled_globals(obj: Any) -> None:
    """A global that was loaded but never called would reach the caller as a
    function (set, or our private _bytearray): not plain data.  Walked only
    when the pickle named a global (protocols 0-2, complex numbers)."""
    seen = set()
    todo = [obj]
    while todo:
        item = todo.pop()
        if id(item) in _PLAIN_GLOBAL_IDS:
            raise UnsafePickle(f"{getattr(item, '__name__', item)!s} (a global, not called)")
        t = type(item)
        if (t in _WALKED or t is dict) and item and id(item) not in seen:
            seen.add(id(item))
            if t is dict:
                todo.extend(item.keys())
                todo.extend(item.values())
            else:
                todo.extend(item)

try:
    from codecs import escape_decode as _escape_decode
except ImportError:  # pragma: no cover
    from _codecs import escape_decode as _escape_decode


def safe_loads(payload: Any, *, limits: LimitsArg = None) -> Any:
    """Unpickle payload as SafeUnpickler does: plain data, within limits.

    Raises UnsafePickle for anything but plain data, PickleTooComplex past a
    limit, pickle.UnpicklingError if malformed.  ``limits``: a PickleLimits,
    a mapping of the fields to change (``{"max_ratio": 256}``), or None for
    DEFAULT_LIMITS.
    """
    data = payload if type(payload) is bytes else bytes(memoryview(payload))
    return SafeUnpickler(None, limits=limits)._load(data)[0]
