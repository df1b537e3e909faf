"""Django's own test suite against ``onewriter.django`` (or the stock sqlite3 backend).

Django's sdist ships ``tests/runtests.py`` and every test app; ``scripts/setup``
downloads the sdist of the installed Django into ``.cache/django/`` (an install step),
and this module unpacks it, writes a settings module with file databases (``NAME`` and
``TEST NAME`` are files) and runs the given apps, reporting each test's outcome::

    python tests/django_suite.py --backend onewriter            # the CI apps
    python tests/django_suite.py --backend stock --json out.json

It never downloads anything.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "django"
ENGINES = {"onewriter": "onewriter.django", "stock": "django.db.backends.sqlite3"}

#: The apps run in CI, in one runtests invocation. One process (``--parallel 1``): with
#: file databases and two, the order of test classes in a worker varies from run to
#: run, and ``backends.sqlite.tests.ThreadSharing`` closes the worker's connection
#: when it runs first after a TransactionTestCase (which closes connections), on
#: either backend; every later test in that worker then fails.
CI_APPS = [
    *("backends", "transactions", "transaction_hooks", "basic", "model_fields", "queries"),
    *("migrations", "get_or_create", "bulk_create", "select_for_update", "update", "delete"),
    *("expressions", "aggregation", "db_functions", "schema", "introspection", "fixtures"),
]

SETTINGS = """\
import os
_DIR = os.environ["ONEWRITER_SUITE_DIR"]
_ENGINE = os.environ["ONEWRITER_SUITE_ENGINE"]
DATABASES = {{
    alias: {{
        "ENGINE": _ENGINE,
        "NAME": os.path.join(_DIR, alias + ".sqlite3"),
        "TEST": {{"NAME": os.path.join(_DIR, "test_" + alias + ".sqlite3")}},
    }}
    for alias in ("default", "other")
}}
SECRET_KEY = "django_tests_secret_key"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
USE_TZ = False
"""

#: ``test_name (module.Class.test_name) ... outcome``, the docstring line optional.
_RESULT = re.compile(
    r"^(?P<name>\w+) \((?P<where>[\w.]+)\)(?:\n[^\n]*?)? \.\.\. (?P<outcome>ok|FAIL|ERROR|"
    r"skipped|expected failure|unexpected success)",
    re.MULTILINE,
)
_RAN = re.compile(r"^Ran (\d+) tests? in ([\d.]+)s", re.MULTILINE)


def django_version() -> str:
    import django

    return str(django.__version__)


def suite_dir() -> Path:
    """The unpacked ``tests/`` of the installed Django's sdist (unpacked once)."""
    version = django_version()
    tests = CACHE / f"django-{version}" / "tests"
    if tests.is_dir():
        return tests
    sdist = CACHE / f"django-{version}.tar.gz"
    if not sdist.exists():
        raise SystemExit(
            f"{sdist} is missing: scripts/setup downloads it "
            f"(pip download --no-deps --no-binary :all: django=={version} -d {CACHE})"
        )
    with tarfile.open(sdist) as tar:
        tar.extractall(CACHE, filter="data")
    return tests


def run_suite(
    backend: str, apps: list[str], *, parallel: int = 1, timeout: float = 540
) -> dict[str, Any]:
    """Run ``apps`` of Django's suite on ``backend``; per-test outcomes and totals."""
    tests = suite_dir()
    work = Path(tempfile.mkdtemp(prefix="django-suite-"))
    try:
        (work / "onewriter_suite_settings.py").write_text(SETTINGS.format())
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(work), str(ROOT)]),
            "ONEWRITER_SUITE_DIR": str(work),
            "ONEWRITER_SUITE_ENGINE": ENGINES[backend],
            "PYTHONWARNINGS": "",
        }
        command = [
            sys.executable,
            "runtests.py",
            "--settings=onewriter_suite_settings",
            f"--parallel={parallel}",
            "--noinput",
            "-v",
            "2",
            *apps,
        ]
        started = time.monotonic()
        proc = subprocess.run(
            command, cwd=tests, env=env, capture_output=True, text=True, timeout=timeout
        )
        elapsed = time.monotonic() - started
    finally:
        shutil.rmtree(work, ignore_errors=True)
    output = proc.stdout + proc.stderr
    outcomes = {f"{m['where']}": m["outcome"] for m in _RESULT.finditer(output)}
    ran = _RAN.search(output)
    counts: dict[str, int] = {}
    for outcome in outcomes.values():
        counts[outcome] = counts.get(outcome, 0) + 1
    return {
        "backend": backend,
        "apps": apps,
        "returncode": proc.returncode,
        "ran": int(ran.group(1)) if ran else 0,
        "seconds": round(elapsed, 1),
        "counts": counts,
        "outcomes": outcomes,
        "output_tail": output[-20000:],
        "output": output,
    }


def passed(outcomes: dict[str, str]) -> set[str]:
    """The tests that passed (ok, or an expected failure that failed as expected)."""
    return {name for name, o in outcomes.items() if o in ("ok", "expected failure")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=sorted(ENGINES), default="onewriter")
    parser.add_argument("--parallel", type=int, default=1)
    parser.add_argument("--json", help="write the full result here")
    parser.add_argument("apps", nargs="*", default=CI_APPS)
    args = parser.parse_args()
    result = run_suite(args.backend, args.apps, parallel=args.parallel)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
        Path(args.json).with_suffix(".log").write_text(result["output"])
    print(result["output_tail"][-3000:])
    print(json.dumps({k: result[k] for k in ("backend", "ran", "seconds", "counts")}))
    return 0 if result["returncode"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
