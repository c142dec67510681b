"""The page assets and py.typed are package data files that a wheel ships."""

from __future__ import annotations

import fnmatch
from importlib import resources
from pathlib import Path

import tomllib

import instkit
from instkit.viz import assets

ROOT = Path(__file__).resolve().parents[2]


def _package_data() -> list[str]:
    with open(ROOT / "pyproject.toml", "rb") as handle:
        return tomllib.load(handle)["tool"]["setuptools"]["package-data"]["instkit"]


def test_every_static_file_and_py_typed_is_package_data() -> None:
    patterns = _package_data()
    package = Path(instkit.__file__).parent
    shipped = [p.relative_to(package).as_posix() for p in (package / "viz" / "static").iterdir()]
    assert shipped and (package / "py.typed").is_file()
    for name in [*shipped, "py.typed"]:
        assert any(fnmatch.fnmatch(name, pattern) for pattern in patterns), name


def test_assets_are_the_files_and_the_template_has_its_slots() -> None:
    static = resources.files("instkit.viz").joinpath("static")
    assert assets.JS == static.joinpath("page.js").read_text(encoding="utf-8")
    assert assets.CSS == static.joinpath("page.css").read_text(encoding="utf-8")
    for slot in ("__TITLE__", "__CSS__", "__JS__"):
        assert slot in assets.TEMPLATE, slot
    assert "INSTKIT_REPORT" in assets.JS
