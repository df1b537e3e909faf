"""Settings of the example project: one app, one SQLite file, no templates.

``EXAMPLE_BACKEND`` picks the database backend (the benchmark runs all three):

- ``onewriter`` (default): ``ENGINE: "onewriter.django"``;
- ``stock-immediate``: Django's sqlite3 backend with ``transaction_mode="IMMEDIATE"``;
- ``stock``: Django's sqlite3 backend as it comes (deferred transactions).

All three run at ``synchronous=NORMAL`` in WAL mode. ``EXAMPLE_DB`` is the file.
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = os.environ.get("EXAMPLE_SECRET_KEY", "example-only-not-a-secret")
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]
INSTALLED_APPS = ["counters"]
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "site_counters.urls"
WSGI_APPLICATION = "site_counters.wsgi.application"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

BACKEND = os.environ.get("EXAMPLE_BACKEND", "onewriter")
NAME = os.environ.get("EXAMPLE_DB", str(BASE_DIR / "counters.sqlite3"))
WAL_NORMAL = "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL"

# Connections stay open between requests (Django's own advice for production); Django
# still closes one left in a transaction, or broken, at the end of a request.
CONN_MAX_AGE = 300

if BACKEND == "onewriter":
    DATABASES = {
        "default": {
            "ENGINE": "onewriter.django",
            "NAME": NAME,
            "OPTIONS": {"durability": "normal", "turn_timeout": 10.0},
            "CONN_MAX_AGE": CONN_MAX_AGE,
        }
    }
elif BACKEND in ("stock-immediate", "stock"):
    options = {"init_command": WAL_NORMAL}
    if BACKEND == "stock-immediate":
        options["transaction_mode"] = "IMMEDIATE"
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": NAME,
            "OPTIONS": options,
            "CONN_MAX_AGE": CONN_MAX_AGE,
        }
    }
else:
    raise RuntimeError(f"EXAMPLE_BACKEND must be onewriter, stock-immediate or stock: {BACKEND}")

LOGGING = {
    "version": 1,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {"counters": {"handlers": ["stderr"], "level": "INFO"}},
}
