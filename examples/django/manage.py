#!/usr/bin/env python3
"""The example project's manage.py (``python manage.py migrate`` and the rest)."""

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "site_counters.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
