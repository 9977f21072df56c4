"""Build the C extension.  Metadata lives in pyproject.toml.

Environment switches (read at build time):
  TCPFRAME_STRICT=1    add -Werror (CI builds with it; users' newer compilers
                       may warn about things we have not seen yet)
  TCPFRAME_SANITIZE=1  AddressSanitizer + UndefinedBehaviorSanitizer, any UB
                       fatal; run with LD_PRELOAD=$(gcc -print-file-name=libasan.so)
                       and PYTHONMALLOC=malloc (see .ci/run)
  TCPFRAME_DEBUG=1     -O0 -g3, for gdb and valgrind
"""
import os

from setuptools import Extension, setup

SOURCES = [
    "csrc/_tcpframe.c",
    "csrc/binding_stream.c",
    "csrc/binding_connection.c",
    "csrc/binding_decoder.c",
    "csrc/binding_receiver.c",
    "csrc/frame_header.c",
    "csrc/frame_io.c",
    "csrc/frame_decoder.c",
    "csrc/frame_outbuf.c",
]
HEADERS = ["csrc/binding.h", "csrc/binding_types.h", "csrc/frame_header.h", "csrc/frame_io.h", "csrc/frame_decoder.h",
           "csrc/frame_outbuf.h"]


def flags():
    cflags = ["-std=c11", "-D_GNU_SOURCE", "-Wall", "-Wextra", "-Wno-missing-field-initializers"]
    ldflags = []
    if os.environ.get("TCPFRAME_STRICT") == "1":
        cflags.append("-Werror")
    if os.environ.get("TCPFRAME_SANITIZE") == "1":
        sanitize = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
                    "-fno-omit-frame-pointer"]
        cflags += sanitize + ["-g", "-O1"]
        ldflags += sanitize
    if os.environ.get("TCPFRAME_DEBUG") == "1":
        cflags += ["-O0", "-g3"]
    return cflags, ldflags


CFLAGS, LDFLAGS = flags()

setup(
    ext_modules=[
        Extension(
            "tcpframe._tcpframe",
            sources=SOURCES,
            depends=HEADERS,
            include_dirs=["csrc"],
            extra_compile_args=CFLAGS,
            extra_link_args=LDFLAGS,
        )
    ],
)
