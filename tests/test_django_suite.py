"""Django's own test suite: onewriter.django passes what the stock sqlite3 backend
passes on the same apps, file databases, same run, but for the documented few."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest.importorskip("django")
pytest.importorskip("tblib")  # Django's parallel runner pickles tracebacks with it

import django_suite

DOCS = Path(__file__).resolve().parent.parent / "docs" / "django.md"

#: Tests that pass on the stock backend and not on onewriter.django, each explained
#: in docs/django.md: they assert the text of the BEGIN that atomic() logs, and the
#: backend always begins with BEGIN IMMEDIATE.
KNOWN_DIFFERENCES = {
    "backends.base.test_base.DatabaseWrapperLoggingTests.test_commit_debug_log",
    "backends.sqlite.tests.TestTransactionMode.test_default_transaction_mode",
    "backends.sqlite.tests.TestTransactionMode.test_valid_transaction_modes",
}


def _sdist_present() -> bool:
    version = django_suite.django_version()
    cache = django_suite.CACHE
    return (cache / f"django-{version}.tar.gz").exists() or (cache / f"django-{version}").is_dir()


@pytest.fixture(scope="module")
def results() -> dict[str, dict[str, object]]:
    if not _sdist_present():
        if os.environ.get("CI"):
            pytest.fail("Django's sdist is missing: scripts/setup downloads it")
        pytest.skip("Django's sdist is not in .cache/django (scripts/setup downloads it)")
    return {
        backend: django_suite.run_suite(backend, list(django_suite.CI_APPS))
        for backend in ("stock", "onewriter")
    }


@pytest.mark.slow
@pytest.mark.timeout(1200)  # two runs of the suite, ~1 min each idle, ~2 on a busy machine
def test_passes_what_stock_sqlite_passes(results: dict[str, dict[str, object]]) -> None:
    stock, ours = results["stock"], results["onewriter"]
    assert isinstance(stock["outcomes"], dict) and isinstance(ours["outcomes"], dict)
    assert int(str(stock["ran"])) > 3000, str(stock["output_tail"])[-3000:]
    assert ours["ran"] == stock["ran"], str(ours["output_tail"])[-3000:]
    lost = django_suite.passed(stock["outcomes"]) - django_suite.passed(ours["outcomes"])
    assert lost <= KNOWN_DIFFERENCES, sorted(lost - KNOWN_DIFFERENCES)[:50]
    assert len(lost) <= 0.01 * len(django_suite.passed(stock["outcomes"]))


def test_every_difference_is_documented() -> None:
    text = DOCS.read_text()
    for name in KNOWN_DIFFERENCES:
        assert name.rsplit(".", 1)[-1] in text, name
