"""``python -m tcpframe``: see ``python -m tcpframe --help``."""
import sys

from .cli import main

sys.exit(main())
