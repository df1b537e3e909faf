"""SQLAlchemy's own dialect compliance suite (``sqlalchemy.testing.suite``), run against
``sqlite+onewriter`` and against the stock ``sqlite`` dialect on a file, side by side.

Each run is a pytest process in a scratch directory with SQLAlchemy's pytest plugin and
its suite requirements; the tests that pass on one and not on the other are listed.

    python -m benchmarks.sqlalchemy_suite          # both runs, figures into docs
    python -m benchmarks.sqlalchemy_suite -k Reflection
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from . import _cli, _report

URLS = {"sqlite": "sqlite:///querytest.db", "sqlite+onewriter": "sqlite+onewriter:///querytest.db"}

CONFTEST = """\
import pytest
from sqlalchemy.dialects import registry

registry.register("sqlite.onewriter", "onewriter.sqlalchemy", "OneWriterDialect")
pytest.register_assert_rewrite("sqlalchemy.testing.assertions")
from sqlalchemy.testing.plugin.pytestplugin import *  # noqa: E402,F403
"""
SUITE = "from sqlalchemy.testing.suite import *  # noqa: F403\n"
#: The suite's requirements, with what SQLite cannot do: an ATTACHed schema belongs to
#: one connection, so tests that open an engine of their own do not see it.
REQUIREMENTS = """\
from sqlalchemy.testing import exclusions
from sqlalchemy.testing.requirements import SuiteRequirements


class Requirements(SuiteRequirements):
    @property
    def independent_connections(self):
        return exclusions.closed()
"""
SETUP_CFG = """\
[tool:pytest]
addopts = --tb native -p no:warnings -p no:randomly -p no:cacheprovider
python_files = test_*.py

[sqla_testing]
requirement_cls = sqla_requirements:Requirements
profile_file = profiles.txt

[db]
default = sqlite:///querytest.db
"""
#: A line of pytest's summary (``-rA``): the outcome, then the test.
_OUTCOME = re.compile(r"^(PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS) (\S+)")


def run_suite(url: str, extra: list[str]) -> dict[str, str]:
    """Each test's outcome (PASSED, FAILED, ERROR, ...) in one run of the suite."""
    with tempfile.TemporaryDirectory(prefix="sqla-suite-") as scratch:
        root = Path(scratch)
        (root / "conftest.py").write_text(CONFTEST)
        (root / "test_suite.py").write_text(SUITE)
        (root / "setup.cfg").write_text(SETUP_CFG)
        (root / "sqla_requirements.py").write_text(REQUIREMENTS)
        command = [sys.executable, "-m", "pytest", "-c", "setup.cfg", "--dburi", url, "-rA", "-q"]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.getcwd(), env.get("PYTHONPATH")]))
        done = subprocess.run(
            command + extra, cwd=root, env=env, capture_output=True, text=True, timeout=3600
        )
    outcomes: dict[str, str] = {}
    for line in done.stdout.splitlines():
        match = _OUTCOME.match(line)
        if match:
            # Test classes are named after the driver: one name for both runs.
            test = match.group(2).replace("sqlite+pysqlite", "D").replace("sqlite+onewriter", "D")
            outcomes[test] = match.group(1)
    if not outcomes:
        raise RuntimeError(f"the suite did not run:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return outcomes


def counts(outcomes: dict[str, str]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for outcome in outcomes.values():
        totals[outcome] = totals.get(outcome, 0) + 1
    return totals


def main(argv: list[str] | None = None) -> None:
    parser = _cli.parser("sqlalchemy_suite", __doc__)
    parser.add_argument("-k", help="only the tests matching this pytest expression")
    args = parser.parse_args(argv)
    extra = ["-k", args.k] if args.k else []
    results = {name: run_suite(url, extra) for name, url in URLS.items()}
    rows = []
    for name, outcomes in results.items():
        c = counts(outcomes)
        rows.append(
            f"| `{name}` | {c.get('PASSED', 0)} | {c.get('FAILED', 0)} | {c.get('ERROR', 0)} "
            f"| {c.get('SKIPPED', 0)} |"
        )
    stock, ours = results["sqlite"], results["sqlite+onewriter"]
    only_stock = sorted(t for t, o in stock.items() if o == "PASSED" and ours.get(t) != "PASSED")
    only_ours = sorted(t for t, o in ours.items() if o == "PASSED" and stock.get(t) != "PASSED")
    body = "\n".join(
        ["| dialect | passed | failed | errors | skipped |", "|---|---|---|---|---|", *rows, ""]
        + ["Pass with `sqlite` only:", ""]
        + [f"- `{t.split('::', 1)[-1]}` ({ours.get(t, 'not run')})" for t in only_stock]
        + (["- none"] if not only_stock else [])
        + ["", "Pass with `sqlite+onewriter` only:", ""]
        + [f"- `{t.split('::', 1)[-1]}` ({stock.get(t, 'not run')})" for t in only_ours]
        + (["- none"] if not only_ours else [])
    )
    print(body)
    if not args.no_write and not args.k:
        command = "python -m benchmarks.sqlalchemy_suite"
        _report.update_section(
            "sqlalchemy_suite", "SQLAlchemy's dialect compliance suite", command, body
        )


if __name__ == "__main__":
    main(sys.argv[1:])
