"""App loading: "module:attr", --app-dir, --factory, and one clear error for each failure."""

from __future__ import annotations

import itertools
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sluiceway.errors import ConfigError
from sluiceway.importer import load_app

_counter = itertools.count()


@pytest.fixture
def app_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        del sys.modules[name]


def write_module(directory: Path, source: str) -> str:
    name = f"sw_importer_mod_{next(_counter)}"
    (directory / f"{name}.py").write_text(source)
    return name


async def asgi_app(scope: object, receive: object, send: object) -> None:  # pragma: no cover
    pass


def test_loads_a_dotted_attribute(app_dir: Path) -> None:
    name = write_module(
        app_dir, "class Holder:\n    async def app(scope, receive, send):\n        pass\n"
    )
    app = load_app(f"{name}:Holder.app", str(app_dir))
    assert app.__name__ == "app"


def test_factory_is_called(app_dir: Path) -> None:
    name = write_module(
        app_dir, "def create():\n    async def app(s, r, w):\n        pass\n    return app\n"
    )
    app = load_app(f"{name}:create", str(app_dir), factory=True)
    assert app.__name__ == "app"


@pytest.mark.parametrize("path", ["nocolon", ":app", "mod:", ""])
def test_path_shape(path: str) -> None:
    with pytest.raises(ConfigError, match='must be "module:attribute"'):
        load_app(path)


def test_missing_module_is_named(app_dir: Path) -> None:
    with pytest.raises(ConfigError, match=r"^module 'sw_does_not_exist' not found$"):
        load_app("sw_does_not_exist:app", str(app_dir))


def test_missing_submodule_is_named(app_dir: Path) -> None:
    package = app_dir / "sw_pkg_for_missing"
    package.mkdir()
    (package / "__init__.py").write_text("")
    with pytest.raises(ConfigError, match=r"^module 'sw_pkg_for_missing\.nope' not found$"):
        load_app("sw_pkg_for_missing.nope:app", str(app_dir))


def test_import_error_inside_the_module_is_not_not_found(app_dir: Path) -> None:
    name = write_module(app_dir, "import sw_some_missing_dependency\napp = 1\n")
    with pytest.raises(ConfigError) as info:
        load_app(f"{name}:app", str(app_dir))
    message = str(info.value)
    assert message.startswith(f"importing module '{name}' failed: ModuleNotFoundError")
    assert "sw_some_missing_dependency" in message
    assert f"{name}.py:1" in message
    assert "\n" not in message


def test_exception_at_import_time_is_one_line(app_dir: Path) -> None:
    name = write_module(app_dir, "x = 1\nraise RuntimeError('boom\\nsecond line')\n")
    with pytest.raises(ConfigError) as info:
        load_app(f"{name}:app", str(app_dir))
    assert str(info.value) == (
        f"importing module '{name}' failed: RuntimeError: boom second line ({app_dir / name}.py:2)"
    )


def test_syntax_error_is_one_line(app_dir: Path) -> None:
    name = write_module(app_dir, "def broken(:\n")
    with pytest.raises(ConfigError, match=f"importing module '{name}' failed: SyntaxError"):
        load_app(f"{name}:app", str(app_dir))


def test_missing_attribute_is_named(app_dir: Path) -> None:
    name = write_module(app_dir, "application = None\n")
    with pytest.raises(ConfigError, match=f"^attribute 'app' not found in module '{name}'$"):
        load_app(f"{name}:app", str(app_dir))


def test_missing_nested_attribute_says_where(app_dir: Path) -> None:
    name = write_module(app_dir, "class Holder:\n    pass\n")
    with pytest.raises(ConfigError, match=":Holder' has no 'app'"):
        load_app(f"{name}:Holder.app", str(app_dir))


def test_not_callable(app_dir: Path) -> None:
    name = write_module(app_dir, "app = 42\n")
    with pytest.raises(ConfigError, match="not an ASGI application: int is not callable"):
        load_app(f"{name}:app", str(app_dir))


def test_factory_that_raises(app_dir: Path) -> None:
    name = write_module(app_dir, "def create():\n    raise KeyError('SECRET_KEY')\n")
    with pytest.raises(ConfigError, match=r"app factory .* raised KeyError: 'SECRET_KEY'"):
        load_app(f"{name}:create", str(app_dir), factory=True)
