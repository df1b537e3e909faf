"""What every benchmark's command line shares."""

from __future__ import annotations

import argparse


def parser(name: str, doc: str | None) -> argparse.ArgumentParser:
    """The parser of ``python -m benchmarks.<name>``: ``--help`` shows the module's
    docstring as written, so its table of cells and its example commands keep their
    lines (argparse would fold them into one paragraph). Every benchmark writes its
    section of docs/benchmarks.md unless given ``--no-write``."""
    parser = argparse.ArgumentParser(
        prog=f"python -m benchmarks.{name}",
        description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--no-write", action="store_true", help="print the results, leave docs/ unchanged"
    )
    return parser
