"""The load client: concurrent reads and writes against the demo service, and its report.

``onewriter load --url http://127.0.0.1:3000 --reads 20 --writes 50`` sends one batch;
with ``--duration`` it keeps the load up (at ``--rate``, or as fast as answered).
"""

from .report import Summary, format_report, summarize
from .runner import LoadPlan, LoadRun, run_load

__all__ = ["LoadPlan", "LoadRun", "Summary", "format_report", "run_load", "summarize"]
