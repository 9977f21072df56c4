"""Run the benchmark from a checkout: python benchmarks/run.py [--quick] [--plot F] [--json F].

The harness lives in the package (tcpframe/bench/) so that an installed
tcpframe can run it too: ``python -m tcpframe bench``.
"""
import sys

from tcpframe.bench import main

if __name__ == "__main__":
    sys.exit(main())
