"""The backend's tests again on Django 4.2 LTS (which has no ``transaction_mode`` or
``init_command`` of its own), from ``.cache/django-4.2`` that scripts/setup fills."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LTS = ROOT / ".cache" / "django-4.2"


def test_the_backend_tests_pass_on_django_4_2() -> None:
    if not (LTS / "django").is_dir():
        if os.environ.get("CI"):
            pytest.fail("Django 4.2 is missing from .cache/django-4.2: scripts/setup puts it")
        pytest.skip("Django 4.2 is not in .cache/django-4.2 (scripts/setup puts it there)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(LTS), str(ROOT)])}
    check = [sys.executable, "-c", "import django; print(django.__version__)"]
    version = subprocess.run(check, env=env, capture_output=True, text=True, check=True)
    assert version.stdout.startswith("4.2."), version.stdout
    tests = ["tests/test_django.py", "tests/test_django_gunicorn.py"]
    run = [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider"]
    proc = subprocess.run(
        [*run, *tests], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and "skipped" not in proc.stdout, proc.stdout[-2000:]


def test_without_the_extra_the_engine_names_it() -> None:
    blocker = ROOT / "tests" / "no_extras"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(blocker), str(ROOT)]),
        "NO_EXTRAS_BLOCK": "django",
    }
    code = (
        "from onewriter import MissingExtra\n"
        "try:\n"
        "    import onewriter.django.base\n"
        "except MissingExtra as exc:\n"
        "    print(exc.code, exc)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.stdout.startswith("MISSING_EXTRA "), proc.stdout + proc.stderr
    assert "pip install 'onewriter[django]'" in proc.stdout
