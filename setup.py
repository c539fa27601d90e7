"""Build hook: the C helpers and the mypyc-compiled hot path; everything else is in pyproject.toml.

All are optional. A machine without a C compiler, or without mypyc, still
installs sluiceway and runs the same modules as plain Python (the WebSocket
masking helper then falls back to sluiceway.websocket.frames' pure-Python
code, and llhttp reads every request head instead of http1/_head.c).
``SLUICEWAY_PURE_PYTHON=1`` skips the mypyc step on purpose, for working on
the hot-path modules without rebuilding after each edit.

Why mypyc (docs/performance.md): with the same source, the compiled
HTTP/1.1 path costs about a fifth less CPU per request, because attribute
access on our typed classes and calls between compiled functions become C.
"""

from __future__ import annotations

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

# The modules every HTTP request runs through, in request order. They must
# stay mypy --strict clean: mypyc compiles them from their type annotations.
HOT_PATH = [
    "src/sluiceway/forward_throw.py",
    "src/sluiceway/connection/state.py",
    "src/sluiceway/connection/shared.py",
    # The metrics registry (--metrics-port): observe() is called once per exchange.
    "src/sluiceway/connection/metrics.py",
    "src/sluiceway/connection/app_errors.py",
    "src/sluiceway/transport/flow.py",
    "src/sluiceway/server/proxy_headers.py",
    "src/sluiceway/asgi/scope.py",
    "src/sluiceway/asgi/http.py",
    "src/sluiceway/http1/wire.py",
    "src/sluiceway/http1/cycle.py",
    "src/sluiceway/http1/error_replies.py",
    "src/sluiceway/http1/switching.py",
    "src/sluiceway/http1/request_reader.py",
    "src/sluiceway/http1/response_writer.py",
    "src/sluiceway/http1/closing.py",
    "src/sluiceway/http1/protocol.py",
    # HTTP/2: the engine (frames, HPACK, streams, flow control), then the adapter.
    "src/sluiceway/http2/frames.py",
    "src/sluiceway/http2/huffman.py",
    "src/sluiceway/http2/hpack.py",
    "src/sluiceway/http2/hpack_encoder.py",
    "src/sluiceway/http2/config.py",
    "src/sluiceway/http2/events.py",
    "src/sluiceway/http2/settings.py",
    "src/sluiceway/http2/flow.py",
    "src/sluiceway/http2/limits.py",
    "src/sluiceway/http2/streams.py",
    "src/sluiceway/http2/validation.py",
    "src/sluiceway/http2/streamset.py",
    "src/sluiceway/http2/reader.py",
    "src/sluiceway/http2/connection.py",
    "src/sluiceway/http2/headers.py",
    "src/sluiceway/http2/stream.py",
    "src/sluiceway/http2/error_replies.py",
    "src/sluiceway/http2/request_start.py",
    "src/sluiceway/http2/protocol.py",
    # The pub/sub layer's delivery: on_message (once per member of a group
    # message) and receive() (once per message received).
    "src/sluiceway/layers/wakeups.py",
    "src/sluiceway/layers/redis_pubsub_loop.py",
]


def compiled_hot_path() -> list[Extension]:
    if os.environ.get("SLUICEWAY_PURE_PYTHON"):
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        print("sluiceway: mypyc is not installed; the hot path stays pure Python", file=sys.stderr)
        return []
    # Modules outside HOT_PATH are read for their types only: quietly, because
    # the build's own environment lacks the optional dependencies some of them
    # import (redis for the pub/sub layer's connections), and mypy --strict
    # checks them in the project's environment, where those are installed.
    extensions: list[Extension] = mypycify(
        ["--follow-imports=silent", *HOT_PATH], opt_level="3", debug_level="1"
    )
    for extension in extensions:
        extension.optional = True  # no C compiler: the .py files serve instead
    return extensions


class BuildExt(build_ext):
    """build_ext that keeps the compiled hot path whole and stamps in-place builds.

    mypyc makes one shared library plus a small extension per module that
    imports it; each is optional, so a partial failure would leave modules
    that cannot import. Then none is kept, and the .py files serve.

    An unchanged extension is copied with its old mtime; tests/conftest.py
    compares mtimes to catch a source edited after its extension was built.
    """

    def run(self) -> None:
        super().run()
        outputs = [self.get_ext_fullpath(ext.name) for ext in self.extensions if ext in MYPYC]
        if outputs and not all(os.path.exists(path) for path in outputs):
            message = "sluiceway: mypyc build incomplete; the hot path stays pure Python"
            print(message, file=sys.stderr)
            for path in outputs:
                if os.path.exists(path):
                    os.remove(path)

    def copy_extensions_to_source(self) -> None:
        super().copy_extensions_to_source()
        for extension in self.extensions:
            fullname = self.get_ext_fullname(extension.name)
            path = os.path.join(
                self.get_finalized_command("build_py").get_package_dir(
                    ".".join(fullname.split(".")[:-1])
                ),
                os.path.basename(self.get_ext_filename(fullname)),
            )
            if os.path.exists(path):
                os.utime(path)


MYPYC = compiled_hot_path()

setup(
    cmdclass={"build_ext": BuildExt},
    ext_modules=[
        Extension(
            "sluiceway._speedups",
            ["src/sluiceway/_speedups.c"],
            optional=True,
            extra_compile_args=["-O3"],
        ),
        Extension(
            "sluiceway.http1._head",
            ["src/sluiceway/http1/_head.c"],
            optional=True,
            extra_compile_args=["-O3"],
        ),
        *MYPYC,
    ],
)
