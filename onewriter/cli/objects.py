"""Objects named on the command line as ``module:attribute``."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any


def load_object(spec: str, flag: str = "") -> Any:
    """Import ``module:attribute`` (``module.sub:obj.attr``); one line naming the flag and
    what is wrong when it cannot be (the current folder is searched first)."""
    what = f"onewriter: {flag} {spec}" if flag else f"onewriter: {spec}"
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise SystemExit(f"{what}: expected module:attribute")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise SystemExit(f"{what}: cannot import {module_name}: {exc}") from None
    except Exception as exc:
        raise SystemExit(
            f"{what}: importing {module_name} raised {type(exc).__name__}: {exc}"
        ) from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise SystemExit(f"{what}: {module_name} has no attribute {attr}") from None
    return obj
