"""Load the application from a ``"module:attribute"`` path.

``load_app("pkg.mod:obj.app", app_dir=".", factory=False)`` puts ``app_dir``
first on ``sys.path``, imports ``pkg.mod``, walks the dotted attribute and,
with ``factory``, calls the result with no arguments.

Every failure is a ``ConfigError`` with one line that says which part was
wrong: the path's shape, a module that does not exist, a module that exists
but fails to import (its own ``ImportError`` included: that is not "not
found"), a missing attribute, a factory that raised, or an object that is not
callable. The CLI prints the line and exits 2.

Imports only the standard library and ``sluiceway.errors``.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from typing import Any

from sluiceway.errors import ConfigError


def load_app(path: str, app_dir: str = ".", factory: bool = False) -> Any:
    """Import and return the object named by ``path``.

    Raises:
        ConfigError: one line naming what could not be loaded and why.
    """
    module_name, sep, attrs = path.partition(":")
    if not sep or not module_name or not attrs:
        raise ConfigError(f'app path {path!r} must be "module:attribute", e.g. "main:app"')
    add_app_dir(app_dir)
    module = import_module(module_name)
    target: Any = module
    walked = module_name + ":"
    for part in attrs.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ConfigError(
                f"attribute {attrs!r} not found in module {module_name!r}"
                + ("" if walked.endswith(":") else f" ({walked[:-1]!r} has no {part!r})")
            ) from None
        walked += part + "."
    if factory:
        if not callable(target):
            raise ConfigError(f"app factory {path!r} is not callable")
        try:
            target = target()
        except Exception as exc:
            raise ConfigError(f"app factory {path!r} raised {_describe(exc)}") from None
    if not callable(target):
        raise ConfigError(
            f"{path!r} is not an ASGI application: {type(target).__name__} is not callable"
        )
    return target


def add_app_dir(app_dir: str) -> None:
    """Put ``app_dir`` first on ``sys.path`` (once), as ``python -m`` does for cwd."""
    directory = os.path.abspath(app_dir)
    if directory in sys.path:
        sys.path.remove(directory)
    sys.path.insert(0, directory)


def import_module(module_name: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        # Not found means the missing module is the one asked for (or a
        # package on its path); a missing import *inside* it is its own error.
        missing = exc.name or ""
        if missing == module_name or module_name.startswith(missing + "."):
            raise ConfigError(f"module {module_name!r} not found") from None
        raise ConfigError(f"importing module {module_name!r} failed: {_describe(exc)}") from None
    except SyntaxError as exc:
        raise ConfigError(
            f"importing module {module_name!r} failed: SyntaxError: {exc.msg} "
            f"({exc.filename}, line {exc.lineno})"
        ) from None
    except Exception as exc:
        raise ConfigError(f"importing module {module_name!r} failed: {_describe(exc)}") from None


def _describe(exc: BaseException) -> str:
    """``Type: message (file:line)`` of the innermost frame: one line, no traceback."""
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    # The innermost frame of the user's code, not importlib's machinery.
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith("<")]
    if frames and frames[-1].filename != __file__:
        text += f" ({frames[-1].filename}:{frames[-1].lineno})"
    return text
