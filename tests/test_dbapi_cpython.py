"""CPython's own ``test_sqlite3`` tests, run against onewriter.dbapi.

The test modules are loaded from the standard library's ``test`` package with
``sqlite3`` resolving to ``onewriter.dbapi`` while they import; nothing of them is
copied here. Test classes for features onewriter does not offer on a database shared by
processes are left out, and single tests whose expectation differs are skipped, each
with its reason; docs/dbapi.md lists both.
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

DETECT_TYPES = "detect_types is not supported (column types do not travel with rows)"
LIMITS = "setlimit/getlimit are not offered (limits belong to onewriter's connections)"
TRACE = "set_trace_callback is not offered (statements run on shared connections)"
COLLATION = "create_collation is not offered (the writer is another process)"

#: module -> the test classes run from it.
INCLUDED = {
    "test_dbapi": (
        "ModuleTests",
        "ConnectionTests",
        "UninitialisedConnectionTests",
        "OpenTests",
        "CursorTests",
        "ThreadTests",
        "ConstructorTests",
        "ExtensionTests",
        "ClosedConTests",
        "ClosedCurTests",
        "SqliteOnConflictTests",
    ),
    "test_factory": (
        "ConnectionFactoryTests",
        "CursorFactoryTests",
        "RowFactoryTestsBackwardsCompat",
        "RowFactoryTests",
        "TextFactoryTests",
        "TextFactoryTestsWithEmbeddedZeroBytes",
    ),
    "test_transactions": (
        "TransactionTests",
        "RollbackTests",
        "SpecialCommandTests",
        "TransactionalDDL",
    ),
    "test_regression": ("RegressionTests",),
    "test_types": ("SqliteTypeTests", "CommonTableExpressionTests", "ObjectAdaptationTests"),
    "test_userfunctions": ("FunctionTests",),
}

#: (module, class, test) -> why the expectation differs.
SKIPPED = {
    ("test_dbapi", "ModuleTests", "test_shared_cache_deprecated"): (
        "enable_shared_cache is not offered (it is deprecated in the standard module)"
    ),
    ("test_dbapi", "ModuleTests", "test_disallow_instantiation"): (
        "Connection.__call__ (prepared statement objects) is not offered"
    ),
    ("test_dbapi", "ConnectionTests", "test_connection_limits"): LIMITS,
    ("test_dbapi", "ConnectionTests", "test_connection_bad_limit_category"): LIMITS,
    ("test_dbapi", "CursorTests", "test_execute_too_many_params"): LIMITS,
    ("test_dbapi", "ExtensionTests", "test_cursor_executescript_too_large_script"): LIMITS,
    ("test_dbapi", "ConnectionTests", "test_connection_reinit"): (
        "calling __init__ again on an open connection is not supported"
    ),
    ("test_dbapi", "ConnectionTests", "test_connection_bad_reinit"): (
        "calling __init__ again on an open connection is not supported"
    ),
    ("test_dbapi", "CursorTests", "test_execute_dict_mapping_mapping"): (
        "named parameters travel to the writer as a plain map: __missing__ is not consulted"
    ),
    ("test_dbapi", "CursorTests", "test_rowcount_vaccuum"): (
        "VACUUM cannot run inside the writer's transactions (NotSupportedError)"
    ),
    ("test_dbapi", "ClosedConTests", "test_closed_call"): (
        "Connection.__call__ (prepared statement objects) is not offered"
    ),
    ("test_dbapi", "OpenTests", "test_open_with_undecodable_path"): (
        "database paths must be valid text (they name the writer's socket and lock)"
    ),
    ("test_dbapi", "OpenTests", "test_open_undecodable_uri"): (
        "database paths must be valid text (they name the writer's socket and lock)"
    ),
    ("test_factory", "TextFactoryTests", "test_optimized_unicode"): (
        "OptimizedUnicode (deprecated since 3.10) is not offered"
    ),
    ("test_transactions", "TransactionTests", "test_locking"): (
        "a second connection's write waits for the first's transaction instead of "
        "failing with 'database is locked'"
    ),
    ("test_transactions", "TransactionTests", "test_raise_timeout"): (
        "a second connection's write waits for the first's transaction instead of "
        "failing with 'database is locked'"
    ),
    ("test_regression", "RegressionTests", "test_bind_mutating_list"): DETECT_TYPES,
    ("test_regression", "RegressionTests", "test_convert_timestamp_microsecond_padding"): (
        DETECT_TYPES
    ),
    ("test_regression", "RegressionTests", "test_pragma_schema_version"): DETECT_TYPES,
    ("test_regression", "RegressionTests", "test_type_map_usage"): DETECT_TYPES,
    ("test_regression", "RegressionTests", "test_bpo37347"): TRACE,
    ("test_regression", "RegressionTests", "test_collation"): COLLATION,
    ("test_regression", "RegressionTests", "test_large_sql"): LIMITS,
    ("test_regression", "RegressionTests", "test_surrogates"): (
        "Connection.__call__ (prepared statement objects) is not offered"
    ),
    ("test_regression", "RegressionTests", "test_null_character"): (
        "Connection.__call__ (prepared statement objects) is not offered"
    ),
    ("test_regression", "RegressionTests", "test_recursive_cursor_use"): (
        "rows are fetched when the statement runs, so reusing the connection while "
        "iterating a cursor is safe rather than an error"
    ),
    ("test_types", "SqliteTypeTests", "test_string_with_surrogates"): (
        "a text parameter SQLite cannot encode fails on the writer as OperationalError"
    ),
    ("test_userfunctions", "FunctionTests", "test_func_too_many_args"): LIMITS,
    ("test_userfunctions", "FunctionTests", "test_func_deterministic"): (
        "functions run on this process's readers; a write statement on the writer cannot call them"
    ),
    ("test_userfunctions", "FunctionTests", "test_func_error_on_create"): (
        "create_function checks its arguments when a reader first registers it"
    ),
    ("test_userfunctions", "FunctionTests", "test_function_destructor_via_gc"): (
        "registered functions live as long as this process's readers"
    ),
}


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
    for module_name, class_names in INCLUDED.items():
        module = _load(module_name)
        for class_name in class_names:
            cls: Any = getattr(module, class_name)
            for (skip_module, skip_class, test), why in SKIPPED.items():
                if (skip_module, skip_class) == (module_name, class_name):
                    setattr(cls, test, unittest.skip(why)(getattr(cls, test)))
            classes[f"CPython_{module_name}_{class_name}"] = cls
    return classes


globals().update(_collect())


@pytest.fixture(autouse=True)
def _in_a_scratch_directory(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The tests create files named after TESTFN in the working directory."""
    monkeypatch.chdir(tmp_path)
    yield
    onewriter.dbapi.close_all()
