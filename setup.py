"""Build the C extension.  Metadata lives in pyproject.toml.

Environment switches (read at build time):
  TCPFRAME_STRICT=1   add -Werror (CI builds with it; users' newer compilers
                      may warn about things we have not seen yet)
"""
import os

from setuptools import Extension, setup

SOURCES = [
    "csrc/_tcpframe.c",
    "csrc/binding_stream.c",
    "csrc/binding_connection.c",
    "csrc/binding_decoder.c",
    "csrc/frame_header.c",
    "csrc/frame_io.c",
    "csrc/frame_decoder.c",
]
HEADERS = ["csrc/binding.h", "csrc/frame_header.h", "csrc/frame_io.h", "csrc/frame_decoder.h"]

cflags = ["-std=c11", "-D_GNU_SOURCE", "-Wall", "-Wextra", "-Wno-missing-field-initializers"]
if os.environ.get("TCPFRAME_STRICT") == "1":
    cflags.append("-Werror")

setup(
    ext_modules=[
        Extension(
            "tcpframe._tcpframe",
            sources=SOURCES,
            depends=HEADERS,
            include_dirs=["csrc"],
            extra_compile_args=cflags,
        )
    ],
)
