"""CPython's own ``test_sqlite3`` tests, run against onewriter.dbapi.

The test modules are loaded from the standard library's ``test`` package with
``sqlite3`` resolving to ``onewriter.dbapi`` while they import; nothing of them is
copied here. Every test class of every module runs; the tests that open files go
through the write turn (``test_transactions`` runs two connections on one file).
docs/dbapi.md lists what differs.
"""

from __future__ import annotations

import importlib.util
import sys
import unittest
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest

import onewriter.dbapi

if importlib.util.find_spec("test.test_sqlite3") is None:  # some distributions strip it
    pytest.skip("the standard library's test package is not installed", allow_module_level=True)

MODULES = (
    "test_backup",
    "test_dbapi",
    "test_dump",
    "test_factory",
    "test_hooks",
    "test_regression",
    "test_transactions",
    "test_types",
    "test_userfunctions",
)


def _load(name: str) -> ModuleType:
    """A fresh copy of ``test.test_sqlite3.<name>`` that imported ``sqlite3`` as
    onewriter.dbapi (the standard library's own copy is left alone)."""
    spec = importlib.util.find_spec(f"test.test_sqlite3.{name}")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    saved = sys.modules["sqlite3"]
    sys.modules["sqlite3"] = onewriter.dbapi
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules["sqlite3"] = saved
    return module


def _collect() -> dict[str, type[unittest.TestCase]]:
    classes: dict[str, type[unittest.TestCase]] = {}
    for module_name in MODULES:
        module = _load(module_name)
        for name, value in vars(module).items():
            if (
                isinstance(value, type)
                and issubclass(value, unittest.TestCase)
                and value.__module__ == module.__name__
            ):
                classes[f"CPython_{module_name}_{name}"] = value
    return classes


globals().update(_collect())


@pytest.fixture(autouse=True)
def _in_a_scratch_directory(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The tests create files named after TESTFN in the working directory."""
    monkeypatch.chdir(tmp_path)
    yield
