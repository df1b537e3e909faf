"""The public face: a sorted, honest ``__all__`` and an error tree that matches the
design's table of codes."""

from __future__ import annotations

import importlib.metadata
import inspect
from pathlib import Path

import pytest

import onewriter
from onewriter.errors import ERRORS_BY_CODE, error_from_wire

#: The table of error codes (docs/api.md) and their HTTP statuses.
DESIGN_CODES = {
    "QUEUE_FULL": 503,
    "CLIENT_TIMEOUT": 504,
    "TIMEOUT": 504,
    "UNKNOWN_OP": 400,
    "BAD_REQUEST": 400,
    "OP_FAILED": 500,
    "COMMIT_FAILED": 503,
    "UNAUTHORIZED": 401,
    "TOO_LARGE": 413,
    "SQL_NOT_ALLOWED": 403,
    "WRITER_UNAVAILABLE": 503,
    "SHUTTING_DOWN": 503,
}


def test_all_is_sorted_and_every_name_exists() -> None:
    names = onewriter.__all__
    assert names == sorted(names)
    assert len(names) == len(set(names))
    for name in names:
        assert hasattr(onewriter, name), name


def test_every_public_error_class_is_exported() -> None:
    exported = {getattr(onewriter, name) for name in onewriter.__all__}
    for cls in ERRORS_BY_CODE.values():
        assert cls in exported, cls.__name__
    assert onewriter.OneWriterError in exported
    assert onewriter.WriteError in exported


def test_every_design_code_has_one_write_error_class_with_its_http_status() -> None:
    for code, status in DESIGN_CODES.items():
        cls = ERRORS_BY_CODE[code]
        assert issubclass(cls, onewriter.WriteError), code
        assert cls.code == code
        assert cls.http_status == status, code
    codes = [cls.code for cls in ERRORS_BY_CODE.values()]
    assert len(codes) == len(set(codes))


@pytest.mark.parametrize("code", sorted(ERRORS_BY_CODE))
def test_an_error_crosses_the_wire_as_the_same_class(code: str) -> None:
    cls = ERRORS_BY_CODE[code]
    default = cls()
    assert default.message == inspect.cleandoc(cls.__doc__ or "")
    rebuilt = error_from_wire(cls("why it failed").to_wire())
    assert type(rebuilt) is cls
    assert rebuilt.code == code
    assert rebuilt.message == "why it failed"


def test_an_unknown_wire_code_is_still_a_onewriter_error() -> None:
    error = error_from_wire({"code": "FROM_THE_FUTURE", "message": "new"})
    assert isinstance(error, onewriter.OneWriterError)
    assert "FROM_THE_FUTURE" in str(error)
    assert isinstance(error_from_wire("garbage"), onewriter.BadRequest)


def test_the_version_matches_the_installed_distribution() -> None:
    assert onewriter.__version__ == importlib.metadata.version("onewriter")


def test_the_package_is_typed() -> None:
    source = inspect.getsourcefile(onewriter)
    assert source is not None
    assert (Path(source).parent / "py.typed").exists()


DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_every_config_field_is_documented() -> None:
    import dataclasses

    api = (DOCS / "api.md").read_text()
    missing = [f.name for f in dataclasses.fields(onewriter.Config) if f"`{f.name}`" not in api]
    assert not missing, f"docs/api.md lacks Config fields: {missing}"


def test_every_public_name_is_documented() -> None:
    text = "".join(p.read_text() for p in DOCS.glob("*.md"))
    missing = [name for name in onewriter.__all__ if name != "__version__" and name not in text]
    assert not missing, f"docs lack: {missing}"
