"""Makes the optional extras unimportable, as after ``pip install onewriter`` alone.

Put this folder first on ``PYTHONPATH``: Python imports ``sitecustomize`` at start-up,
and the finder below then refuses the packages the extras would have installed.
"""

import os
import sys
from importlib.abc import MetaPathFinder

EXTRAS = "uvicorn,starlette,httpx,httptools,redis,hiredis,psycopg,psycopg_pool,rich,uvloop"
#: Top-level packages or whole module names to refuse (NO_EXTRAS_BLOCK overrides).
BLOCKED = set(os.environ.get("NO_EXTRAS_BLOCK", EXTRAS).split(","))


class _NoExtras(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):  # type: ignore[no-untyped-def]
        if name in BLOCKED or name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, _NoExtras())
