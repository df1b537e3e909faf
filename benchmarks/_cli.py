"""What every benchmark's command line shares."""

from __future__ import annotations

import argparse


def parser(name: str, doc: str | None) -> argparse.ArgumentParser:
    """The parser of ``python -m benchmarks.<name>``: ``--help`` shows the module's
    docstring as written, so its table of cells and its example commands keep their
    lines (argparse would fold them into one paragraph)."""
    return argparse.ArgumentParser(
        prog=f"python -m benchmarks.{name}",
        description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
