"""Read a valgrind log; fail if any error's stack passes through tcpframe's C.

CPython and glibc produce reports of their own under memcheck (AVX2 string
compares, int.from_bytes on getrandom() output); those are not ours to fix.
An error with a frame in csrc/ is, and fails CI.
"""
import re
import sys

OURS = re.compile(r"\b(_tcpframe|binding_\w+|frame_(io|header|decoder))\.c\b")


def main(path):
    records, current = [], []
    for line in open(path, errors="replace"):
        body = re.sub(r"^==\d+== ?", "", line.rstrip("\n"))
        if not body.strip():
            if current:
                records.append(current)
            current = []
        elif line.startswith("=="):
            current.append(body)
    if current:
        records.append(current)
    errors = [r for r in records if r and not r[0].startswith((" ", "HEAP", "LEAK", "For "))]
    ours = [r for r in errors if any(OURS.search(x) for x in r)]
    print(f"valgrind: {len(errors)} error report(s) in total, {len(ours)} in tcpframe's code")
    for record in ours:
        print("\n".join(record), end="\n\n")
    return 1 if ours else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
