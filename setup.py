"""Build hook for the optional C speedups; everything else lives in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        # optional: a machine without a C compiler still installs, and the
        # pure-Python fallback in sluiceway.websocket.frames is used.
        Extension(
            "sluiceway._speedups",
            ["src/sluiceway/_speedups.c"],
            optional=True,
            extra_compile_args=["-O3"],
        ),
    ]
)
